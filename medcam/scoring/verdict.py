"""The image gate's verdict on one forward pass, the same for both engines.

The out-of-distribution score comes from the pooled features of the pass that gave the
logits (:attr:`medcam.models.CAMOutput.features`); above the model's threshold the image is
``not_analysed``, or, when the run ignores the intended use, analysed with a note.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medcam.models.cam import CAMOutput
from medcam.models.predictor import Classifier

__all__ = ["IGNORED", "Verdict", "image_gate"]

IGNORED = "outside the intended use, analysed anyway (--ignore-intended-use)"


@dataclass(frozen=True)
class Verdict:
    """One image's out-of-distribution ``score`` (None without statistics), and the reason it is
    refused (``refusal``) or the note its analysed row carries (``note``)."""

    score: float | None = None
    refusal: str = ""
    note: str = ""


def image_gate(classifier: Classifier, output: CAMOutput, batch: torch.Tensor, *, enforce: bool) -> list[Verdict]:
    """The verdicts of a batch's images; ``batch`` is passed again only when ``output`` (Grad-CAM,
    occlusion) carries no features and the model has statistics."""
    n = int(output.logits.shape[0])
    if classifier.ood is None:
        return [Verdict() for _ in range(n)]
    features = output.features if output.features is not None else classifier.forward(batch).features
    if features is None:
        return [Verdict() for _ in range(n)]
    verdicts = []
    for score in classifier.ood.score(features).cpu().tolist():
        if score <= classifier.ood.threshold:
            verdicts.append(Verdict(score))
        elif enforce:
            verdicts.append(Verdict(score, refusal=classifier.ood.reason(score)))
        else:
            verdicts.append(Verdict(score, note=f"{IGNORED}: {classifier.ood.reason(score)}"))
    return verdicts
