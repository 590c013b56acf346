"""The lung-field segmenter: where the lungs are on the classifier's own input grid.

A small MONAI :class:`~monai.networks.nets.UNet` (8-128 channels, four poolings) reads the
batch the classifier reads, resampled to its own side (256 px) and standardised again, and
returns the probability that each pixel lies inside a lung field. The mask lives on the model
grid, so that the classifier's :class:`~medcam.models.grid.GridTransform` brings it back onto
the source pixels exactly as it brings the maps (:func:`~medcam.models.grid.maps_to_source`).

Checkpoints are dictionaries like the classifier's (``weights_only=True``)::

    {"format": "medcam-segmenter", "format_version": 1, "state_dict": {...}, "metadata": {...}}

and the segmenter's id is ``lungunet-`` plus the first 12 hex digits of the file's SHA-256.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

import medcam
from medcam.errors import CheckpointError
from medcam.files import atomic_open
from medcam.models.checkpoint import file_id, plain_metadata, read_payload

__all__ = [
    "BUNDLED_SEGMENTER",
    "LungSegmenter",
    "SegmenterConfig",
    "build_segmenter",
    "cell_fractions",
    "load_segmenter",
    "lung_evidence",
    "save_segmenter",
    "segmenter_input",
]

FORMAT = "medcam-segmenter"
FORMAT_VERSION = 1
BUNDLED_SEGMENTER = "bundled"


@dataclass(frozen=True)
class SegmenterConfig:
    """The segmenter network and its input side (pixels, a multiple of 16)."""

    size: int = 256
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    num_res_units: int = 1

    def __post_init__(self) -> None:
        stride = 2 ** (len(self.channels) - 1)
        if self.size < stride or self.size % stride:
            raise ValueError(f"segmenter size must be a positive multiple of {stride}, got {self.size!r}")


def build_segmenter(config: SegmenterConfig) -> nn.Module:
    """A freshly initialised UNet for ``config``: one input channel, one output logit per pixel."""
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=config.channels,
                strides=(2,) * (len(config.channels) - 1), num_res_units=config.num_res_units)


def segmenter_input(batch: torch.Tensor, size: int) -> torch.Tensor:
    """The segmenter's input from a classifier batch ``(B, 1, n, n)``: resampled to ``size``, z-scored."""
    if batch.shape[-1] != size or batch.shape[-2] != size:
        batch = F.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    std = batch.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (batch - mean) / std


def cell_fractions(lungs: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """m(p): the fraction of each CAM cell inside the lungs, from probabilities ``(B, 1, n, n)``.

    The mask is thresholded at 0.5 on a grid that the CAM cells tile exactly (the smallest
    multiple of the CAM grid at or above the mask's side), then averaged per cell.
    """
    rows, cols = grid
    side = max(lungs.shape[-2], lungs.shape[-1])
    fine = (-(-side // rows) * rows, -(-side // cols) * cols)
    inside = (F.interpolate(lungs.float(), size=fine, mode="bilinear", align_corners=False) >= 0.5).float()
    return F.adaptive_avg_pool2d(inside, grid)[:, 0]


def lung_evidence(maps: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """The share of the positive evidence inside the lungs, per image.

    With c(p) = max(0, map(p)) on the CAM grid and m(p) the cell's lung fraction,
    ``sum(c * m) / sum(c)``; NaN where ``sum(c) = 0`` (no positive evidence anywhere).

    Args:
        maps: the positive class's raw maps ``(B, rows, cols)``, in logit units.
        fractions: m(p), ``(B, rows, cols)`` (:func:`cell_fractions`).
    """
    c = maps.float().clamp_min(0).flatten(1)
    total = c.sum(dim=1)
    inside = (c * fractions.float().flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total.where(total > 0, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


@dataclass(frozen=True)
class LungSegmenter:
    """A loaded lung segmenter, in eval mode.

    Attributes:
        segmenter_id: ``lungunet-`` + the SHA-256 prefix of the checkpoint file.
        metadata: what training recorded (data, the test patients, Dice per source ...).
    """

    network: nn.Module
    config: SegmenterConfig
    segmenter_id: str
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)
    memory_format: torch.memory_format = torch.contiguous_format

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> LungSegmenter:
        """This segmenter on ``device`` with activations laid out as ``memory_format``."""
        network = self.network.to(device, memory_format=memory_format)  # type: ignore[call-overload]
        return replace(self, network=network, memory_format=memory_format)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Lung probabilities ``(B, 1, size, size)`` for a classifier batch ``(B, 1, n, n)``."""
        parameter = next(self.network.parameters())
        x = segmenter_input(batch, self.config.size).to(parameter.device, memory_format=self.memory_format)
        with torch.inference_mode():
            logits = self.network(x)
        return torch.sigmoid(logits.float())


def bundled_segmenter_path() -> Path:
    """The lung segmenter shipped inside the package (``medcam/weights/``)."""
    return Path(str(resources.files("medcam") / "weights" / "lungs_unet.pt"))


def save_segmenter(path: str | Path, network: nn.Module, config: SegmenterConfig, *,
                   extra: dict[str, Any] | None = None) -> str:
    """Write a segmenter checkpoint atomically (float16 weights); returns its id."""
    state = {k: (v.half() if v.is_floating_point() else v).detach().cpu().clone()
             for k, v in network.state_dict().items()}
    metadata = plain_metadata({"network": asdict(config), "medcam_version": medcam.__version__,
                               "torch_version": torch.__version__, **(extra or {})})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": state,
                    "metadata": metadata}, f)
    return file_id("lungunet", path)


def load_segmenter(path: str | Path = BUNDLED_SEGMENTER) -> LungSegmenter:
    """Load a segmenter (``"bundled"`` for the shipped one) with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, not a medcam segmenter, newer than this medcam
            reads, or its weights do not fit its network.
    """
    file = bundled_segmenter_path() if str(path) == BUNDLED_SEGMENTER else Path(path)
    payload = read_payload(file, FORMAT, FORMAT_VERSION, "lung segmenter")
    meta = payload["metadata"]
    try:
        net = meta["network"]
        config = SegmenterConfig(size=int(net["size"]), channels=tuple(int(c) for c in net["channels"]),
                                 num_res_units=int(net["num_res_units"]))
        network = build_segmenter(config)
        network.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in payload["state_dict"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{file}: not a usable lung segmenter ({err})") from err
    return LungSegmenter(network.eval(), config, file_id("lungunet", file), str(file), meta)
