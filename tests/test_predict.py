"""``medcam predict`` end to end: outputs, geometry, errors, and agreement with the library."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medcam.cli import main
from medcam.config import ModelConfig, PreprocessConfig
from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.models import build_network, save_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_network(ModelConfig()).eval(), ModelConfig(),
                    PreprocessConfig(size=64), trained=False, threshold=0.3)
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    ct = folder / "ct_no_extension"
    ct.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    plan = folder / "plan.dcm"
    plan.write_bytes(Path(get_testdata_file("rtplan.dcm")).read_bytes())
    png = folder / "chest.png"
    PILImage.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (70, 1))).save(png)
    (folder / "notes.txt").write_text("not an image, skipped inside a folder")
    return [ct, plan, png]


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "predictions.csv", newline="") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_predict_writes_overlays_maps_and_table(tiny_checkpoint: Path, inputs: list[Path],
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(inputs[0].parent), "--model", str(tiny_checkpoint), "--out", str(out),
                 "--colour-map", "inferno", "--opacity", "0.7", "--ignore-intended-use"])  # a CT slice
    assert code == 3  # finished, one input (the RT plan) was refused
    printed = capsys.readouterr().out
    assert "UNTRAINED PLACEHOLDER" in printed and re.search(r"plan\.dcm\s+error: .*no pixel data", printed)

    rows = _rows(out)
    assert set(rows) == {"ct_no_extension", "plan.dcm", "chest.png"}  # notes.txt skipped
    assert rows["plan.dcm"]["status"] == "error" and "no pixel data" in rows["plan.dcm"]["reason"]

    ct_image = load_image(inputs[0])
    ct = rows["ct_no_extension"]
    assert ct["status"] == "ok"
    p_normal, p_pneumonia = float(ct["prob_NORMAL"]), float(ct["prob_PNEUMONIA"])
    assert p_normal + p_pneumonia == pytest.approx(1.0, abs=1e-5)
    assert ct["flagged"] == str(p_pneumonia >= 0.3).lower()
    assert (ct["label"] == "PNEUMONIA") == (ct["flagged"] == "true")

    # the table agrees with the library called directly
    direct = ServedModel(str(tiny_checkpoint)).classify([ct_image])[0]
    assert p_pneumonia == pytest.approx(direct.probability("PNEUMONIA"), abs=1e-5)

    maps = np.load(ct["cam"])
    assert maps.shape == (2, *ct_image.shape) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, direct.maps.numpy(), atol=1e-5)

    nii = nib.load(ct["cam_nifti"])
    np.testing.assert_allclose(nii.affine, ct_image.affine, atol=1e-4)
    np.testing.assert_allclose(np.asarray(nii.dataobj)[:, :, 0, :].transpose(2, 1, 0), maps, atol=1e-5)

    overlay = np.asarray(PILImage.open(ct["overlay"]))
    assert overlay.shape == (*ct_image.shape, 3)
    gray = np.round(ct_image.pixels[0] * 255)
    tinted = np.abs(overlay.astype(float) - gray[..., None]).max(axis=2) > 2
    assert 0 < tinted.mean() < 1  # the map tints part of the image, not all or nothing

    png = rows["chest.png"]
    assert png["status"] == "ok" and png["cam_nifti"] == ""  # PNG has no geometry to write NIfTI with
    assert np.load(png["cam"]).shape == (2, 70, 96)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["trained"] is False and manifest["options"]["colour_map"] == "inferno"
    assert manifest["model"]["id"] == ct["model"]


def test_predict_rejects_unknown_class_and_colour_map(tiny_checkpoint: Path, inputs: list[Path],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(inputs[2]), "--model", str(tiny_checkpoint), "--out", str(tmp_path),
                 "--class", "EFFUSION"]) == 1
    assert "EFFUSION" in capsys.readouterr().err
    assert main(["predict", str(inputs[2]), "--model", str(tiny_checkpoint), "--out", str(tmp_path),
                 "--class", "pneumonai"]) == 1
    assert "did you mean 'PNEUMONIA'" in capsys.readouterr().err
    assert main(["predict", str(inputs[2]), "--model", str(tiny_checkpoint), "--out", str(tmp_path),
                 "--class", "pneumonia"]) == 0  # any case
    assert main(["predict", str(inputs[2]), "--model", str(tiny_checkpoint), "--out", str(tmp_path),
                 "--colour-map", "no-such-map"]) == 1
    assert "unknown colour map 'no-such-map'" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tmp_path), "--model", str(tmp_path / "nope.pt")]) == 1
    assert "nope.pt: no such checkpoint file" in capsys.readouterr().err
