"""From loaded images to calibrated probabilities and CAMs on the source pixel grid.

:class:`Classifier` batches images prepared by :mod:`medcam.models.preprocess` through the
single-pass CAM network and brings every map back onto its own source image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medcam.calibration import Calibration
from medcam.io.image import Image
from medcam.models.cam import CAMMethod, CAMOutput, SinglePassCAM, convert_to_cam, find_gap_layer
from medcam.models.checkpoint import BUNDLED_MODEL, Checkpoint, load_checkpoint
from medcam.models.grid import GridTransform, maps_to_source
from medcam.models.preprocess import prepare

__all__ = ["Classifier", "Prediction", "serving_memory_format"]


def serving_memory_format(device: torch.device) -> torch.memory_format:
    """How activations are laid out for inference on ``device``.

    On the CPU, channels-last (NHWC) lets oneDNN pick its fastest convolutions
    (``benchmarks/bench_score.py`` prints both layouts' throughput), with the same logits to
    float32 rounding.
    Elsewhere the default layout is kept: it has not been measured on a GPU.
    """
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the model says about one image.

    Attributes:
        probabilities: calibrated class probabilities ``(K,)`` (:attr:`calibration` of the logits).
        logits: raw logits ``(K,)``.
        maps: raw class activation maps ``(K, rows, cols)`` on the source pixel grid, in
            logit units (see :func:`~medcam.models.grid.normalise_maps`).
        classes: class names, in the order of the two tensors above.
        flagged: the positive class's probability is at or above the operating threshold.
        model_id: the checkpoint's id.
        temperature: the calibration temperature ``T`` of :attr:`probabilities`.
        class_bias: the calibration's per-class bias (Platt scaling), or None.
        ood_score: the image gate's out-of-distribution score of the same forward pass (see
            :mod:`medcam.gate`); None when the model has no statistics or the method gives no
            pooled features.
    """

    image: Image
    probabilities: torch.Tensor
    logits: torch.Tensor
    maps: torch.Tensor
    classes: tuple[str, ...]
    positive_class: str
    threshold: float
    model_id: str
    temperature: float = 1.0
    ood_score: float | None = None
    class_bias: tuple[float, ...] | None = None

    @property
    def calibration(self) -> Calibration:
        """The map from logits (and maps, which are in logit units) to calibrated probabilities."""
        return Calibration(self.temperature, self.class_bias)

    @property
    def positive_probability(self) -> float:
        return float(self.probabilities[self.classes.index(self.positive_class)])

    @property
    def flagged(self) -> bool:
        return self.positive_probability >= self.threshold

    def probability(self, name: str) -> float:
        return float(self.probabilities[self.classes.index(name)])


class Classifier:
    """A checkpoint served for inference: ``classify(images)`` in batches.

    Args:
        checkpoint: a loaded checkpoint, a path, or ``"bundled"``.
        device: where the network runs.

    Attributes:
        intended_use: what the model was made for (:class:`medcam.gate.IntendedUse`).
        ood: the out-of-distribution statistics of its training images, or None when the
            checkpoint has none (then no image is refused for its content).
    """

    def __init__(self, checkpoint: Checkpoint | str = BUNDLED_MODEL, *, device: str = "cpu") -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.device = torch.device(device)
        self.memory_format = serving_memory_format(self.device)
        self.cam: SinglePassCAM = convert_to_cam(self.checkpoint.network).to(  # type: ignore[call-overload]
            self.device, memory_format=self.memory_format)
        self._explainers: dict[str, CAMMethod] = {}
        from medcam.gate import read_intended_use, read_ood

        self.intended_use = read_intended_use(self.checkpoint)
        self.ood = read_ood(self.checkpoint)
        if self.ood is not None:
            self.ood = self.ood.to(self.device)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.checkpoint.model.classes

    def forward(self, batch: torch.Tensor) -> CAMOutput:
        """Logits and feature-grid maps for a prepared batch ``(B, 1, size, size)``."""
        with torch.inference_mode():
            output: CAMOutput = self.cam(batch.to(self.device, memory_format=self.memory_format))
        return output

    def explain(self, batch: torch.Tensor, method: str = "cam") -> CAMOutput:
        """Logits and maps of every class for ``batch`` by ``method``.

        ``cam`` is :meth:`forward` (one pass). ``gradcam``, ``gradcam++`` and ``occlusion``
        run MONAI's methods (:mod:`medcam.models.gradient`) on the same network, for
        comparison: one forward and backward pass per class, or one pass per occluded window.
        """
        if method == "cam":
            return self.forward(batch)
        if method not in self._explainers:
            self._explainers[method] = _explainer(self.checkpoint, method)
        x = batch.to(self.device, memory_format=self.memory_format)
        with torch.inference_mode():
            output: CAMOutput = self._explainers[method](x)
        return output

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities of logits ``(B, K)``: the checkpoint's calibration map."""
        return self.checkpoint.calibration(logits)

    def classify(self, images: Sequence[Image], *, batch_size: int = 8, method: str = "cam") -> list[Prediction]:
        """Predictions for ``images``, in order, ``batch_size`` at a time, maps made by ``method``
        (see :meth:`explain`)."""
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            prepared = [prepare(image, self.checkpoint.preprocess) for image in chunk]
            batch = torch.stack([x for x, _ in prepared])
            result = self.explain(batch, method)
            out += self.predictions(chunk, [t for _, t in prepared], result)
        return out

    def predictions(self, images: Sequence[Image], transforms: Sequence[GridTransform],
                    result: CAMOutput) -> list[Prediction]:
        """Wrap a forward result: probabilities, and each map resampled onto its source."""
        probs = self.probabilities(result.logits).cpu()
        logits = result.logits.cpu()
        ckpt = self.checkpoint
        scores: list[float | None] = [None] * len(images)
        if self.ood is not None and result.features is not None:
            scores = self.ood.score(result.features).cpu().tolist()
        return [
            Prediction(
                image=image,
                probabilities=probs[i],
                logits=logits[i],
                maps=maps_to_source(result.maps[i:i + 1].float(), transform)[0].cpu(),
                classes=ckpt.model.classes,
                positive_class=ckpt.model.positive_class,
                threshold=ckpt.threshold,
                model_id=ckpt.model_id,
                temperature=ckpt.temperature,
                ood_score=scores[i],
                class_bias=ckpt.class_bias,
            )
            for i, (image, transform) in enumerate(zip(images, transforms, strict=True))
        ]


def _explainer(checkpoint: Checkpoint, method: str) -> CAMMethod:
    """MONAI's Grad-CAM, Grad-CAM++ or occlusion on the checkpoint's network.

    The gradient methods look at the layer just before the global pooling (the grid the
    single-pass maps live on); occlusion hides windows of an eighth of the input side.
    """
    from medcam.models.gradient import GradCAM, GradCAMpp, OcclusionCAM

    network = checkpoint.network
    if method == "occlusion":
        return OcclusionCAM(network, mask_size=max(8, checkpoint.preprocess.size // 8), n_batch=16, overlap=0.5)
    gap = find_gap_layer(network)
    names = [name for name, module in network.named_modules() if name and not list(module.children())]
    if gap not in names or names.index(gap) == 0:
        raise ValueError(f"cannot find the layer before {gap!r} for {method}")
    target = names[names.index(gap) - 1]
    if method == "gradcam":
        return GradCAM(network, target_layer=target)
    if method == "gradcam++":
        return GradCAMpp(network, target_layer=target)
    raise ValueError(f"unknown method {method!r}; use cam, gradcam, gradcam++ or occlusion")
