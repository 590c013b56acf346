"""Typed configuration, loaded from the YAML files in ``configs/``.

Unknown keys and wrong values are refused with the file, the key and a "did you mean"
suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medcam.errors import ConfigError

__all__ = ["Config", "DataConfig", "DatasetConfig", "IntendedUse", "ModelConfig", "PreprocessConfig", "TrainConfig",
           "build_section", "check_choice", "load_config"]

ARCHITECTURES = ("densenet121", "resnet18", "resnet50", "seresnet50", "efficientnet-b0")
RESIZE_MODES = ("stretch", "letterbox")
INTENSITY_MODES = ("zscore", "unit")
OUTPUT_STRIDES = (32, 16)


@dataclass(frozen=True)
class ModelConfig:
    """The network: MONAI architecture, dimensions and the class names, in output order.

    ``output_stride``: input pixels per cell of the last feature grid, and so of the class
    activation maps. 32 is the architecture as published (a 9x9 grid at 288 px); 16 (DenseNet121
    only) drops the pooling before the last dense block and dilates its 3x3 convolutions by 2,
    so that the block sees the same context on a grid twice as fine (18x18 at 288 px). It adds
    no weights: a stride-32 checkpoint initialises a stride-16 network.
    """

    architecture: str = "densenet121"
    spatial_dims: int = 2
    in_channels: int = 1
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    positive_class: str = "PNEUMONIA"
    output_stride: int = 32

    def __post_init__(self) -> None:
        check_choice("model.architecture", self.architecture, ARCHITECTURES)
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"model.spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"model.classes must be two or more distinct names, got {self.classes!r}")
        check_choice("model.positive_class", self.positive_class, self.classes)
        if self.output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"model.output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride!r}")
        if self.output_stride != 32 and self.architecture != "densenet121":
            raise ConfigError(f"model.output_stride {self.output_stride} is available for densenet121 only, "
                              f"not {self.architecture}")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a loaded image (display intensities in [0, 1]) becomes a model input.

    ``size`` must be a multiple of 32 so that the last feature grid tiles the input exactly.
    ``intensity``: ``zscore`` standardises each image to mean 0, std 1; ``unit`` keeps [0, 1].
    """

    size: int = 224
    resize: str = "stretch"
    intensity: str = "zscore"

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 32:
            raise ConfigError(f"preprocess.size must be a positive multiple of 32, got {self.size!r}")
        check_choice("preprocess.resize", self.resize, RESIZE_MODES)
        check_choice("preprocess.intensity", self.intensity, INTENSITY_MODES)


@dataclass(frozen=True)
class DatasetConfig:
    """One labelled source of a multi-population run.

    Attributes:
        name: the population it stands for (``pediatric``, ``adult`` ...); metrics are
            reported per population.
        source: a CSV (``file,label[,patient_id][,view]``) or a folder with one folder per class.
        weight: this population's share of every training epoch, relative to the others.
        balance: the CSV columns whose combinations are sampled equally often within the
            population (``label`` balances the classes; ``[label, view]`` also keeps a view
            that is confounded with the label from carrying the prediction).
        labels: label values of the CSV that are findings, not classes, mapped onto a class
            (RSNA: ``{OTHER: NORMAL}``); the value is kept as the sample's finding.
        boxes: a CSV of the positive films' boxes (``file, x, y, width, height`` in source
            pixels, as RSNA's ``boxes.csv``) for the map loss (``train.box_loss``).
    """

    name: str = ""
    source: str = ""
    weight: float = 1.0
    balance: tuple[str, ...] = ("label",)
    labels: dict[str, str] = field(default_factory=dict)
    boxes: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.source:
            raise ConfigError(f"data.sources: every entry needs a name and a source, got {self!r}")
        if not self.weight > 0:
            raise ConfigError(f"data.sources[{self.name}].weight must be positive, got {self.weight!r}")
        for column in self.balance:
            check_choice(f"data.sources[{self.name}].balance", column, ("label", "view"))


