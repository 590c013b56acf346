"""Checkpoints: weights plus the metadata needed to use them, read with ``weights_only=True``.

A checkpoint is a plain dictionary saved by :func:`torch.save`::

    {"format": "medcam-checkpoint", "format_version": 1,
     "state_dict": {...}, "metadata": {...}}

``metadata`` holds only strings, numbers, booleans, lists and dicts, so that loading never
unpickles arbitrary objects. It carries the model config, the preprocessing, the
calibration (``temperature``, and ``class_bias`` for Platt scaling, see
:mod:`medcam.training.calibration`) and operating threshold, and whatever training recorded. A file
with a ``class_bias`` is format version 2, so that a medcam too old to apply the bias refuses
it instead of reporting wrong probabilities; one whose network has an output stride other than
32 (``model.output_stride``) is version 3 for the same reason; the others stay version 1, and
their model metadata leave the stride out, so that older versions still read them. The model id
shown to users is the architecture plus the first 12 hex digits of the file's SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

import medcam
from medcam.config import ModelConfig, PreprocessConfig
from medcam.errors import CheckpointError, ConfigError
from medcam.files import atomic_open
from medcam.models.calibration import Calibration, PopulationCalibration
from medcam.models.networks import build_network

__all__ = ["BUNDLED_MODEL", "POPULATION_KEY", "Checkpoint", "file_id", "load_checkpoint", "plain_metadata",
           "read_payload", "resave_checkpoint", "save_checkpoint"]

FORMAT = "medcam-checkpoint"
FORMAT_VERSION = 4  # the newest this medcam reads; 2 adds class_bias, 3 model.output_stride, 4 population_calibration
POPULATION_KEY = "population_calibration"
BUNDLED_MODEL = "bundled"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the network (eval mode, float32) and what it needs to be used.

    Attributes:
        temperature: divides the logits before the softmax (temperature scaling).
        class_bias: added per class after the division (Platt scaling), or None.
        threshold: operating point on the calibrated probability of ``model.positive_class``.
        trained: False for an untrained placeholder; every output says so.
        population_calibration: one calibration map per population, chosen per image from
            its features (then it replaces ``temperature`` and ``class_bias``), or None.
    """

    network: nn.Module
    model: ModelConfig
    preprocess: PreprocessConfig
    model_id: str
    path: str
    temperature: float = 1.0
    threshold: float = 0.5
    trained: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    class_bias: tuple[float, ...] | None = None
    population_calibration: PopulationCalibration | None = None

    @property
    def calibration(self) -> Calibration:
        """The map from logits to calibrated probabilities (of every image, unless the checkpoint has a
        :attr:`population_calibration`)."""
        return Calibration(self.temperature, self.class_bias)


def read_payload(file: Path, kind: str, version: int, what: str) -> dict[str, Any]:
    """The dictionary a medcam file of format ``kind`` holds, read with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, unreadable, of another format, or of a format
            version newer than ``version`` (the newest this medcam reads).
    """
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{file}: no such {what} file") from err
    except Exception as err:  # torch raises many types for corrupt or unsafe pickles
        raise CheckpointError(f"{file}: not a readable {what} ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != kind:
        raise CheckpointError(f"{file}: not a medcam {what} (no 'format': {kind!r} entry)")
    if payload.get("format_version", 0) > version:
        raise CheckpointError(f"{file}: {what} format version {payload['format_version']} is newer than this "
                              f"medcam ({medcam.__version__}) reads; upgrade medcam-screening")
    return payload


def bundled_checkpoint_path() -> Path:
    """The model shipped inside the package (``medcam/weights/``)."""
    return Path(str(resources.files("medcam") / "weights" / "pneumonia_densenet121.pt"))


def save_checkpoint(
    path: str | Path,
    network: nn.Module,
    model: ModelConfig,
    preprocess: PreprocessConfig,
    *,
    temperature: float = 1.0,
    threshold: float = 0.5,
    trained: bool = True,
    half: bool = False,
    extra: dict[str, Any] | None = None,
    class_bias: Sequence[float] | None = None,
) -> str:
    """Write a checkpoint atomically and return its model id.

    Args:
        class_bias: one value per class of ``model`` (Platt scaling), or None.
        half: store floating-point weights as float16 (half the size; they are loaded back
            as float32).
        extra: more metadata (training config, metrics, data hash, versions ...).

    Raises:
        ValueError: the temperature is not positive, or ``class_bias`` is not one finite
            number per class.
    """
    calibration = Calibration(float(temperature), None if class_bias is None else tuple(map(float, class_bias)))
    if calibration.bias is not None and len(calibration.bias) != len(model.classes):
        raise ValueError(f"class_bias needs one value per class ({len(model.classes)}), got {list(calibration.bias)}")
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in network.state_dict().items()
    }
    model_meta = plain_metadata(dataclasses.asdict(model))
    if model.output_stride == ModelConfig.output_stride:
        del model_meta["output_stride"]
    metadata: dict[str, Any] = {
        "model": model_meta,
        "preprocess": dataclasses.asdict(preprocess),
        "temperature": calibration.temperature,
        "threshold": float(threshold),
        "trained": bool(trained),
        "medcam_version": medcam.__version__,
        "torch_version": str(torch.__version__),
    }
    if calibration.bias is not None:
        metadata["class_bias"] = list(calibration.bias)
    metadata.update(plain_metadata(extra or {}))
    if metadata.get(POPULATION_KEY) is None:  # None in ``extra`` drops a population calibration
        metadata.pop(POPULATION_KEY, None)
    version = 3 if "output_stride" in model_meta else 1 if calibration.bias is None else 2
    if POPULATION_KEY in metadata:  # a medcam that cannot choose the map per image must refuse the file
        version = 4
    payload = {"format": FORMAT, "format_version": version, "state_dict": state, "metadata": metadata}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(payload, f)
    return file_id(model.architecture, path)


