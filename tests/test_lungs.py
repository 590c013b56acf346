"""The lung segmenter: Dice on held-out patients, masks on every source grid, lung_evidence, checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medcam.errors import CheckpointError, ConfigError
from medcam.gate import ServedModel
from medcam.io import Image, load_image
from medcam.models.lungs import (
    SegmenterConfig,
    build_segmenter,
    cell_fractions,
    load_segmenter,
    lung_evidence,
    save_segmenter,
)
from medcam.training.lungs import dice, predict_lungs, read_lung_samples, split_lung_samples

SHARED_LUNGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lungs" / "labels.csv"


@pytest.fixture(scope="module")
def served() -> ServedModel:
    return ServedModel("bundled")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# --- the evidence share on crafted maps ----------------------------------------------------------


def test_lung_evidence_is_one_inside_zero_outside_and_the_share_between() -> None:
    fractions = torch.zeros(1, 4, 4)
    fractions[0, 1:3, 1:3] = 1.0                          # the lungs fill the central 2x2 cells
    inside = torch.full((1, 4, 4), -1.0)
    inside[0, 1:3, 1:3] = 2.0                             # positive evidence only inside
    outside = -inside                                      # positive evidence only outside
    half = torch.zeros(1, 4, 4)
    half[0, 1, 1], half[0, 0, 0] = 3.0, 3.0                # one cell in, one out, same weight
    shares = lung_evidence(torch.cat([inside, outside, half]), fractions.expand(3, 4, 4))
    assert shares.tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_lung_evidence_weights_partial_cells_and_is_nan_without_positive_evidence() -> None:
    fractions = torch.tensor([[[0.25, 1.0]]])
    maps = torch.tensor([[[4.0, 0.0]]])
    assert lung_evidence(maps, fractions).item() == pytest.approx(0.25)
    assert torch.isnan(lung_evidence(-torch.ones(1, 1, 2), fractions)).all()


def test_cell_fractions_count_mask_pixels_per_cam_cell() -> None:
    lungs = torch.zeros(1, 1, 256, 256)
    lungs[..., :128, :64] = 0.9                            # a quarter of the width, half of the height
    fractions = cell_fractions(lungs, (2, 2))
    assert fractions[0].flatten().tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0], abs=0.02)
    assert cell_fractions(lungs, (9, 9))[0].sum().item() * (256 / 9) ** 2 == pytest.approx(128 * 64, rel=0.05)


# --- the bundled segmenter on real films ------------------------------------------------------


@pytest.mark.slow
def test_dice_on_held_out_lung_patients_meets_the_target() -> None:
    if not SHARED_LUNGS.is_file():
        pytest.skip(f"{SHARED_LUNGS} is absent (../shared is not checked out here)")
    segmenter = load_segmenter()
    _, _, test = split_lung_samples(read_lung_samples(SHARED_LUNGS), seed=0)
    assert sorted(s.patient_id for s in test) == segmenter.metadata["data"]["test_patients"]  # never trained on
    images = torch.stack([torch.from_numpy(np.asarray(PILImage.open(s.image).convert("L")))[None] for s in test])
    masks = torch.stack([torch.from_numpy(np.asarray(PILImage.open(s.mask).convert("L")) >= 128)[None] for s in test])
    scores = dice(predict_lungs(segmenter.network, images, segmenter.config.size), masks.float())
    assert scores.mean().item() >= 0.95 and scores.median().item() >= 0.95, scores.tolist()


def test_the_mask_lands_on_the_source_grid_of_dicom_nifti_and_png(served: ServedModel, rg1_data: Path) -> None:
    dicom = load_image(rg1_data / "dicom" / "RG1_UNCR.dcm")
    nifti = load_image(rg1_data / "nifti" / "RG1.nii.gz")
    png = load_image(rg1_data / "png" / "RG1.png")
    found = {image.format: served.classify([image])[0] for image in (dicom, nifti, png)}
    for image in (dicom, nifti, png):
        lungs = found[image.format].lungs
        assert lungs is not None and tuple(lungs.shape) == image.shape, image.format
    mask = found["dicom"].lungs.numpy()
    assert 0.15 < mask.mean() < 0.5
    half = mask.shape[1] // 2
    assert mask[:, :half].sum() > 0.3 * mask.sum() and mask[:, half:].sum() > 0.3 * mask.sum()  # both lungs
    for other in ("nifti", "png"):  # downsized copies of the film: the same mask on their own, smaller grids
        small = found[other].lungs.numpy()
        resized = np.asarray(PILImage.fromarray(mask).resize(small.shape[::-1], PILImage.Resampling.NEAREST))
        assert small.shape != mask.shape and _iou(small, resized) > 0.9, other


def test_the_mask_of_a_dicom_with_pixel_spacing_is_on_its_grid(served: ServedModel, rsna_dicoms: list[Path]) -> None:
    image = load_image(rsna_dicoms[0])
    assert image.spacing is not None and image.affine is not None
    lungs = served.classify([image])[0].lungs
    assert lungs is not None and tuple(lungs.shape) == image.shape and 0.1 < lungs.float().mean().item() < 0.5


def test_a_mirrored_film_gets_the_mirrored_mask(served: ServedModel, rg1_data: Path) -> None:
    image = load_image(rg1_data / "png" / "RG1.png")
    mirrored = dataclasses.replace(image, pixels=np.ascontiguousarray(image.pixels[:, :, ::-1]))
    straight, flipped = (served.classify([i])[0].lungs.numpy() for i in (image, mirrored))
    assert _iou(flipped[:, ::-1], straight) > 0.9


def test_score_writes_the_mask_at_full_size_after_a_reduced_decode(tmp_path: Path, rg1_data: Path) -> None:
    from medcam.cli import main

    source = rg1_data / "dicom" / "RG1_J2KR.dcm"   # 1955x1841: decoded at 1/2 for scoring
    out = tmp_path / "r.csv"
    assert main(["score", str(source), "--out", str(out), "--cams", str(tmp_path / "cams"), "--workers", "0"]) == 0
    row = next(iter(_rows(out)))
    mask = np.asarray(PILImage.open(row["lungs"]))
    assert mask.shape == load_image(source).shape and set(np.unique(mask)) == {0, 255}
    assert Path(row["lungs"]).name == Path(row["overlay"]).name.replace("_overlay", "_lungs")
    assert 0 <= float(row["lung_evidence"]) <= 1 and row["segmenter"] == load_segmenter().segmenter_id


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- checkpoints ---------------------------------------------------------------------------------


def test_segmenter_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    config = SegmenterConfig(size=64, channels=(4, 8, 16), num_res_units=0)
    torch.manual_seed(0)
    network = build_segmenter(config).eval()
    ident = save_segmenter(tmp_path / "s.pt", network, config, extra={"note": "test"})
    loaded = load_segmenter(tmp_path / "s.pt")
    assert loaded.segmenter_id == ident and ident.startswith("lungunet-") and loaded.config == config
    x = torch.randn(2, 1, 96, 96)
    assert loaded(x).shape == (2, 1, 64, 64) and ((loaded(x) >= 0) & (loaded(x) <= 1)).all()
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer than this medcam"):
        load_segmenter(tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="not a medcam lung segmenter"):
        torch.save({"state_dict": {}}, tmp_path / "other.pt")
        load_segmenter(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such lung segmenter"):
        load_segmenter(tmp_path / "missing.pt")


def test_gate_data_fitted_with_another_segmenter_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from medcam.gate import ViewCheck, update_checkpoint
    from medcam.gate.view import FrontalPopulation
    from medcam.models.predictor import EVIDENCE_KEY

    population = FrontalPopulation("adult", np.zeros(5), np.eye(5), 3.0, 10)
    check = ViewCheck((population,), segmenter="lungunet-000000000000")
    with_view = tmp_path / "view.pt"
    update_checkpoint(tiny_checkpoint, {"view_check": check.to_metadata()}, out=with_view)
    with pytest.raises(CheckpointError, match="view check was set with the lung segmenter lungunet-000000000000"):
        ServedModel(str(with_view))
    assert ServedModel(str(with_view), segmenter=None).view_check is None  # no segmenter, no check
    with_evidence = tmp_path / "evidence.pt"
    update_checkpoint(tiny_checkpoint, {EVIDENCE_KEY: {"threshold": 0.3, "segmenter": "lungunet-0"}}, out=with_evidence)
    with pytest.raises(CheckpointError, match=r"set with the lung segmenter lungunet-0, not lungunet-.*fit-lung-gate"):
        ServedModel(str(with_evidence))


def test_an_image_without_a_segmenter_has_no_mask(tiny_checkpoint: Path, rg1: Image) -> None:
    prediction = ServedModel(str(tiny_checkpoint), segmenter=None).classify([rg1])[0]
    assert prediction.lungs is None and prediction.lung_evidence is None and prediction.quality == ""


@pytest.mark.slow
def test_the_served_mask_matches_the_manual_mask_on_the_source_grid_of_a_cropped_film(
        served: ServedModel, tmp_path: Path) -> None:
    """Held-out films through the pipeline as served (prepare, grid transform back): cropped to a
    non-square window, the mask on the crop's own pixels still matches the manual mask."""
    if not SHARED_LUNGS.is_file():
        pytest.skip(f"{SHARED_LUNGS} is absent (../shared is not checked out here)")
    _, _, test = split_lung_samples(read_lung_samples(SHARED_LUNGS), seed=0)
    scores = []
    for sample in test[:6]:
        film = np.asarray(PILImage.open(sample.image).convert("L"))[16:240, 40:216]   # 224 x 176
        manual = np.asarray(PILImage.open(sample.mask).convert("L"))[16:240, 40:216] >= 128
        path = tmp_path / f"{Path(sample.image).stem}.png"
        PILImage.fromarray(film).save(path)
        lungs = served.classify([load_image(path)])[0].lungs
        assert lungs is not None and tuple(lungs.shape) == manual.shape
        found = lungs.numpy()
        scores.append(2 * (found & manual).sum() / (found.sum() + manual.sum()))
    assert np.median(scores) >= 0.9, scores


def test_the_evidence_threshold_weighs_each_population_the_same() -> None:
    from medcam.training.data import Sample
    from medcam.training.lung_gate import Measured, evidence_threshold

    def films(population: str, shares: list[float]) -> list[Measured]:
        return [Measured(Sample(f"{population}{i}", 1, f"{population}{i}", population), np.zeros(5), s, True)
                for i, s in enumerate(shares)]

    big = films("big", [0.5] * 90)                      # 90 films at 0.5
    small = films("small", [0.1 * i for i in range(10)])  # 10 films at 0.0 ... 0.9
    unflagged = [Measured(Sample("x", 1, "x", "big"), np.zeros(5), 0.0, False)]
    # weighed the same, the small population's lowest 10% carry 5% of the weight: its lowest film
    assert evidence_threshold(big + small + unflagged, quantile=0.05) == pytest.approx(0.0)
    assert evidence_threshold(big + small, quantile=0.3) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match=r"val\.csv: no flagged pneumonia film"):
        evidence_threshold(unflagged, where="val.csv")
