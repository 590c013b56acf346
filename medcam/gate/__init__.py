"""The intended-use gate: refuse images the model was not made for, with the reason.

Two checks, both cheap: :func:`check_tags` holds a DICOM header against the checkpoint's
:class:`IntendedUse` (modality, SOP class, body part, view, age, size, colour), and
:class:`OODStats` scores the pooled features of the same forward pass that gives the logits
and maps (Mahalanobis distance to the training images' class means), for every format,
DICOM or not.
"""

from __future__ import annotations

from medcam.gate.intended_use import IntendedUse, read_intended_use, write_intended_use
from medcam.gate.metadata import update_checkpoint
from medcam.gate.ood import FeatureSet, OODStats, collect_features, fit_ood, read_ood, write_ood
from medcam.gate.served import ServedModel
from medcam.gate.tags import check_tags, named_view, tag_findings, tag_notes
from medcam.gate.view import ViewCheck, view_measures

__all__ = ["FeatureSet", "IntendedUse", "OODStats", "ServedModel", "ViewCheck", "check_tags", "collect_features",
           "fit_ood", "named_view", "read_intended_use", "read_ood", "tag_findings", "tag_notes",
           "update_checkpoint", "view_measures", "write_intended_use", "write_ood"]
