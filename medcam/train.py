"""``medcam train``: train a classifier from a config, resumable, with early stopping.

The run folder receives ``train.csv``/``val.csv``/``test.csv`` (the patient-disjoint split),
``last.pt`` (the full training state, written atomically after every epoch; a new run with
the same folder resumes from it, and only ``train.epochs`` may differ), ``best.pt`` (the
best-AUROC model as a medcam checkpoint, calibrated by temperature scaling on the validation
split, with its operating threshold and metadata) and ``history.json``.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, Lambda, RandAdjustContrastd, RandAffined, RandGaussianNoised
from monai.utils import convert_to_tensor
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

import medcam
from medcam.calibration import fit_temperature, screening_threshold
from medcam.config import Config
from medcam.data import Sample, data_hash, read_samples, split_by_patient, write_samples
from medcam.errors import ConfigError
from medcam.files import atomic_open
from medcam.io import load_image
from medcam.models.checkpoint import save_checkpoint
from medcam.models.networks import build_network
from medcam.models.predictor import resize, standardise

__all__ = ["train"]


def _load_resized(config: Config) -> Lambda:
    """Deterministic, so CacheDataset caches its output: the image resized onto the model grid."""

    def load(sample: dict[str, Any]) -> dict[str, Any]:
        pixels = torch.from_numpy(load_image(sample["path"]).pixels)
        image, _ = resize(pixels, config.preprocess)
        return {"image": image, "label": sample["label"]}

    return Lambda(load)


def _transforms(config: Config, train: bool) -> Compose:
    """Load (cached), augment on the fly (training only), then standardise.

    Augmentation suited to radiographs: gamma, small rotation/scale/shift, mild noise; no
    flips (the heart's side is anatomy, not noise). The last step returns a plain tensor,
    because MONAI's MetaTensor slows every layer of the network down.
    """

    def finish(sample: dict[str, Any]) -> dict[str, Any]:
        x = convert_to_tensor(sample["image"], track_meta=False).float().clamp(0, 1)
        return {"image": standardise(x, config.preprocess), "label": sample["label"]}

    steps: list[Any] = [_load_resized(config)]
    if train and config.train.augment:
        steps += [
            RandAdjustContrastd("image", prob=0.5, gamma=(0.7, 1.5)),
            RandAffined("image", prob=0.8, rotate_range=math.radians(10), scale_range=0.1,
                        translate_range=0.06 * config.preprocess.size, padding_mode="border"),
            RandGaussianNoised("image", prob=0.3, std=0.02),
        ]
    return Compose([*steps, Lambda(finish)])


def _dataset(samples: Sequence[Sample], config: Config, train: bool) -> CacheDataset:
    items = [{"path": s.path, "label": s.label} for s in samples]
    return CacheDataset(items, transform=_transforms(config, train),
                        num_workers=config.train.num_workers, progress=False)


def _relative(path: str | None) -> str:
    """``path`` relative to the working folder when it lies below it (no home folders in metadata)."""
    if not path:
        return ""
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(path).name


def _without_epochs(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "epochs"}}


def _evaluate(model: nn.Module, loader: DataLoader, config: Config, *,
              bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, labels = [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            x = batch["image"]
            if config.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits.append(model(x).float())
            labels.append(batch["label"])
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    with atomic_open(path) as f:
        torch.save(obj, f)


def train(config: Config, out: str | Path, *, log: Any = print) -> Path:
    """Train ``config`` into the folder ``out`` (resuming from ``out/last.pt``); return best.pt."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = config.model.classes
    if not config.data.source:
        raise ConfigError(f"{config.path or 'config'}: data.source is not set")
    torch.manual_seed(config.train.seed)
    samples = read_samples(config.data.source, classes)
    if config.data.subsample and config.data.subsample < len(samples):
        rng = np.random.default_rng(config.train.seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), config.data.subsample, replace=False))]
    val_frac, test_frac = config.data.val_fraction, config.data.test_fraction
    train_set, val_set, test_set = split_by_patient(
        samples, [1 - val_frac - test_frac, val_frac, test_frac], config.train.seed)
    for name, part in (("train", train_set), ("val", val_set), ("test", test_set)):
        write_samples(out / f"{name}.csv", part, classes)
    log(f"{len(samples)} images of {len({s.patient_id for s in samples})} patients: "
        f"train {len(train_set)}, val {len(val_set)}, test {len(test_set)} (patient-disjoint)")

    model = build_network(config.model)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.lr,
                                  weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.train.epochs)
    counts = np.bincount([s.label for s in train_set], minlength=len(classes))
    weights = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)

    state_path = out / "last.pt"
    history: list[dict[str, float]] = []
    start_epoch, best_auc, best_epoch = 0, -1.0, -1
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if _without_epochs(state["config"]) != _without_epochs(config.to_dict()):
            raise ConfigError(f"{state_path}: was trained with another config (only train.epochs "
                              "may change on resume); use a new output folder")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.T_max = config.train.epochs  # a changed epoch budget re-aims the cosine decay
        start_epoch, best_auc, best_epoch = state["epoch"] + 1, state["best_auc"], state["best_epoch"]
        history = state["history"]
        log(f"resuming after epoch {start_epoch} (best validation AUROC {best_auc:.4f})")

    log("caching images ...")
    train_ds = _dataset(train_set, config, train=True)
    val_ds = _dataset(val_set, config, train=False)
    val_loader = DataLoader(val_ds, batch_size=64, shuffle=False, num_workers=0)
    started = time.time() - sum(h.get("seconds", 0.0) for h in history)
    for epoch in range(start_epoch, config.train.epochs):
        if epoch - best_epoch > config.train.patience and best_epoch >= 0:
            log(f"early stop: no validation AUROC gain for {config.train.patience} epochs")
            break
        monai.utils.set_determinism(seed=config.train.seed + epoch)
        generator = torch.Generator().manual_seed(config.train.seed + epoch)
        loader = DataLoader(train_ds, batch_size=config.train.batch_size, shuffle=True,
                            generator=generator, num_workers=0, drop_last=True)
        model.train()
        tick, total, seen = time.time(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch", leave=False)
        for batch in bar:
            x, y = batch["image"], batch["label"]
            if config.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.train.bf16):
                loss = loss_fn(model(x).float(), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (time.time() - tick):.1f}")
        scheduler.step()
        logits, labels = _evaluate(model, val_loader, config, bf16=config.train.bf16)
        positive = classes.index(config.model.positive_class)
        probs = torch.softmax(torch.from_numpy(logits), -1)[:, positive].numpy()
        auc = float(roc_auc_score(labels == positive, probs))
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_auroc": auc,
               "lr": float(scheduler.get_last_lr()[0]), "seconds": time.time() - tick}
        history.append(row)
        improved = auc > best_auc
        if improved:
            best_auc, best_epoch = auc, epoch
            _atomic_save({"model": model.state_dict()}, out / "best_weights.pt")
        log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, validation AUROC {auc:.4f}"
            f"{' (best)' if improved else ''}, {row['seconds']:.0f} s")
        _atomic_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch, "best_auc": best_auc,
                      "best_epoch": best_epoch, "history": history, "config": config.to_dict()},
                     state_path)
        (out / "history.json").write_text(json.dumps(history, indent=2))

    model.load_state_dict(torch.load(out / "best_weights.pt", weights_only=True)["model"])
    # calibrate in float32, as the model is served, so that the threshold holds at inference
    logits, labels = _evaluate(model, val_loader, config, bf16=False)
    positive = classes.index(config.model.positive_class)
    temperature = fit_temperature(logits, labels)
    probs = torch.softmax(torch.from_numpy(logits) / temperature, -1)[:, positive].numpy()
    threshold = screening_threshold(probs, labels == positive, config.train.target_sensitivity)
    best = out / "best.pt"
    model_id = save_checkpoint(
        best, model.to(memory_format=torch.contiguous_format),  # type: ignore[call-overload]
        config.model, config.preprocess,
        temperature=temperature, threshold=threshold, trained=True, half=True,
        extra={
            "config": config.to_dict(),
            "config_path": _relative(config.path),
            "data": {"source": config.data.source, "sha256": data_hash(samples),
                     "n_train": len(train_set), "n_val": len(val_set), "n_test": len(test_set),
                     "n_patients": len({s.patient_id for s in samples})},
            "training": {"best_epoch": best_epoch + 1, "epochs_run": len(history),
                         "val_auroc": best_auc, "seconds": time.time() - started,
                         "history": history, "device": platform.processor() or platform.machine(),
                         "threads": torch.get_num_threads()},
            "versions": {"medcam": medcam.__version__, "torch": torch.__version__,
                         "monai": monai.__version__, "python": platform.python_version()},
        },
    )
    log(f"best epoch {best_epoch + 1}: validation AUROC {best_auc:.4f}; temperature {temperature:.3f}, "
        f"threshold {threshold:.3f} (sensitivity >= {config.train.target_sensitivity}); {best} = {model_id}")
    return best

