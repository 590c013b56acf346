"""The served bundle: the classifier and lung segmenter with the gate's data, read once.

:class:`ServedModel` is what every front end (``predict``, ``score``, ``export``, the node,
the reviewer app) serves: a :class:`~medcam.models.Classifier` (network, calibration, lung
segmenter) plus the intended use and the out-of-distribution statistics from the classifier's
checkpoint, with the frontal-view check's limits that were fitted there for the lung segmenter
it names. The models know nothing of the gate; the gate reads the models' outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medcam.gate.intended_use import read_intended_use
from medcam.gate.ood import read_ood
from medcam.gate.view import METADATA_KEY as VIEW_KEY
from medcam.gate.view import ViewCheck
from medcam.io.image import Image
from medcam.models.cam import CAMOutput
from medcam.models.checkpoint import BUNDLED_MODEL, Checkpoint
from medcam.models.grid import GridTransform
from medcam.models.lungs import BUNDLED_SEGMENTER, LungSegmenter
from medcam.models.predictor import Classifier, Prediction, check_segmenter

__all__ = ["ServedModel"]


class ServedModel(Classifier):
    """A classifier, its lung segmenter and the gate's data, for inference.

    Args:
        checkpoint: a loaded checkpoint, a path, or ``"bundled"``.
        device: where the networks run.
        segmenter: the lung segmenter (loaded, a path, ``"bundled"``), or None for none (then
            no lung mask, no ``lung_evidence`` and no frontal-view check).
        check_gate: refuse a checkpoint whose lung gate was set with another segmenter; False
            only to set it again (``medcam fit-lung-gate``), which serves it without that gate.

    Attributes:
        intended_use: what the model was made for (:class:`medcam.gate.IntendedUse`).
        ood: the out-of-distribution statistics of its training images, or None when the
            checkpoint has none (then no image is refused for its content).
        view_check: the frontal-view check's limits, or None without a segmenter or limits.
    """

    def __init__(self, checkpoint: Checkpoint | str = BUNDLED_MODEL, *, device: str = "cpu",
                 segmenter: LungSegmenter | str | None = BUNDLED_SEGMENTER, check_gate: bool = True) -> None:
        super().__init__(checkpoint, device=device, segmenter=segmenter, check_gate=check_gate)
        self.intended_use = read_intended_use(self.checkpoint)
        ood = read_ood(self.checkpoint)
        self.ood = None if ood is None else ood.to(self.device)
        self.view_check: ViewCheck | None = None
        if self.segmenter is not None and VIEW_KEY in self.checkpoint.metadata and check_gate:
            self.view_check = ViewCheck.from_metadata(self.checkpoint.metadata[VIEW_KEY], self.checkpoint.path)
            check_segmenter(self.checkpoint.path, "frontal-view check", self.view_check.segmenter, self.segmenter_id)

    def ood_scores(self, output: CAMOutput) -> list[float | None]:
        """The out-of-distribution score of each image of a forward result (None without statistics
        or features)."""
        n = int(output.logits.shape[0])
        if self.ood is None or output.features is None:
            return [None] * n
        return [float(s) for s in self.ood.score(output.features).cpu().tolist()]

    def view_reasons(self, output: CAMOutput, batch: torch.Tensor) -> list[str]:
        """For each image of ``batch`` (the model inputs of ``output``), why the frontal-view check
        refuses it, or ""."""
        n = int(output.logits.shape[0])
        if self.view_check is None or output.lungs is None:
            return [""] * n
        return self.view_check.reasons(output.lungs, batch)

    def predictions(self, images: Sequence[Image], transforms: Sequence[GridTransform],
                    result: CAMOutput, *, method: str = "cam",
                    ood_scores: Sequence[float | None] | None = None) -> list[Prediction]:
        """:meth:`Classifier.predictions` with the image gate's scores of the same pass."""
        if ood_scores is None:
            ood_scores = self.ood_scores(result)
        return super().predictions(images, transforms, result, method=method, ood_scores=ood_scores)


