"""``medcam train``: train a classifier from a config, resumable, with early stopping.

Several populations (``data.sources``) are split by patient each on its own, sampled by
their weights with their classes (and optionally views) balanced, and validated each on
its own: early stopping follows the lowest per-population AUROC, so that the weaker
population is protected, and the operating threshold reaches the target sensitivity in
every population's validation split.

The run folder receives ``train.csv``/``val.csv``/``test.csv`` (the patient-disjoint split),
``last.pt`` (the full training state, written atomically after every epoch; a new run with
the same folder resumes from it, and only ``train.epochs`` may differ), ``best.pt`` (the
best-AUROC model as a medcam checkpoint, calibrated on the validation split by Platt scaling
with every population weighing the same, with its operating threshold and metadata) and
``history.json``. :func:`recalibrate` refits the calibration and threshold of an existing
checkpoint on labelled validation data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import CacheDataset, DataLoader
from monai.transforms import (
    Compose,
    Lambda,
    RandAdjustContrastd,
    RandAffined,
    RandCoarseDropoutd,
    RandGaussianNoised,
)
from monai.utils import convert_to_tensor
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import WeightedRandomSampler
from tqdm import tqdm

import medcam
from medcam.commands.gate import fit_ood_on, labelled_features
from medcam.config import Config, ModelConfig, TrainConfig, load_config
from medcam.errors import ConfigError
from medcam.files import atomic_open
from medcam.gate import IntendedUse, write_intended_use, write_ood
from medcam.gate.served import ServedModel
from medcam.io import load_image
from medcam.models.cam import CAMOutput, convert_to_cam
from medcam.models.checkpoint import POPULATION_KEY, load_checkpoint, resave_checkpoint, save_checkpoint
from medcam.models.grid import GridTransform
from medcam.models.lungs import LungSegmenter, cell_fractions, load_segmenter
from medcam.models.networks import build_network
from medcam.models.preprocess import resize, standardise
from medcam.training.calibration import Calibration, fit_operating_point, fit_population_operating_point
from medcam.training.data import Sample, data_hash, pixel_duplicates, read_samples, split_by_patient, write_samples
from medcam.training.localisation import Box, boxes_for, read_boxes

__all__ = ["map_losses", "read_boxes_of", "read_populations", "recalibrate", "sampling_weights", "split_populations",
           "train"]


def _box_mask(boxes: Sequence[Box], transform: GridTransform) -> torch.Tensor:
    """1 inside any of ``boxes`` (source pixels, ends exclusive) on the model grid, else 0: ``(1, n, n)`` uint8."""
    mask = torch.zeros((1, *transform.model_shape), dtype=torch.uint8)
    for box in boxes:
        corners = transform.source_to_model(torch.tensor([[box[0], box[1]], [box[2], box[3]]], dtype=torch.float64))
        r0, c0 = (int(v) for v in corners[0].floor())
        r1, c1 = (int(v) for v in corners[1].ceil())
        mask[0, max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = 1
    return mask


def _load_resized(config: Config, segmenter: LungSegmenter | None, with_boxes: bool) -> Lambda:
    """Deterministic, so CacheDataset caches its output: the image resized onto the model grid.

    With a ``segmenter``, also ``lungs``: its mask (uint8, 1 inside) on the model grid, from
    the resized image as the served pipeline computes it; with ``with_boxes``, ``boxes``: the
    sample's boxes as a mask on the model grid (all 0 for a film without boxes).
    """

    def load(sample: dict[str, Any]) -> dict[str, Any]:
        pixels = torch.from_numpy(load_image(sample["path"]).pixels)
        image, transform = resize(pixels, config.preprocess)
        out = {"image": image, "label": sample["label"]}
        if segmenter is not None:
            probabilities = segmenter(image[None].float())
            probabilities = F.interpolate(probabilities, size=tuple(image.shape[1:]), mode="bilinear",
                                          align_corners=False)
            out["lungs"] = (probabilities[0] >= 0.5).to(torch.uint8)
        if with_boxes:
            out["boxes"] = _box_mask(sample["boxes"], transform)
        return out

    return Lambda(load)


def _transforms(config: Config, train: bool, segmenter: LungSegmenter | None, with_boxes: bool) -> Compose:
    """Load (cached), augment on the fly (training only), then standardise.

    Augmentation suited to radiographs: gamma, small rotation/scale/shift, mild noise; no
    flips (the heart's side is anatomy, not noise). The lung and box masks move with the
    image. The last step returns plain tensors, because MONAI's MetaTensor slows every layer
    of the network down.
    """
    masks = [*(["lungs"] if segmenter is not None else []), *(["boxes"] if with_boxes else [])]

    def finish(sample: dict[str, Any]) -> dict[str, Any]:
        x = convert_to_tensor(sample["image"], track_meta=False).float().clamp(0, 1)
        out = {"image": standardise(x, config.preprocess), "label": sample["label"]}
        for key in masks:
            out[key] = convert_to_tensor(sample[key], track_meta=False).float()
        return out

    steps: list[Any] = [_load_resized(config, segmenter, with_boxes)]
    if train and config.train.augment:
        steps += [
            RandAdjustContrastd("image", prob=0.5, gamma=(0.7, 1.5)),
            RandAffined(["image", *masks], prob=0.8, rotate_range=math.radians(10), scale_range=0.1,
                        translate_range=0.06 * config.preprocess.size,
                        mode=["bilinear", *(["nearest"] * len(masks))],
                        padding_mode=["border", *(["zeros"] * len(masks))]),
            RandGaussianNoised("image", prob=0.3, std=0.02),
        ]
        if config.train.erase:
            side = config.preprocess.size
            steps.append(RandCoarseDropoutd("image", holes=1, max_holes=4, spatial_size=side // 10,
                                            max_spatial_size=side // 4, fill_value=(0.0, 1.0),
                                            prob=config.train.erase))
    return Compose([*steps, Lambda(finish)])


def _dataset(samples: Sequence[Sample], config: Config, train: bool, *, segmenter: LungSegmenter | None = None,
             boxes: Mapping[str, Sequence[Box]] | None = None) -> CacheDataset:
    items = [{"path": s.path, "label": s.label, "boxes": list((boxes or {}).get(s.path, ()))} for s in samples]
    return CacheDataset(items, transform=_transforms(config, train, segmenter, boxes is not None),
                        num_workers=config.train.num_workers, progress=False)


def read_populations(config: Config, *, log: Any = None) -> list[Sample]:
    """Every population's samples; with ``data.dedupe``, the first population's copies dropped.

    A film of the first population that is, by its pixels, also a film of the second is
    dropped from the first (the second keeps its copy: for NIH vs RSNA, the radiologists'
    label), and the copy takes the patient id it has in the first, since it is that patient's
    film: :func:`split_populations` then keeps it on the side of that patient's other films.
    """
    samples: list[Sample] = []
    rng = np.random.default_rng(config.train.seed)
    for dataset in config.data.datasets:
        part = read_samples(dataset.source, config.model.classes, dataset.name, dataset.labels)
        part = [s if s.population else dataclasses.replace(s, population=dataset.name) for s in part]
        if config.data.subsample and config.data.subsample < len(part):
            part = [part[i] for i in sorted(rng.choice(len(part), config.data.subsample, replace=False))]
        samples += part
    if config.data.dedupe:
        drop, keep = config.data.dedupe
        pairs = pixel_duplicates([s for s in samples if s.population == drop],
                                 [s for s in samples if s.population == keep])
        dropped = {a.path for a, _ in pairs}
        patient_of = {b.path: a.patient_id for a, b in pairs}
        samples = [dataclasses.replace(s, patient_id=patient_of.get(s.path, s.patient_id))
                   for s in samples if s.path not in dropped]
        if log is not None:
            changed = sum(a.label != b.label for a, b in pairs)
            log(f"{len(pairs)} {drop} films are also {keep} films (by their pixels; {changed} labelled "
                f"differently): {drop}'s copies left out, {keep}'s copies split with their {drop} patients")
    return samples


def read_boxes_of(config: Config, samples: Sequence[Sample]) -> dict[str, list[Box]] | None:
    """The boxes of every positive sample of a population with ``boxes``, by path; None when no source has boxes."""
    sources = {d.name: d.boxes for d in config.data.datasets if d.boxes}
    if not sources:
        return None
    tables = {name: read_boxes(path) for name, path in sources.items()}
    return {s.path: boxes_for(s.path, tables[s.population]) for s in samples if s.population in tables}


def split_populations(samples: Sequence[Sample], config: Config) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Each population split by patient on its own, so that every one has validation and test images.

    With ``data.parent`` (the config that trained the model this run starts from), a patient
    of the parent's splits stays in the same part (train, validation or test) whatever the
    population his films are in now, so that no film the parent trained on reaches this run's
    validation or test split; the other patients are split as usual, and a patient with
    films in two populations (a copy found by ``data.dedupe``) is put where his first
    population put him.
    """
    val_frac, test_frac = config.data.val_fraction, config.data.test_fraction
    assigned: dict[str, int] = {}
    if config.data.parent:
        parent = load_config(config.data.parent)
        for index, part in enumerate(split_populations(read_populations(parent), parent)):
            assigned.update((s.patient_id, index) for s in part)
    parts: tuple[list[Sample], list[Sample], list[Sample]] = ([], [], [])
    for name in dict.fromkeys(s.population for s in samples):
        population = [s for s in samples if s.population == name]
        for s in population:
            if s.patient_id in assigned:
                parts[assigned[s.patient_id]].append(s)
        fresh = [s for s in population if s.patient_id not in assigned]
        if fresh:
            split = split_by_patient(fresh, [1 - val_frac - test_frac, val_frac, test_frac], config.train.seed)
            for index, (whole, part) in enumerate(zip(parts, split, strict=True)):
                whole += part
                assigned.update((s.patient_id, index) for s in part)
    return parts


def sampling_weights(samples: Sequence[Sample], config: Config) -> torch.Tensor:
    """Per-sample weights: each population its configured share, equal shares for its strata.

    A stratum is a combination of the population's ``balance`` columns (label, view), so
    that with ``[label, view]`` a PA pneumonia film is drawn as often as an AP normal one.
    """
    datasets = {d.name: d for d in config.data.datasets}
    total = sum(datasets[name].weight for name in {s.population for s in samples})

    def stratum(s: Sample) -> tuple[str, ...]:
        return (s.population, *(str(s.label) if c == "label" else s.view for c in datasets[s.population].balance))

    counts = Counter(stratum(s) for s in samples)
    strata_per_population = Counter(key[0] for key in counts)
    return torch.tensor([
        datasets[s.population].weight / total / strata_per_population[s.population] / counts[stratum(s)]
        for s in samples
    ], dtype=torch.double)


def _population_aurocs(probs: np.ndarray, labels: np.ndarray, populations: np.ndarray) -> dict[str, float]:
    return {str(name): float(roc_auc_score(labels[populations == name], probs[populations == name]))
            for name in dict.fromkeys(populations.tolist())}


def _initial_weights(config: Config) -> dict[str, torch.Tensor] | None:
    if not config.train.init_from:
        return None
    checkpoint = load_checkpoint(config.train.init_from)
    if checkpoint.model_id != config.train.init_model_id:
        raise ConfigError(f"train.init_from {config.train.init_from} is {checkpoint.model_id}, "
                          f"not train.init_model_id {config.train.init_model_id}")
    return checkpoint.network.state_dict()


def _relative(path: str | None) -> str:
    """``path`` relative to the working folder when it lies below it (no home folders in metadata)."""
    if not path:
        return ""
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(path).name


def _without_epochs(config: dict[str, Any]) -> dict[str, Any]:
    """What must not change on resume: all but the epoch budget and the intended use (written at the end).

    Options added since a run started count at their defaults (which keep the old behaviour).
    """
    train = {**dataclasses.asdict(TrainConfig()), **config["train"]}
    model = {**dataclasses.asdict(ModelConfig()), **config["model"]}
    return {**{k: v for k, v in config.items() if k != "intended_use"}, "model": model,
            "train": {k: v for k, v in train.items() if k != "epochs"}}


def _cells_touched(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, cells)``: whether a box mask ``(B, 1, n, n)`` touches each CAM cell."""
    return F.adaptive_avg_pool2d(boxes.float(), grid)[:, 0].flatten(1) > 0


def map_losses(maps: torch.Tensor, labels: torch.Tensor, positive: int, *, lungs: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The training-only losses on the positive class's maps ``(B, rows, cols)`` (the CAM grid).

    - ``lungs`` (masks ``(B, 1, n, n)``, 1 inside): the mean over cells of max(0, cam(p)) x
      (1 - m(p)), m the cell's lung fraction: positive evidence outside the lungs, on every film.
    - ``boxes`` (masks ``(B, 1, n, n)``): on positive films with a box, -log of the share of
      the spatial softmax of cam inside the cells that a box touches, so that the map's peak
      moves into a box; 0 when the batch has no such film.
    """
    grid = (int(maps.shape[-2]), int(maps.shape[-1]))
    maps = maps.float()
    out: dict[str, torch.Tensor] = {}
    if lungs is not None:
        m = cell_fractions(lungs, grid)  # m(p) as the served lung_evidence computes it
        out["lungs"] = (maps.clamp_min(0) * (1 - m)).flatten(1).mean(1).mean()
    if boxes is not None:
        inside = _cells_touched(boxes, grid)
        chosen = (labels == positive) & inside.any(1)
        if chosen.any():
            attention = torch.softmax(maps.flatten(1)[chosen], dim=1)
            share = (attention * inside[chosen]).sum(1)
            out["boxes"] = -torch.log(share.clamp_min(1e-6)).mean()
        else:
            out["boxes"] = maps.sum() * 0.0
    return out


def _evaluate(model: nn.Module, loader: DataLoader, config: Config, *, bf16: bool,
              device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels, and per image whether the positive map's peak cell touches a box (-1: no box)."""
    model.eval()
    positive = config.model.classes.index(config.model.positive_class)
    logits, labels, hits = [], [], []
    device = device or torch.device("cpu")
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            x = batch["image"].to(device)
            if config.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            output: CAMOutput = model(x)
            logits.append(output.logits.float().cpu())
            labels.append(batch["label"])
            maps = output.maps[:, positive].float().cpu()
            if "boxes" in batch:
                inside = _cells_touched(batch["boxes"], (int(maps.shape[-2]), int(maps.shape[-1])))
                peak = maps.flatten(1).argmax(1)
                hit = inside.gather(1, peak[:, None])[:, 0].long()
                hits.append(torch.where(inside.any(1), hit, torch.full_like(hit, -1)))
            else:
                hits.append(torch.full((len(x),), -1, dtype=torch.long))
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), torch.cat(hits).numpy()


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    with atomic_open(path) as f:
        torch.save(obj, f)


def train(config: Config, out: str | Path, *, log: Any = print, device: str = "cpu") -> Path:
    """Train ``config`` into the folder ``out`` (resuming from ``out/last.pt``); return best.pt.

    ``device``: where the network trains (``cpu``, ``cuda``, ``cuda:1`` ...); not part of the
    config, so a run may resume on another device. Images are decoded, augmented and the lung
    masks computed on the CPU; the checkpoints are written with CPU tensors.
    """
    where = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = config.model.classes
    if not config.data.datasets:
        raise ConfigError(f"{config.path or 'config'}: neither data.source nor data.sources is set")
    torch.manual_seed(config.train.seed)
    samples = read_populations(config, log=log)
    train_set, val_set, test_set = split_populations(samples, config)
    for name, part in (("train", train_set), ("val", val_set), ("test", test_set)):
        write_samples(out / f"{name}.csv", part, classes)
    for population in dict.fromkeys(s.population for s in samples):
        sizes = [sum(s.population == population for s in part) for part in (train_set, val_set, test_set)]
        patients = len({s.patient_id for s in samples if s.population == population})
        log(f"{population}: {sum(sizes)} images of {patients} patients: train {sizes[0]}, "
            f"val {sizes[1]}, test {sizes[2]} (patient-disjoint)")

    network = build_network(config.model)
    initial = _initial_weights(config)
    if initial is not None:
        network.load_state_dict(initial)
    # trained as served: one pass gives the logits (the maps' mean) and the maps the map losses read
    model = convert_to_cam(network, inplace=True).to(where)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # the weights' moving average is what is validated and kept, when the config asks for one
    averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.train.ema), use_buffers=True)
                if config.train.ema else None)
    scored = averaged.module if averaged is not None else model
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.lr,
                                  weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.train.epochs)
    # the sampler balances populations and classes, so the loss needs no class weights
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    weights = sampling_weights(train_set, config)
    samples_per_epoch = config.train.samples_per_epoch or len(train_set)
    positive = classes.index(config.model.positive_class)
    map_weights = {"lungs": config.train.lung_loss, "boxes": config.train.box_loss}
    val_populations = np.array([s.population for s in val_set])

    state_path = out / "last.pt"
    history: list[dict[str, float]] = []
    start_epoch, best_auc, best_epoch = 0, -1.0, -1
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if _without_epochs(state["config"]) != _without_epochs(config.to_dict()):
            raise ConfigError(f"{state_path}: was trained with another config (only train.epochs "
                              "may change on resume); use a new output folder")
        model.load_state_dict(state["model"])
        if averaged is not None:
            averaged.load_state_dict(state["averaged"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.T_max = config.train.epochs  # a changed epoch budget re-aims the cosine decay
        start_epoch, best_auc, best_epoch = state["epoch"] + 1, state["best_auc"], state["best_epoch"]
        history = state["history"]
        log(f"resuming after epoch {start_epoch} (best validation AUROC {best_auc:.4f})")

    segmenter = load_segmenter() if config.train.lung_loss else None
    boxes = read_boxes_of(config, samples)
    if boxes is not None:
        log(f"boxes on {sum(bool(b) for b in boxes.values())} films")
    log("caching images ...")
    train_ds = _dataset(train_set, config, train=True, segmenter=segmenter,
                        boxes=boxes if config.train.box_loss else None)
    val_ds = _dataset(val_set, config, train=False, boxes=boxes)
    val_loader = DataLoader(val_ds, batch_size=64, shuffle=False, num_workers=0)
    started = time.time() - sum(h.get("seconds", 0.0) for h in history)
    for epoch in range(start_epoch, config.train.epochs):
        if epoch - best_epoch > config.train.patience and best_epoch >= 0:
            log(f"early stop: no validation AUROC gain for {config.train.patience} epochs")
            break
        monai.utils.set_determinism(seed=config.train.seed + epoch)
        generator = torch.Generator().manual_seed(config.train.seed + epoch)
        sampler = WeightedRandomSampler(weights.tolist(), samples_per_epoch, replacement=True, generator=generator)
        loader = DataLoader(train_ds, batch_size=config.train.batch_size, sampler=sampler,
                            num_workers=0, drop_last=True)
        model.train()
        tick, total, seen = time.time(), 0.0, 0
        parts = dict.fromkeys(map_weights, 0.0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch", leave=False)
        for batch in bar:
            x, y = batch["image"].to(where), batch["label"].to(where)
            if config.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(where.type, dtype=torch.bfloat16, enabled=config.train.bf16):
                output = model(x)
                loss = loss_fn(output.logits.float(), y)
                masks = {k: batch[k].to(where) for k in ("lungs", "boxes") if k in batch}
                extra = map_losses(output.maps[:, positive], y, positive, **masks)
                for name, weight in map_weights.items():
                    if weight and name in extra:
                        loss = loss + weight * extra[name]
                        parts[name] += float(extra[name].detach()) * len(y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += float(loss.detach()) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (time.time() - tick):.1f}")
        scheduler.step()
        logits, labels, hits = _evaluate(scored, val_loader, config, bf16=config.train.bf16, device=where)
        probs = torch.softmax(torch.from_numpy(logits), -1)[:, positive].numpy()
        aurocs = _population_aurocs(probs, labels == positive, val_populations)
        auc = min(aurocs.values())  # the weaker population decides
        pointing = {str(name): float(hits[(val_populations == name) & (hits >= 0)].mean())
                    for name in dict.fromkeys(val_populations[hits >= 0].tolist())}
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1),
               **{f"train_{name}_loss": value / max(seen, 1) for name, value in parts.items() if map_weights[name]},
               "val_auroc": auc, **{f"val_auroc_{name}": value for name, value in aurocs.items()},
               **{f"val_pointing_{name}": value for name, value in pointing.items()},
               "lr": float(scheduler.get_last_lr()[0]), "seconds": time.time() - tick}
        history.append(row)
        improved = auc > best_auc
        if improved:
            best_auc, best_epoch = auc, epoch
            _atomic_save({"model": scored.state_dict()}, out / "best_weights.pt")
        per_population = ", ".join(f"{name} {value:.4f}" for name, value in aurocs.items())
        points = "".join(f", pointing {name} {value:.3f}" for name, value in pointing.items())
        log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, validation AUROC {per_population}{points}"
            f"{' (best)' if improved else ''}, {row['seconds']:.0f} s")
        _atomic_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                      **({"averaged": averaged.state_dict()} if averaged is not None else {}),
                      "scheduler": scheduler.state_dict(), "epoch": epoch, "best_auc": best_auc,
                      "best_epoch": best_epoch, "history": history, "config": config.to_dict()},
                     state_path)
        (out / "history.json").write_text(json.dumps(history, indent=2))

    model.load_state_dict(torch.load(out / "best_weights.pt", map_location="cpu", weights_only=True)["model"])
    # calibrate in float32, as the model is served, so that the threshold holds at inference
    logits, labels, _ = _evaluate(model, val_loader, config, bf16=False, device=where)
    point = fit_operating_point(logits, labels, val_populations, positive, config.train.target_sensitivity)
    best = out / "best.pt"
    model_id = save_checkpoint(
        best, model.network.to(memory_format=torch.contiguous_format),  # type: ignore[call-overload]
        config.model, config.preprocess,
        temperature=point.calibration.temperature, class_bias=point.calibration.bias,
        threshold=point.threshold, trained=True, half=True,
        extra={
            "config": config.to_dict(),
            "config_path": _relative(config.path),
            "data": {"sources": {d.name: _relative(d.source) for d in config.data.datasets},
                     "sha256": data_hash(samples),
                     "populations": sorted({s.population for s in samples}),
                     "n_train": len(train_set), "n_val": len(val_set), "n_test": len(test_set),
                     "n_patients": len({s.patient_id for s in samples})},
            "training": {"best_epoch": best_epoch + 1, "epochs_run": len(history),
                         "val_auroc": best_auc, "seconds": time.time() - started,
                         "init_model_id": config.train.init_model_id, "validation": point.populations,
                         "history": history, "device": platform.processor() or platform.machine(),
                         "threads": torch.get_num_threads()},
            "versions": {"medcam": medcam.__version__, "torch": torch.__version__,
                         "monai": monai.__version__, "python": platform.python_version()},
        },
    )
    log(f"best epoch {best_epoch + 1}: validation AUROC {best_auc:.4f}; {_describe(point.calibration)}, "
        f"threshold {point.threshold:.3f} (sensitivity >= {config.train.target_sensitivity}); {best} = {model_id}")
    write_intended_use(best, IntendedUse.from_dict(config.intended_use))
    stats = fit_ood_on(ServedModel(str(best)), out / "train.csv", out / "val.csv", log=log)
    log(f"{best} = {write_ood(best, stats)}, with its intended use and image-gate statistics")
    return best