def load_checkpoint(path: str | Path = BUNDLED_MODEL, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint (``"bundled"`` for the shipped model) with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, not a medcam checkpoint, or inconsistent.
    """
    file = bundled_checkpoint_path() if str(path) == BUNDLED_MODEL else Path(path)
    payload = read_payload(file, FORMAT, FORMAT_VERSION, "checkpoint")
    meta = payload["metadata"]
    try:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items()}
        model = ModelConfig(**fields)
        preprocess = PreprocessConfig(**meta["preprocess"])
        bias = meta.get("class_bias")
        calibration = Calibration(float(meta.get("temperature", 1.0)),
                                  None if bias is None else tuple(float(b) for b in bias))
        if calibration.bias is not None and len(calibration.bias) != len(model.classes):
            raise ValueError(f"class_bias has {len(calibration.bias)} values for {len(model.classes)} classes")
        populations = (None if meta.get(POPULATION_KEY) is None
                       else PopulationCalibration.from_metadata(meta[POPULATION_KEY]))
        for each in populations.calibrations if populations is not None else ():
            if each.bias is not None and len(each.bias) != len(model.classes):
                raise ValueError(f"a population's class_bias has {len(each.bias)} values for {len(model.classes)} "
                                 "classes")
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{file}: metadata is incomplete or invalid ({err})") from err
    network = build_network(model)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{file}: weights do not fit a {model.architecture} ({err})") from err
    network.to(device).eval()
    return Checkpoint(
        network=network,
        model=model,
        preprocess=preprocess,
        model_id=file_id(model.architecture, file),
        path=str(file),
        temperature=calibration.temperature,
        threshold=float(meta.get("threshold", 0.5)),
        trained=bool(meta.get("trained", False)),
        metadata=meta,
        class_bias=calibration.bias,
        population_calibration=populations,
    )


# Metadata that save_checkpoint writes from its own arguments; everything else travels in ``extra``.
_REWRITTEN = ("model", "preprocess", "temperature", "class_bias", "threshold", "trained")


def resave_checkpoint(path: str | Path, *, out: str | Path | None = None, updates: dict[str, Any] | None = None,
                      calibration: Calibration | None = None, threshold: float | None = None) -> str:
    """Re-save a checkpoint with metadata, calibration or threshold changed; returns the new model id.

    Weights, their storage precision (float16 stays float16) and every metadata entry not
    named are kept as they were; the file is written atomically, at ``out`` when given, else
    over ``path``. The model id changes, since it is the hash of the file.

    Args:
        path: the checkpoint, or ``"bundled"`` (then ``out`` is required).
        updates: metadata entries to add or replace (plain containers, scalars and tensors);
            not those that describe the weights (model, preprocess, temperature, class_bias,
            threshold, trained).
        calibration: the new calibration map; None keeps the present one.
        threshold: the new operating threshold; None keeps the present one.

    Raises:
        CheckpointError: ``path`` is not a readable checkpoint, ``out`` is missing for the
            bundled model, or ``updates`` names an entry that describes the weights.
    """
    if str(path) == BUNDLED_MODEL and out is None:
        raise CheckpointError("the bundled model is part of the package; give out= for an updated copy")
    clash = sorted(set(updates or {}) & set(_REWRITTEN))
    if clash:
        raise CheckpointError(f"a metadata update does not change {', '.join(clash)}; recalibrate "
                              "(calibration=, threshold=) or retrain instead")
    ckpt = load_checkpoint(path)
    payload = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    floats = [v.dtype for v in payload["state_dict"].values() if v.is_floating_point()]
    half = bool(floats) and all(dtype == torch.float16 for dtype in floats)
    extra = {k: v for k, v in ckpt.metadata.items() if k not in _REWRITTEN}
    extra.update(updates or {})
    calibration = ckpt.calibration if calibration is None else calibration
    return save_checkpoint(out if out is not None else ckpt.path, ckpt.network, ckpt.model, ckpt.preprocess,
                           temperature=calibration.temperature, class_bias=calibration.bias,
                           threshold=ckpt.threshold if threshold is None else threshold,
                           trained=ckpt.trained, half=half, extra=extra)


def file_id(architecture: str, file: Path) -> str:
    """``architecture`` plus the first 12 hex digits of the SHA-256 of ``file``: the id users see."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{architecture}-{digest.hexdigest()[:12]}"


def plain_metadata(value: Any) -> Any:
    """Plain containers and scalars, recursively, so that metadata loads under ``weights_only=True``.

    Tuples become lists and ``str`` subclasses (``torch.__version__``) plain ``str``.
    """
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain_metadata(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_metadata(v) for v in value]
    return value
