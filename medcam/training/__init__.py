"""Everything that makes a model: data lists, training, evaluation, the figures a model card reports."""