def _describe(calibration: Calibration) -> str:
    bias = "" if calibration.bias is None else f", class bias {', '.join(f'{b:+.3f}' for b in calibration.bias)}"
    return f"temperature {calibration.temperature:.3f}{bias}"


def recalibrate(model: str | Path, data: str | Path, *, out: str | Path, sensitivity: float | None = None,
                bias: bool = True, batch_size: int = 16, groups: Mapping[str, Sequence[str]] | None = None,
                train: str | Path | None = None, fit_on: Sequence[str] | None = None, log: Any = print) -> str:
    """Refit a checkpoint's calibration and operating threshold on labelled validation data.

    As :func:`train` does at its end (:func:`~medcam.training.calibration.fit_operating_point`), but on
    the checkpoint as it is served (float16 weights, the scoring pipeline's decoding); the
    weights and every other metadata entry are kept, and the ``calibration`` entry records the
    data, the map and threshold replaced, and the per-population figures. Returns the model id
    of the checkpoint written to ``out``.

    With ``groups``, one map per group of populations, chosen per image by a linear
    discriminant of its pooled features fitted on the ``train`` images
    (:func:`~medcam.training.calibration.fit_population_operating_point`); without, one map for
    every image (and a population calibration the checkpoint had is dropped).

    Args:
        model: the checkpoint, or ``"bundled"``.
        data: labelled images (CSV with a ``population`` column, as ``medcam train`` writes
            its ``val.csv``); never the test split.
        sensitivity: reached in every population; by default the training config's.
        bias: Platt scaling (temperature and class bias); False fits a temperature alone.
        groups: group name -> its populations, e.g. ``{"adult": ["adult", "rsna"], "pediatric": ["pediatric"]}``.
        train: the training images (CSV with a ``population`` column) the discriminant is fitted on;
            needed with ``groups``.
        fit_on: the populations whose labels fit the maps and the threshold (by default all); the
            others are calibrated and reported, e.g. ``["pediatric", "rsna"]`` to leave the NIH
            adults' report-mined labels out of the fit.

    Raises:
        ValueError: no ``sensitivity`` is given and the checkpoint's config names none; ``groups``
            without ``train``, or groups that do not hold every population once; ``fit_on``
            names a population the data lacks, or leaves a group nothing to fit on.
    """
    if groups is not None and train is None:
        raise ValueError("a calibration per population needs the training images (train=) for its discriminant")
    classifier = ServedModel(str(model))
    ckpt = classifier.checkpoint
    if sensitivity is None:
        sensitivity = ckpt.metadata.get("config", {}).get("train", {}).get("target_sensitivity")
        if sensitivity is None:
            raise ValueError(f"{ckpt.path}: its metadata names no target sensitivity; give sensitivity=")
    kept, found = labelled_features(classifier, data, "the calibration", batch_size=batch_size, log=log)
    assert found.logits is not None
    positive = ckpt.model.classes.index(ckpt.model.positive_class)
    logits, labels = found.logits.double().numpy(), np.array([s.label for s in kept])
    populations = np.array([s.population or "all" for s in kept])
    point = fit_operating_point(logits, labels, populations, positive, sensitivity, bias=bias, fit_on=fit_on)
    updates: dict[str, Any] = {POPULATION_KEY: None}
    record: dict[str, Any] = {"data": str(data), "sha256": data_hash(kept), "n": len(kept),
                              "populations_weighted_equally": True, "target_sensitivity": float(sensitivity),
                              "fitted_on": sorted(fit_on) if fit_on is not None else sorted(set(populations))}
    if groups is not None:
        assert train is not None
        fitted, reference = labelled_features(classifier, train, "the population discriminant", batch_size=batch_size,
                                              log=log)
        point = fit_population_operating_point(
            logits, labels, populations, found.features.double().numpy(), positive, sensitivity, groups=groups,
            train_features=reference.features.double().numpy(),
            train_populations=np.array([s.population or "all" for s in fitted]), bias=bias, fit_on=fit_on)
        assert point.population_calibration is not None
        by_population = point.population_calibration
        updates = {POPULATION_KEY: by_population.to_metadata()}
        record |= {"groups": {name: list(held) for name, held in groups.items()}, "train": str(train),
                   "train_sha256": data_hash(fitted)}
        for name, calibration in zip(by_population.populations, by_population.calibrations, strict=True):
            log(f"calibration for {name}: {_describe(calibration)}")
    for name, figures in point.populations.items():
        shares = "".join(f", {v:.1%} calibrated as {k}" for k, v in figures.get("calibrated_as", {}).items())
        role = "" if figures["fitted"] else " (reported, not fitted)"
        log(f"{name}{role}: n={figures['n']}, ECE {figures['ece']:.3f}, sensitivity {figures['sensitivity']:.3f}, "
            f"specificity {figures['specificity']:.3f}{shares}")
    record |= {"validation": point.populations,
               "replaced": {"model_id": ckpt.model_id, "temperature": ckpt.temperature,
                            "class_bias": ckpt.class_bias, "threshold": ckpt.threshold,
                            "population_calibration": ckpt.population_calibration is not None}}
    model_id = resave_checkpoint(model, out=out, updates={"calibration": record, **updates},
                                 calibration=point.calibration, threshold=point.threshold)
    what = "one map per group of populations" if groups is not None else _describe(point.calibration)
    where = "every population" if fit_on is None else ", ".join(sorted(fit_on))
    log(f"{what}, threshold {point.threshold:.4f} (sensitivity >= {sensitivity} in {where}); {out} = {model_id}")
    return model_id

