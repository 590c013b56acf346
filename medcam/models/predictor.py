"""From loaded images to calibrated probabilities, CAMs and lung fields on the source pixel grid.

:class:`Classifier` batches images prepared by :mod:`medcam.models.preprocess` through the
single-pass CAM network and the lung segmenter (:mod:`medcam.models.lungs`), and brings every
map and mask back onto its own source image. It knows nothing of the intended-use gate:
:class:`medcam.gate.ServedModel` adds the gate's data to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medcam.errors import CheckpointError
from medcam.io.image import Image
from medcam.models.calibration import Calibration
from medcam.models.cam import CAMMethod, CAMOutput, SinglePassCAM, convert_to_cam, find_gap_layer
from medcam.models.checkpoint import BUNDLED_MODEL, Checkpoint, load_checkpoint
from medcam.models.gradient import GradCAM, GradCAMpp, OcclusionCAM
from medcam.models.grid import GridTransform, maps_to_source
from medcam.models.lungs import BUNDLED_SEGMENTER, LungSegmenter, cell_fractions, load_segmenter, lung_evidence
from medcam.models.preprocess import prepare

__all__ = ["EVIDENCE_KEY", "Classifier", "Prediction", "check_segmenter", "evidence_caution", "serving_memory_format"]

EVIDENCE_KEY = "lung_evidence"  # checkpoint metadata: {"threshold": T, "rule": ..., "segmenter": id}


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
        lungs: the lung mask ``(rows, cols)`` (bool) on the source pixel grid, or None without
            a segmenter.
        lung_evidence: the share of the positive class's positive evidence inside the lungs
            (:func:`~medcam.models.lungs.lung_evidence`); None without a segmenter, for methods
            other than ``cam``, or when the map has no positive evidence.
        evidence_threshold: below it, a flagged image's evidence is said to lie outside the
            lungs (:attr:`quality`); None when the checkpoint sets none.
        segmenter_id: the lung segmenter's id, or "".
        calibration_group: the group of populations whose calibration map gave
            :attr:`probabilities` (chosen from the image's pooled features), or "" when the
            checkpoint has one map for every image.
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
    lungs: torch.Tensor | None = None
    lung_evidence: float | None = None
    evidence_threshold: float | None = None
    segmenter_id: str = ""
    calibration_group: str = ""

    @property
    def quality(self) -> str:
        """The caution of a flagged image whose evidence lies outside the lungs, else ""."""
        return evidence_caution(self.flagged, self.lung_evidence, self.evidence_threshold)

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


def check_segmenter(where: str, what: str, fitted: object, served: str) -> None:
    """Refuse to serve ``what`` (a threshold or a check stored in the checkpoint at ``where``) with
    a lung segmenter other than the one it was ``fitted`` with.

    Raises:
        CheckpointError: ``fitted`` is not ``served``.
    """
    if fitted != served:
        raise CheckpointError(
            f"{where}: its {what} was set with the lung segmenter {fitted or '(unrecorded)'}, not {served}; serve "
            f"that segmenter (--segmenter) or set it again: medcam fit-lung-gate --model {where} --segmenter SEGMENTER "
            "--out NEW.pt")


def evidence_caution(flagged: bool, evidence: float | None, threshold: float | None) -> str:
    """``evidence outside the lungs (lung_evidence X < T)`` for a flagged image below ``threshold``."""
    if not flagged or evidence is None or threshold is None or evidence >= threshold:
        return ""
    return f"evidence outside the lungs (lung_evidence {evidence:.3f} < {threshold:.3f})"


class Classifier:
    """A checkpoint and a lung segmenter served for inference: ``classify(images)`` in batches.

    Args:
        checkpoint: a loaded checkpoint, a path, or ``"bundled"``.
        device: where the networks run.
        segmenter: the lung segmenter (loaded, a path, ``"bundled"``), or None for none.
        check_gate: refuse a ``lung_evidence`` threshold set with another segmenter; False leaves
            it unset instead (to set it again).

    Attributes:
        evidence_threshold: the checkpoint's threshold on ``lung_evidence`` (see
            :attr:`Prediction.quality`), or None.
    """

    def __init__(self, checkpoint: Checkpoint | str = BUNDLED_MODEL, *, device: str = "cpu",
                 segmenter: LungSegmenter | str | None = BUNDLED_SEGMENTER, check_gate: bool = True) -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.device = torch.device(device)
        self.memory_format = serving_memory_format(self.device)
        self.cam: SinglePassCAM = convert_to_cam(self.checkpoint.network).to(  # type: ignore[call-overload]
            self.device, memory_format=self.memory_format)
        self._explainers: dict[str, CAMMethod] = {}
        if isinstance(segmenter, str):
            segmenter = load_segmenter(segmenter)
        self.segmenter = None if segmenter is None else segmenter.to(self.device, self.memory_format)
        evidence = self.checkpoint.metadata.get(EVIDENCE_KEY) or {}
        self.evidence_threshold: float | None = None
        if self.segmenter is not None and "threshold" in evidence and check_gate:
            check_segmenter(self.checkpoint.path, "lung_evidence threshold", evidence.get("segmenter"),
                            self.segmenter_id)
            self.evidence_threshold = float(evidence["threshold"])

    @property
    def segmenter_id(self) -> str:
        return "" if self.segmenter is None else self.segmenter.segmenter_id

    @property
    def classes(self) -> tuple[str, ...]:
        return self.checkpoint.model.classes

    def forward(self, batch: torch.Tensor) -> CAMOutput:
        """Logits, feature-grid maps, pooled features and lung probabilities for a prepared batch
        ``(B, 1, size, size)``."""
        x = batch.to(self.device, memory_format=self.memory_format)
        with torch.inference_mode():
            output: CAMOutput = self.cam(x)
        return self._with_lungs(output, x)

    def _with_lungs(self, output: CAMOutput, x: torch.Tensor) -> CAMOutput:
        if self.segmenter is None:
            return output
        return output._replace(lungs=self.segmenter(x))

    def lung_evidence(self, output: CAMOutput, method: str = "cam") -> list[float | None]:
        """Each image's ``lung_evidence`` (:func:`~medcam.models.lungs.lung_evidence`) from a forward
        result; None for every image without lungs, for methods other than ``cam``, or where the
        positive class's map has no positive evidence."""
        n = int(output.logits.shape[0])
        if output.lungs is None or method != "cam":
            return [None] * n
        maps = output.maps[:, self.classes.index(self.checkpoint.model.positive_class)]
        rows, cols = maps.shape[-2:]
        shares = lung_evidence(maps, cell_fractions(output.lungs, (int(rows), int(cols)))).cpu().tolist()
        return [None if share != share else float(share) for share in shares]  # NaN: no evidence

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
            if output.features is None and self.checkpoint.population_calibration is not None:
                output = output._replace(features=self.cam(x).features)  # which population's calibration
        return self._with_lungs(output, x)

    def calibrations(self, features: torch.Tensor | None, n: int) -> list[Calibration]:
        """The calibration map of each of ``n`` images: the checkpoint's, or the map of the population
        each image's pooled ``features`` ``(n, C)`` resemble most.

        Raises:
            ValueError: the checkpoint calibrates per population and ``features`` is None.
        """
        populations = self.checkpoint.population_calibration
        if populations is None:
            return [self.checkpoint.calibration] * n
        return populations.select(self._calibration_features(features))

    def calibration_groups(self, features: torch.Tensor | None, n: int) -> list[str]:
        """The group of populations whose map calibrates each of ``n`` images (see :meth:`calibrations`),
        or "" for each when the checkpoint has one map for every image."""
        populations = self.checkpoint.population_calibration
        if populations is None:
            return [""] * n
        return populations.names(self._calibration_features(features))

    def probabilities(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated probabilities of logits ``(B, K)``: the checkpoint's calibration map, or with a
        population calibration each image's population's map (``features`` ``(B, C)`` of the same pass
        are then needed)."""
        populations = self.checkpoint.population_calibration
        if populations is None:
            return self.checkpoint.calibration(logits)
        return populations(logits, self._calibration_features(features))

    def _calibration_features(self, features: torch.Tensor | None) -> torch.Tensor:
        if features is None:
            raise ValueError(f"{self.checkpoint.model_id} calibrates per population: its probabilities need the "
                             "pooled features of the same pass")
        return features

    def classify(self, images: Sequence[Image], *, batch_size: int = 8, method: str = "cam") -> list[Prediction]:
        """Predictions for ``images``, in order, ``batch_size`` at a time, maps made by ``method``
        (see :meth:`explain`)."""
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            prepared = [prepare(image, self.checkpoint.preprocess) for image in chunk]
            batch = torch.stack([x for x, _ in prepared])
            result = self.explain(batch, method)
            out += self.predictions(chunk, [t for _, t in prepared], result, method=method)
        return out

    def predictions(self, images: Sequence[Image], transforms: Sequence[GridTransform],
                    result: CAMOutput, *, method: str = "cam",
                    ood_scores: Sequence[float | None] | None = None) -> list[Prediction]:
        """Wrap a forward result: probabilities, and each map and lung mask resampled onto its source.

        ``ood_scores`` are the image gate's scores of the same pass (see :mod:`medcam.gate`).
        """
        probs = self.probabilities(result.logits, result.features).cpu()
        calibrations = self.calibrations(result.features, len(images))
        groups = self.calibration_groups(result.features, len(images))
        logits = result.logits.cpu()
        ckpt = self.checkpoint
        scores = list(ood_scores) if ood_scores is not None else [None] * len(images)
        evidence = self.lung_evidence(result, method)
        lungs: list[torch.Tensor | None] = [None] * len(images)
        if result.lungs is not None:
            lungs = [maps_to_source(result.lungs[i:i + 1].float(), t)[0, 0].cpu() >= 0.5
                     for i, t in enumerate(transforms)]
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
                temperature=calibrations[i].temperature,
                ood_score=scores[i],
                class_bias=calibrations[i].bias,
                lungs=lungs[i],
                lung_evidence=evidence[i],
                evidence_threshold=self.evidence_threshold,
                segmenter_id=self.segmenter_id,
                calibration_group=groups[i],
            )
            for i, (image, transform) in enumerate(zip(images, transforms, strict=True))
        ]


def _explainer(checkpoint: Checkpoint, method: str) -> CAMMethod:
    """MONAI's Grad-CAM, Grad-CAM++ or occlusion on the checkpoint's network.

    The gradient methods look at the layer just before the global pooling (the grid the
    single-pass maps live on); occlusion hides windows of an eighth of the input side.
    """
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
