"""``medcam train-lungs``: train the lung-field segmenter on films with manual lung masks.

The data is a CSV (``file``, ``mask``, ``source``, ``patient_id``; paths relative to the CSV)
such as ``../shared/data/lungs/labels.csv`` (Montgomery and Shenzhen films). Patients are
split 70/15/15 within each source; the run folder receives ``train.csv``, ``val.csv`` and
``test.csv``, ``last.pt`` (the training state after every epoch, written atomically: the same
command resumes it), ``history.json`` and ``best.pt``, the segmenter of the epoch with the
best validation Dice, with its Dice per source on the validation and test splits.

Augmentation is what the pipeline meets and the masked films lack: rotation, zoom in and out
(a wider or narrower field of view, black borders), a stretched aspect ratio, mirror images,
gamma, contrast and noise.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image as PILImage
from sklearn.model_selection import StratifiedGroupKFold

from medcam.config import build_section
from medcam.errors import ConfigError
from medcam.files import atomic_open
from medcam.models.checkpoint import plain_metadata
from medcam.models.lungs import SegmenterConfig, build_segmenter, save_segmenter, segmenter_input

__all__ = ["LungSample", "LungTrainConfig", "augment", "dice", "load_lungs_config", "predict_lungs",
           "read_lung_samples", "split_lung_samples", "train_lungs"]


@dataclass(frozen=True)
class LungSample:
    image: str
    mask: str
    source: str
    patient_id: str


@dataclass(frozen=True)
class LungTrainConfig:
    """A segmenter training run (``configs/lungs.yaml``)."""

    data: str = ""
    epochs: int = 40
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    size: int = 256
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    num_res_units: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"epochs, batch_size and lr must be positive, got {self.epochs}, "
                              f"{self.batch_size}, {self.lr}")

    @property
    def network(self) -> SegmenterConfig:
        return SegmenterConfig(size=self.size, channels=self.channels, num_res_units=self.num_res_units)


def load_lungs_config(path: str | Path) -> LungTrainConfig:
    """Read and validate a segmenter config; ``data`` is resolved against the config's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    config = build_section(LungTrainConfig, raw, str(path))
    return replace(config, data=str((path.parent / config.data).resolve()) if config.data else "")


def read_lung_samples(source: str | Path) -> list[LungSample]:
    """The films and masks of a CSV with ``file``, ``mask``, ``source`` and ``patient_id``."""
    source = Path(source)
    try:
        with open(source, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ConfigError(f"{source}: cannot read the lung mask list ({err.strerror})") from err
    missing = {"file", "mask", "source", "patient_id"} - set(rows[0] if rows else {})
    if missing:
        raise ConfigError(f"{source}: the lung mask list needs the columns {', '.join(sorted(missing))}")
    root = source.parent
    return [LungSample(str(root / r["file"]), str(root / r["mask"]), r["source"], r["patient_id"]) for r in rows]


def split_lung_samples(samples: Sequence[LungSample], seed: int) -> tuple[list[LungSample], ...]:
    """Train, validation and test parts of 70/15/15 of the patients, stratified by source."""
    sources = np.array([s.source for s in samples])
    groups = np.array([s.patient_id for s in samples])
    remaining = np.arange(len(samples))
    parts = []
    for n_splits in (7, 6):  # 15% of all, then 15% of all out of the remaining 85%
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        keep, take = next(splitter.split(remaining, sources[remaining], groups[remaining]))
        parts.append([samples[int(i)] for i in remaining[take]])
        remaining = remaining[keep]
    return [samples[int(i)] for i in remaining], parts[0], parts[1]


def _write_split(path: Path, samples: Sequence[LungSample]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "mask", "source", "patient_id"])
        writer.writerows([s.image, s.mask, s.source, s.patient_id] for s in samples)


