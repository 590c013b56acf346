"""Training on several sources: findings kept, copies found by their pixels, the parent's splits kept,
the training-only map losses, and the shipped checkpoint's maps still averaging to its logits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medcam.config import Config, load_config
from medcam.models import Classifier
from medcam.models.grid import GridTransform
from medcam.models.networks import build_network
from medcam.training.data import Sample, pixel_duplicates, read_samples
from medcam.training.evaluate import _group_metrics
from medcam.training.train import _box_mask, map_losses, read_populations, split_populations, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = ("NORMAL", "PNEUMONIA")


def _film(path: Path, seed: int, blob: tuple[int, int] | None = None) -> None:
    rng = np.random.default_rng(seed)
    image = rng.normal(90, 25, (96, 96)).clip(0, 255)
    if blob is not None:
        yy, xx = np.mgrid[:96, :96]
        image[(yy - blob[0]) ** 2 + (xx - blob[1]) ** 2 < 120] = 235
    PILImage.fromarray(image.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sources: ``first`` (40 films of 20 patients) and ``second`` with findings and boxes,
    whose film ``s00.jpg`` is a copy of ``first``'s film ``f03.png`` (a JPEG of the same pixels)."""
    root = tmp_path_factory.mktemp("sources")
    first, second, boxes = [], [], []
    for i in range(40):
        label = i % 2
        _film(root / f"f{i:02d}.png", i, (40, 50) if label else None)
        first.append([f"f{i:02d}.png", label, f"a{i // 2}"])
    findings = ["PNEUMONIA", "NORMAL", "OTHER"]
    for i in range(36):
        finding = findings[i % 3]
        blob = (30 + i % 30, 30 + (7 * i) % 30) if finding == "PNEUMONIA" else None
        name = f"s{i:02d}.png" if i else "s00.jpg"
        if i == 0:  # f03 (PNEUMONIA) re-encoded as JPEG, read as a normal film by the second source
            PILImage.open(root / "f03.png").save(root / name, quality=95)
            finding = "NORMAL"
        else:
            _film(root / name, 1000 + i, blob)
        second.append([name, finding, f"b{i}"])
        if finding == "PNEUMONIA" and blob is not None:
            boxes.append([name, blob[1] - 12, blob[0] - 12, 24, 24])
    for name, rows, header in (("first.csv", first, ["file", "label", "patient_id"]),
                               ("second.csv", second, ["file", "label", "patient_id"]),
                               ("boxes.csv", boxes, ["file", "x", "y", "width", "height"])):
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    return root


