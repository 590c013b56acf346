"""Training end to end on a small synthetic data set: split, resume, checkpoint metadata."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medcam.config import Config, DataConfig, PreprocessConfig, TrainConfig, load_config
from medcam.data import read_samples, split_by_patient
from medcam.errors import ConfigError
from medcam.models import load_checkpoint
from medcam.train import train


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 PNGs of 20 patients; PNEUMONIA images carry a bright blob."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        label = i % 2
        image = rng.normal(90, 20, (80, 72)).clip(0, 255)
        if label:
            yy, xx = np.mgrid[:80, :72]
            cy, cx = rng.integers(20, 60), rng.integers(20, 52)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 150] = 230
        name = f"img{i:02d}.png"
        PILImage.fromarray(image.astype(np.uint8)).save(root / name)
        rows.append([name, label, f"p{i // 2 if label else i // 2 + 100}"])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "patient_id"], *rows])
    return root / "labels.csv"


def _config(csv_path: Path, epochs: int) -> Config:
    return Config(
        preprocess=PreprocessConfig(size=64),
        data=DataConfig(source=str(csv_path), val_fraction=0.25, test_fraction=0.25),
        train=TrainConfig(epochs=epochs, batch_size=8, num_workers=0, patience=5),
    )


def test_split_is_patient_disjoint_and_stratified(toy_csv: Path) -> None:
    samples = read_samples(toy_csv, ("NORMAL", "PNEUMONIA"))
    parts = split_by_patient(samples, [0.5, 0.25, 0.25], seed=0)
    patients = [{s.patient_id for s in part} for part in parts]
    assert sum(len(p) for p in parts) == len(samples)
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    for part in parts:
        assert {s.label for s in part} == {0, 1}


def test_train_resumes_and_writes_a_complete_checkpoint(toy_csv: Path, tmp_path: Path) -> None:
    train(_config(toy_csv, epochs=1), tmp_path, log=lambda _: None)
    first = torch.load(tmp_path / "last.pt", weights_only=True)
    assert first["epoch"] == 0 and len(first["history"]) == 1

    train(_config(toy_csv, epochs=2), tmp_path, log=lambda _: None)  # resumes for one more epoch
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 2

    ckpt = load_checkpoint(tmp_path / "best.pt")
    meta = ckpt.metadata
    assert ckpt.trained and ckpt.preprocess.size == 64
    assert ckpt.temperature > 0 and 0 <= ckpt.threshold <= 1
    assert len(meta["data"]["sha256"]) == 64
    assert meta["data"]["n_train"] + meta["data"]["n_val"] + meta["data"]["n_test"] == 40
    assert meta["config"]["train"]["epochs"] == 2
    assert {"medcam", "torch", "monai", "python"} <= set(meta["versions"])
    assert meta["training"]["epochs_run"] == 2
    for name in ("train.csv", "val.csv", "test.csv"):
        assert (tmp_path / name).is_file()


def test_resume_with_another_config_is_refused(toy_csv: Path, tmp_path: Path) -> None:
    train(_config(toy_csv, epochs=1), tmp_path, log=lambda _: None)
    other = _config(toy_csv, epochs=1)
    other = dataclasses.replace(other, train=dataclasses.replace(other.train, lr=0.5))
    with pytest.raises(ConfigError, match="another config"):
        train(other, tmp_path, log=lambda _: None)


def test_config_typo_gets_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  architecure: densenet121\n")
    with pytest.raises(ConfigError, match="did you mean 'architecture'"):
        load_config(path)
    path.write_text("preprocess:\n  size: 100\n")
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(path)
    path.write_text("model:\n  architecture: densenet12\n")
    with pytest.raises(ConfigError, match="Did you mean 'densenet121'"):
        load_config(path)


def test_shipped_config_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "configs" / "pneumonia_densenet121.yaml")
    assert config.model.classes == ("NORMAL", "PNEUMONIA")
    assert config.data.source.endswith("labels.csv")