def _load(samples: Sequence[LungSample], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Films in [0, 1] and masks in {0, 1}, ``(N, 1, size, size)`` as uint8 to keep them small."""
    images, masks = [], []
    for s in samples:
        image = PILImage.open(s.image).convert("L").resize((size, size), PILImage.Resampling.BILINEAR)
        mask = PILImage.open(s.mask).convert("L").resize((size, size), PILImage.Resampling.NEAREST)
        images.append(np.asarray(image))
        masks.append(np.asarray(mask) >= 128)
    return (torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(masks).astype(np.uint8))[:, None])


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random geometric and intensity change per film, the mask moved with its film."""
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-12, 12) * math.pi / 180
    zoom = torch.exp(uniform(math.log(0.75), math.log(1.3)))       # > 1: a wider field of view
    aspect = torch.exp(uniform(math.log(0.85), math.log(1.18)))
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    sx, sy = zoom * aspect.sqrt() * flip, zoom / aspect.sqrt()
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, uniform(-0.1, 0.1)], 1),
                         torch.stack([sx * sin, sy * cos, uniform(-0.1, 0.1)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images.float() / 255, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(masks.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(math.log(0.6), math.log(1.6)))[:, None, None, None]
    x = x.clamp(0, 1) ** gamma
    contrast = uniform(0.7, 1.3)[:, None, None, None]
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * contrast + x.mean(dim=(1, 2, 3), keepdim=True)
    x = x + 0.02 * torch.rand(n, 1, 1, 1, generator=generator) * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1), (y >= 0.5).float()


def dice(probabilities: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Dice of the masks thresholded at 0.5 against the reference, per image; 1 when both are empty."""
    pred = (probabilities >= 0.5).flatten(1).float()
    ref = (masks >= 0.5).flatten(1).float()
    inter = (pred * ref).sum(1)
    total = pred.sum(1) + ref.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def _loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    soft_dice = 1 - (2 * (p * masks).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + masks.sum((1, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, masks) + soft_dice.mean()


def predict_lungs(network: torch.nn.Module, images: torch.Tensor, size: int, batch_size: int = 32) -> torch.Tensor:
    """Lung probabilities of uint8 films ``(N, 1, s, s)`` at their own side."""
    network.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].float() / 255
            p = torch.sigmoid(network(segmenter_input(x, size)))
            out.append(F.interpolate(p, size=images.shape[-2:], mode="bilinear", align_corners=False))
    return torch.cat(out)


def _dice_by_source(network: torch.nn.Module, samples: Sequence[LungSample], images: torch.Tensor,
                    masks: torch.Tensor, size: int) -> dict[str, dict[str, float]]:
    scores = dice(predict_lungs(network, images, size), masks.float()).numpy()
    sources = np.array([s.source for s in samples])
    out = {}
    for name in ["all", *sorted(set(sources))]:
        picked = scores if name == "all" else scores[sources == name]
        out[name] = {"n": len(picked), "mean": float(picked.mean()), "median": float(np.median(picked)),
                     "p05": float(np.percentile(picked, 5)), "min": float(picked.min())}
    return out


def train_lungs(config: LungTrainConfig, out: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) a segmenter run in ``out``; returns the best epoch's summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    samples = read_lung_samples(config.data)
    train, val, test = split_lung_samples(samples, config.seed)
    for name, part in (("train", train), ("val", val), ("test", test)):
        _write_split(out / f"{name}.csv", part)
    log(f"lung masks: {len(train)} train, {len(val)} validation, {len(test)} test films (split by patient)")
    (train_x, train_y), (val_x, val_y) = _load(train, config.size), _load(val, config.size)

    torch.manual_seed(config.seed)
    network = build_segmenter(config.network)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(len(train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.epochs * steps)
    generator = torch.Generator().manual_seed(config.seed)
    state_file, history, start, best = out / "last.pt", [], 0, -1.0
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state["config"] != plain_metadata(asdict(config)):
            raise ConfigError(f"{out}: holds a run of another config; train into a new folder")
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        history, start, best = json.loads(state["history"]), int(state["epoch"]), float(state["best"])
        log(f"resuming after epoch {start}")
    for epoch in range(start, config.epochs):
        began = time.monotonic()
        network.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for step in range(steps):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            x, y = augment(train_x[index], train_y[index], generator)
            loss = _loss(network(segmenter_input(x, config.size)), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss) * len(index)
        val_dice = float(dice(predict_lungs(network, val_x, config.size), val_y.float()).mean())
        history.append({"epoch": epoch + 1, "loss": total / len(train), "val_dice": val_dice,
                        "seconds": round(time.monotonic() - began, 1)})
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / len(train):.4f}, validation Dice {val_dice:.4f} "
            f"({history[-1]['seconds']} s)")
        if val_dice > best:
            best = val_dice
            with atomic_open(out / "best_weights.pt") as f:
                torch.save(network.state_dict(), f)
        with atomic_open(state_file) as f:
            torch.save({"config": plain_metadata(asdict(config)), "network": network.state_dict(),
                        "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                        "generator": generator.get_state(), "history": json.dumps(history),
                        "epoch": epoch + 1, "best": best}, f)
    with atomic_open(out / "history.json", "w") as f:
        json.dump(history, f, indent=1)
    network.load_state_dict(torch.load(out / "best_weights.pt", map_location="cpu", weights_only=True))
    test_x, test_y = _load(test, config.size)
    summary = {"data": {"source": str(config.data), "n_train": len(train), "n_val": len(val), "n_test": len(test),
                        "sources": sorted({s.source for s in samples}),
                        "test_patients": sorted(s.patient_id for s in test)},
               "training": plain_metadata(asdict(config)),
               "dice": {"val": _dice_by_source(network, val, val_x, val_y, config.size),
                        "test": _dice_by_source(network, test, test_x, test_y, config.size)},
               "best_epoch": int(max(history, key=lambda h: h["val_dice"])["epoch"])}
    segmenter_id = save_segmenter(out / "best.pt", network, config.network, extra=summary)
    log(f"best epoch {summary['best_epoch']}: {segmenter_id}, Dice validation "
        f"{summary['dice']['val']['all']['mean']:.4f}, test {summary['dice']['test']['all']['mean']:.4f}")
    return {"segmenter_id": segmenter_id, **summary}