@dataclass(frozen=True)
class DataConfig:
    """Training data: one ``source`` or several populations in ``sources``.

    A source is a CSV (``file,label[,patient_id]``) or a folder with one folder per class.
    Each population's patients are split on their own into train / validation (early
    stopping, calibration, threshold) / test (reported only). Relative paths are resolved
    against the config file's folder; ``subsample`` keeps that many images per population
    (for a quick run). ``dedupe: [adult, rsna]`` drops from the first population every film
    that is also, pixel for pixel, a film of the second, whose copy then counts as a film of
    the first's patient (:func:`medcam.training.data.pixel_duplicates`). ``parent``: the config that trained
    ``train.init_from``; its patients keep their part (train, validation, test), so that a
    fine-tuned model is never tested on films its parent trained on.
    """

    source: str = ""
    sources: tuple[DatasetConfig, ...] = ()
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    subsample: int | None = None
    dedupe: tuple[str, ...] = ()
    parent: str = ""

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 0.5:
                raise ConfigError(f"data.{name} must be in (0, 0.5), got {value!r}")
        if self.source and self.sources:
            raise ConfigError("data: give either source or sources, not both")
        entries = tuple(
            e if isinstance(e, DatasetConfig) else build_section(DatasetConfig, e, "data.sources")
            for e in self.sources
        )
        object.__setattr__(self, "sources", entries)
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources: population names must be distinct, got {names}")
        if self.dedupe and (len(self.dedupe) != 2 or not set(self.dedupe) <= set(names)
                            or self.dedupe[0] == self.dedupe[1]):
            raise ConfigError(f"data.dedupe must name two of the populations {names} "
                              f"(drop from the first, keep in the second), got {list(self.dedupe)}")

    @property
    def datasets(self) -> tuple[DatasetConfig, ...]:
        """The populations of the run; a single ``source`` is one population named ``all``."""
        if self.sources:
            return self.sources
        return (DatasetConfig("all", self.source),) if self.source else ()


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, augmentation, early stopping and the CPU speed-ups used.

    ``target_sensitivity``: the operating threshold is the highest one reaching this
    sensitivity on the validation split of every population (a screening operating point).
    ``samples_per_epoch``: images drawn (with replacement, see ``data.sources``) per epoch;
    by default the size of the training split. ``init_from``: a medcam checkpoint whose
    weights start the run, checked against ``init_model_id``; relative to the config file.
    ``ema``: when above 0, the decay per step of an exponential moving average of the
    weights (and batch-norm statistics); that average is what is validated and saved, which
    steadies a model fine-tuned on few, noisy labels. ``erase``: the probability of erasing
    one to four random rectangles of a training image (random grey levels), so that the
    model cannot lean on one spot, such as a side marker or burnt-in text.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    num_workers: int = 2
    bf16: bool = True
    channels_last: bool = True
    augment: bool = True
    target_sensitivity: float = 0.95
    label_smoothing: float = 0.0
    samples_per_epoch: int | None = None
    init_from: str = ""
    init_model_id: str = ""
    ema: float = 0.0
    erase: float = 0.0
    lung_loss: float = 0.0
    box_loss: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.ema < 1:
            raise ConfigError(f"train.ema must be in [0, 1) (0: off), got {self.ema!r}")
        if not 0 <= self.erase <= 1:
            raise ConfigError(f"train.erase must be a probability in [0, 1], got {self.erase!r}")
        for name in ("lung_loss", "box_loss"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"train.{name} must be >= 0 (0: off), got {getattr(self, name)!r}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"train.label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        if self.init_from and not self.init_model_id:
            raise ConfigError("train.init_from needs train.init_model_id (the model id the run starts from), "
                              "so that the run is reproducible")


@dataclass(frozen=True)
class IntendedUse:
    """The images a model is meant to read.

    Attributes:
        modalities: DICOM Modality values accepted (``CR`` computed, ``DX`` digital radiography).
        views: View Position values accepted (``PA``, ``AP``: frontal films).
        body_parts: Body Part Examined values accepted (``THORAX`` counts as ``CHEST``).
        min_age: youngest patient, in years; None for no lower bound.
        max_age: oldest patient, in years; None for no upper bound.
        greyscale_only: refuse colour images.
        min_size: smallest accepted number of rows and of columns, in pixels.
        allow_secondary_capture: research only: also accept Secondary Captures that are not
            plain captures of a radiograph (Modality OT or none, a scanned image or document,
            a drawing or synthetic image, derived or annotated pixels, a multi-frame class).
            Either way a greyscale capture of a chest radiograph (Modality CR or DX,
            Conversion Type WSD, DF, DI or none) is read like one, with a note, and medcam's
            own results never are (see :mod:`medcam.gate.tags`). False in checkpoints made
            before this rule means that rule too.
    """

    modalities: tuple[str, ...] = ("CR", "DX")
    views: tuple[str, ...] = ("PA", "AP")
    body_parts: tuple[str, ...] = ("CHEST",)
    min_age: float | None = None
    max_age: float | None = None
    greyscale_only: bool = True
    min_size: int = 256
    allow_secondary_capture: bool = False

    def __post_init__(self) -> None:
        for name in ("modalities", "views", "body_parts"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{name} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, name, tuple(v.strip().upper() for v in value))
        for name in ("min_age", "max_age"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TypeError(f"{name} must be a number of years or None, got {value!r}")
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0 years, got {value}")
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(f"min_age ({self.min_age}) is above max_age ({self.max_age})")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int):
            raise TypeError(f"min_size must be a whole number of pixels, got {self.min_size!r}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be at least 1 pixel, got {self.min_size}")

    @property
    def age_range(self) -> str:
        """The age range in words: ``"18-90"``, ``"at least 18"``, ``"up to 5"`` or ``"any"``."""
        low, high = _years(self.min_age), _years(self.max_age)
        if self.min_age is not None and self.max_age is not None:
            return f"{low}-{high}"
        if self.min_age is not None:
            return f"at least {low}"
        return f"up to {high}" if self.max_age is not None else "any"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, numbers, None, booleans) for checkpoint metadata or JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntendedUse:
        """Read back :meth:`to_dict`; missing keys take their defaults.

        Raises:
            ConfigError: an unknown key or a wrong value, named.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"intended use: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"intended use: {err}") from err


def _years(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


@dataclass(frozen=True)
class Config:
    """A training run. ``intended_use`` (modalities, views, body parts, ages, minimum size; see
    :class:`medcam.gate.IntendedUse`) is written into the checkpoint for the intended-use gate."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    intended_use: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "path"}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, path: str | None = None) -> Config:
        where = path or "config"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
        sections = {f.name: f.type for f in dataclasses.fields(cls) if f.name != "path"}
        _unknown(where, "", raw, sections)
        built: dict[str, Any] = {}
        for name, section_cls in (("model", ModelConfig), ("preprocess", PreprocessConfig),
                                  ("data", DataConfig), ("train", TrainConfig)):
            built[name] = build_section(section_cls, raw.get(name) or {}, f"{where}: {name}")
        use = raw.get("intended_use") or {}
        if not isinstance(use, dict):
            raise ConfigError(f"{where}: intended_use must be a mapping, got {type(use).__name__}")
        built["intended_use"] = IntendedUse.from_dict(use).to_dict()  # checked now, stored plain
        return cls(**built, path=path)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; ``data.source`` is resolved against its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    config = Config.from_dict(raw or {}, path=str(path))

    def resolve(value: str) -> str:
        return value if not value or Path(value).is_absolute() else str((path.parent / value).resolve())

    data = dataclasses.replace(
        config.data, source=resolve(config.data.source), parent=resolve(config.data.parent),
        sources=tuple(dataclasses.replace(e, source=resolve(e.source), boxes=resolve(e.boxes))
                      for e in config.data.sources))
    train = config.train
    if train.init_from and train.init_from != "bundled":
        train = dataclasses.replace(train, init_from=resolve(train.init_from))
    return dataclasses.replace(config, data=data, train=train)


_T = TypeVar("_T")


def build_section(section_cls: type[_T], raw: dict[str, Any], where: str) -> _T:
    """A config dataclass from a YAML mapping; unknown keys refused with "did you mean", lists as tuples."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(section_cls)}  # type: ignore[arg-type]
    _unknown(where, "", raw, fields)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    if "sources" in values and not all(isinstance(e, dict) for e in values["sources"]):
        raise ConfigError(f"{where}: sources must be a list of mappings (name, source, weight, balance)")
    try:
        return section_cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def _unknown(where: str, prefix: str, raw: dict[str, Any], known: dict[str, Any]) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {prefix}{key!r}{hint}")


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is in ``allowed``, naming ``name`` and the closest choice."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.{hint}")
