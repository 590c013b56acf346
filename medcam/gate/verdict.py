"""The image gate's verdict on one forward pass, the same for every engine and front end.

Two checks read the outputs of the pass that gave the logits: the out-of-distribution score of
the pooled features (:attr:`medcam.models.CAMOutput.features`; above the model's threshold
the image is ``not_analysed``) and, for images whose tags do not name the view, the
frontal-view check on the lung fields (:attr:`medcam.models.CAMOutput.lungs`, see
:mod:`medcam.gate.view`). When the run ignores the intended use, a refusal becomes a note on
the analysed row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medcam.gate.served import ServedModel
from medcam.models.cam import CAMOutput

__all__ = ["IGNORED", "Verdict", "image_gate"]

IGNORED = "outside the intended use, analysed anyway (--ignore-intended-use)"


@dataclass(frozen=True)
class Verdict:
    """One image's out-of-distribution ``score`` (None without statistics), and the reason it is
    refused (``refusal``) or the note its analysed row carries (``note``)."""

    score: float | None = None
    refusal: str = ""
    note: str = ""


def image_gate(model: ServedModel, output: CAMOutput, batch: torch.Tensor, *, enforce: bool,
               view_named: Sequence[bool] | None = None) -> list[Verdict]:
    """The verdicts of a batch's images.

    ``view_named[i]`` says that image ``i``'s tags named its view (then the tag gate has judged
    it and the frontal-view check is skipped); None: no image's tags did. ``batch`` is run again
    only when ``output`` (Grad-CAM, occlusion) carries no features and the model has statistics.
    """
    n = int(output.logits.shape[0])
    if model.ood is not None and output.features is None:
        output = output._replace(features=model.forward(batch).features)
    scores = model.ood_scores(output)
    views = [""] * n if view_named and all(view_named) else model.view_reasons(output, batch)
    verdicts = []
    for i in range(n):
        score = scores[i]
        reasons = []
        if score is not None and model.ood is not None and score > model.ood.threshold:
            reasons.append(model.ood.reason(score))
        if views[i] and not (view_named and view_named[i]):
            reasons.append(views[i])
        if not reasons:
            verdicts.append(Verdict(score))
        elif enforce:
            verdicts.append(Verdict(score, refusal="; ".join(reasons)))
        else:
            verdicts.append(Verdict(score, note=f"{IGNORED}: {'; '.join(reasons)}"))
    return verdicts
