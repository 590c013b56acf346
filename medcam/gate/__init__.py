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
from medcam.gate.tags import check_tags, tag_findings

__all__ = ["FeatureSet", "IntendedUse", "OODStats", "check_tags", "collect_features", "fit_ood",
           "read_intended_use", "read_ood", "tag_findings", "update_checkpoint",
           "write_intended_use", "write_ood"]