def _raw(root: Path, **train: object) -> dict[str, object]:
    return {
        "preprocess": {"size": 64},
        "data": {"sources": [{"name": "first", "source": str(root / "first.csv")},
                             {"name": "second", "source": str(root / "second.csv"), "labels": {"OTHER": "NORMAL"},
                              "boxes": str(root / "boxes.csv")}],
                 "dedupe": ["first", "second"], "val_fraction": 0.25, "test_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "samples_per_epoch": 16, **train},
    }


def test_a_finding_mapped_onto_a_class_is_kept(sources: Path) -> None:
    samples = read_samples(sources / "second.csv", CLASSES, "second", {"OTHER": "NORMAL"})
    by_finding = {s.finding: s.label for s in samples}
    assert by_finding == {"PNEUMONIA": 1, "NORMAL": 0, "OTHER": 0}
    with pytest.raises(Exception, match="OTHER"):  # unmapped, OTHER is no class
        read_samples(sources / "second.csv", CLASSES, "second")


def test_copies_are_found_by_their_pixels_and_split_with_their_patient(sources: Path) -> None:
    config = Config.from_dict(_raw(sources))
    lines: list[str] = []
    samples = read_populations(config, log=lines.append)
    assert "1 first films are also second films" in lines[0] and "1 labelled differently" in lines[0]
    paths = {Path(s.path).name: s for s in samples}
    assert "f03.png" not in paths and len(samples) == 40 - 1 + 36
    assert paths["s00.jpg"].patient_id == "a1"  # the copy is the film of f03's patient
    parts = split_populations(samples, config)
    part_of = {s.path: i for i, part in enumerate(parts) for s in part}
    sibling = next(s for s in samples if s.patient_id == "a1" and s.population == "first")
    assert part_of[paths["s00.jpg"].path] == part_of[sibling.path]


def test_two_films_of_one_patient_are_not_copies() -> None:
    nih = SHARED / "cxr-adult" / "images" / "NORMAL"
    films = [nih / "00001568_004.png", nih / "00001568_001.png"]
    rsna_copy = SHARED / "rsna" / "images"
    if not all(f.is_file() for f in films) or not rsna_copy.is_dir():
        pytest.skip(f"the shared NIH and RSNA films are not in {SHARED}")
    first = [Sample(str(films[0]), 0, "nih-1568")]
    second = [Sample(str(films[1]), 0, "nih-1568")]
    assert pixel_duplicates(first, second) == []  # correlate 0.98 at 32 x 32: alike, not the same film
    assert pixel_duplicates(first, first) == [(first[0], first[0])]


def test_real_nih_films_that_are_rsna_films_are_found() -> None:
    if not (SHARED / "rsna" / "labels.csv").is_file():
        pytest.skip(f"the shared RSNA films are not in {SHARED}")
    nih = read_samples(SHARED / "cxr-adult" / "labels.csv", CLASSES, "adult")
    rsna = read_samples(SHARED / "rsna" / "labels.csv", CLASSES, "rsna", {"OTHER": "NORMAL"})
    pairs = pixel_duplicates(nih, rsna)
    assert len(pairs) == 11
    assert Path(pairs[0][0].path).name.endswith(".png") and Path(pairs[0][1].path).name.endswith(".jpg")


def test_a_parent_configs_patients_keep_their_part(sources: Path, tmp_path: Path) -> None:
    import yaml

    parent = tmp_path / "parent.yaml"
    parent.write_text(yaml.safe_dump({"preprocess": {"size": 64},
                                      "data": {"sources": [{"name": "first", "source": str(sources / "first.csv")}],
                                               "val_fraction": 0.25, "test_fraction": 0.25},
                                      "train": {"seed": 7}}))
    parent_config = load_config(parent)
    parent_parts = split_populations(read_populations(parent_config), parent_config)
    raw = _raw(sources)
    raw["data"]["parent"] = str(parent)  # type: ignore[index]
    parts = split_populations(read_populations(Config.from_dict(raw)), Config.from_dict(raw))
    was = {s.patient_id: i for i, part in enumerate(parent_parts) for s in part}
    now = {s.patient_id: i for i, part in enumerate(parts) for s in part}
    assert all(now[p] == i for p, i in was.items())
    assert {s.population for s in parts[2]} == {"first", "second"}


def test_box_mask_lands_on_the_model_grid() -> None:
    transform = GridTransform.fit((512, 512), 288, "stretch")
    mask = _box_mask([(128.0, 256.0, 256.0, 384.0)], transform)
    rows, cols = np.nonzero(mask[0].numpy())
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (72, 144, 144, 216)


def test_map_losses_penalise_evidence_outside_the_lungs_and_the_boxes() -> None:
    lungs = torch.zeros(2, 1, 8, 8)
    lungs[:, :, :, :4] = 1  # left half
    inside = torch.full((2, 4, 4), -1.0)
    inside[:, :, :2] = 3.0
    outside = inside.flip(-1)
    labels = torch.tensor([1, 0])
    assert map_losses(inside, labels, 1, lungs=lungs)["lungs"] == 0
    assert map_losses(outside, labels, 1, lungs=lungs)["lungs"] == pytest.approx(3.0 * 8 / 16)
    boxes = torch.zeros(2, 1, 8, 8)
    boxes[0, :, :2, :2] = 1  # the positive film's box: one cell of the 4 x 4 grid
    flat = torch.zeros(2, 4, 4)
    assert map_losses(flat, labels, 1, boxes=boxes)["boxes"] == pytest.approx(np.log(16))
    peaked = flat.clone()
    peaked[0, 0, 0] = 5.0
    assert map_losses(peaked, labels, 1, boxes=boxes)["boxes"] < 0.2
    assert map_losses(peaked, torch.tensor([0, 0]), 1, boxes=boxes)["boxes"] == 0  # no positive film


def test_a_run_with_map_losses_records_them_and_the_pointing_game(sources: Path, tmp_path: Path) -> None:
    config = Config.from_dict(_raw(sources, lung_loss=0.2, box_loss=0.3))
    train(config, tmp_path, log=lambda _: None)
    history = json.loads((tmp_path / "history.json").read_text())[0]
    assert history["train_lungs_loss"] >= 0 and history["train_boxes_loss"] > 0
    assert 0 <= history["val_pointing_second"] <= 1 and "val_pointing_first" not in history
    with open(tmp_path / "test.csv", newline="") as f:
        findings = {row["finding"] for row in csv.DictReader(f) if row["population"] == "second"}
    assert findings <= {"PNEUMONIA", "NORMAL", "OTHER"} and len(findings) >= 2


def test_shipped_checkpoint_maps_average_to_the_plain_networks_logits() -> None:
    classifier = Classifier()
    plain = build_network(classifier.checkpoint.model).eval()
    plain.load_state_dict(classifier.checkpoint.network.state_dict())
    x = torch.randn(2, 1, classifier.checkpoint.preprocess.size, classifier.checkpoint.preprocess.size)
    with torch.inference_mode():
        logits = plain(x)
        out = classifier.forward(x)
    assert logits.abs().max() > 0.05
    assert (out.maps.flatten(2).mean(-1) - logits).abs().max() < 1e-5
    assert (out.logits - logits).abs().max() < 1e-5


def test_findings_are_reported_against_each_negative_finding() -> None:
    findings = ["PNEUMONIA"] * 4 + ["NORMAL"] * 4 + ["OTHER"] * 4
    samples = [Sample(f"/x/{i}.png", int(f == "PNEUMONIA"), f"p{i}", "rsna", "PA", f) for i, f in enumerate(findings)]
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4, 0.65, 0.75, 0.2, 0.1])
    labels = np.array([s.label for s in samples])
    groups = _group_metrics(samples, probs, labels, np.array([s.patient_id for s in samples]), 0.5)
    assert groups["rsna: PNEUMONIA vs NORMAL"]["auroc"] == 1.0
    assert groups["rsna: PNEUMONIA vs OTHER"]["auroc"] == pytest.approx(13 / 16)  # pairs ranked right
    assert groups["rsna: OTHER"]["flagged"] == 0.5 and groups["rsna: NORMAL"]["flagged"] == 0.0
    assert groups["rsna"]["n"] == 12
