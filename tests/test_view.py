"""The frontal-view check: its measures, its statistics, when it runs, and what it refuses on real films."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import Dataset

from medcam.errors import CheckpointError
from medcam.gate import ServedModel, ViewCheck, named_view, view_measures
from medcam.gate.verdict import image_gate
from medcam.gate.view import MEASURES, FrontalPopulation
from medcam.io import load_image
from medcam.models.preprocess import prepare
from medcam.training.lung_gate import frontal_splits

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LATERALS = SHARED / "views" / "lateral"
REPO = Path(__file__).resolve().parents[1]


def _fields(*boxes: tuple[int, int, int, int]) -> torch.Tensor:
    lungs = torch.zeros(1, 1, 100, 100)
    for top, bottom, left, right in boxes:
        lungs[..., top:bottom, left:right] = 0.9
    return lungs


def test_two_mirrored_fields_and_one_central_field_measure_as_expected() -> None:
    flat = torch.zeros(1, 1, 64, 64)
    frontal = view_measures(_fields((20, 80, 15, 40), (20, 80, 60, 85)), flat)[0]
    lateral = view_measures(_fields((20, 80, 30, 75)), flat)[0]
    m = dict(zip(MEASURES, frontal, strict=True))
    assert m["area"] == pytest.approx(0.30) and m["balance"] == pytest.approx(1.0)
    assert m["centre"] == 0.0 and m["mask_symmetry"] == pytest.approx(1.0)
    n = dict(zip(MEASURES, lateral, strict=True))
    assert n["balance"] == 0.0 and n["centre"] == pytest.approx(0.6) and n["mask_symmetry"] < 0.85


def test_two_lungs_joined_by_a_bridge_are_cut_at_the_mediastinum_and_one_field_is_not() -> None:
    flat = torch.zeros(1, 1, 64, 64)
    joined = _fields((20, 80, 15, 40), (20, 80, 55, 85), (20, 30, 40, 55))  # an inverted V: a bridge on top
    balance = MEASURES.index("balance")
    cut = 25 * 60 / (15 * 10 + 30 * 60)  # at the bridge's first column: the left lung against the bridge and right
    assert view_measures(joined, flat)[0, balance] == pytest.approx(cut)
    assert view_measures(joined, flat, split_joined=False)[0, balance] == 0.0  # one field, as fitted before
    one = _fields((20, 80, 30, 75))  # a lateral's single field: no valley between two humps
    hump = _fields((20, 80, 30, 75), (10, 20, 45, 60))  # nor when the middle is the tallest part
    assert view_measures(torch.cat([one, hump]), torch.cat([flat, flat]))[:, balance].tolist() == [0.0, 0.0]


def test_image_symmetry_is_one_for_a_mirror_image_and_low_for_a_gradient() -> None:
    x = torch.linspace(0, 1, 64)
    symmetric = (1 - (x - 0.5).abs())[None, :].expand(64, 64)[None, None]
    ramp = x[None, :].expand(64, 64)[None, None]
    lungs = _fields((20, 80, 15, 40), (20, 80, 60, 85))
    assert view_measures(lungs, symmetric)[0, -1] == pytest.approx(1.0, abs=1e-4)
    assert view_measures(lungs, ramp)[0, -1] < 0.5


def test_the_check_refuses_only_what_is_far_from_every_population() -> None:
    near = FrontalPopulation("a", np.zeros(5), np.eye(5), 2.0, 10)
    far = FrontalPopulation("b", np.full(5, 10.0), np.eye(5), 2.0, 10)
    check = ViewCheck((near, far), segmenter="lungunet-x")
    scores, nearest = check.scores(np.array([[0.5] * 5, [10.0] * 5, [5.0] * 5]))
    assert [p.name for p in nearest[:2]] == ["a", "b"] and (scores[:2] < 1).all() and scores[2] > 1
    again = ViewCheck.from_metadata(check.to_metadata(), "here")
    assert [p.name for p in again.populations] == ["a", "b"] and again.segmenter == "lungunet-x"
    assert again.split_joined and check.to_metadata()["version"] == 3
    before = {**check.to_metadata(), "version": 2}  # fitted before joined fields were cut: measured as then
    assert not ViewCheck.from_metadata(before, "here").split_joined
    with pytest.raises(CheckpointError, match="version 1"):
        ViewCheck.from_metadata({**before, "version": 1}, "here")
    broken = check.to_metadata() | {"measures": ["area"]}
    with pytest.raises(CheckpointError, match="refit it with medcam fit-lung-gate"):
        ViewCheck.from_metadata(broken, "here")


@pytest.mark.parametrize(("position", "code", "expected"), [
    ("PA", None, "PA"), ("AP", None, "AP"), ("LL", None, "lateral"), ("AP LLD", None, "decubitus"),
    ("", None, None), ("XYZ", None, None), (None, "lateral", "lateral"), ("", "postero-anterior", "PA"),
])
def test_named_view_reads_view_position_and_the_view_code_sequence(
        position: str | None, code: str | None, expected: str | None) -> None:
    ds = Dataset()
    if position is not None:
        ds.ViewPosition = position
    if code is not None:
        item = Dataset()
        item.CodeMeaning = code
        ds.ViewCodeSequence = [item]
    assert named_view(ds) == expected


@pytest.fixture(scope="module")
def served() -> ServedModel:
    model = ServedModel("bundled")
    if model.view_check is None:
        pytest.skip("the bundled checkpoint has no frontal-view check")
    return model


def _batch(served: ServedModel, paths: list[Path]) -> torch.Tensor:
    return torch.stack([prepare(load_image(p), served.checkpoint.preprocess)[0] for p in paths])


@pytest.mark.slow
def test_lateral_films_are_refused_unless_their_tags_name_a_frontal_view(served: ServedModel) -> None:
    if not LATERALS.is_dir():
        pytest.skip(f"{LATERALS} is absent (../shared is not checked out here)")
    batch = _batch(served, sorted(LATERALS.iterdir()))
    output = served.forward(batch)
    refused = [v for v in image_gate(served, output, batch, enforce=True) if v.refusal]
    assert len(refused) >= 18, len(refused)  # 19 of 24 when measured (benchmarks/bench_view.py)
    assert all("not a frontal chest film" in v.refusal or "does not resemble" in v.refusal for v in refused)
    tagged = image_gate(served, output, batch, enforce=True, view_named=[True] * len(batch))
    assert sum("not a frontal chest film" in v.refusal for v in tagged) == 0  # the tags have spoken
    noted = image_gate(served, output, batch, enforce=False)
    assert not any(v.refusal for v in noted) and sum("not a frontal" in v.note for v in noted) >= 17


@pytest.mark.slow
def test_frontal_test_films_of_every_population_pass_the_view_check(served: ServedModel, tmp_path: Path) -> None:
    if not (SHARED / "rsna" / "labels.csv").is_file():
        pytest.skip(f"{SHARED} is absent (../shared is not checked out here)")
    _, test = frontal_splits(REPO / "configs" / "pneumonia_three_sources.yaml", REPO / "configs" / "lungs.yaml",
                             SHARED / "rsna" / "labels.csv", tmp_path)
    with open(test, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["population"] for r in rows} == {"pediatric", "adult", "rsna", "lungs"}
    for population in sorted({r["population"] for r in rows}):
        paths = [Path(r["file"]) for r in rows if r["population"] == population][:48]
        batch = _batch(served, paths)
        reasons = served.view_reasons(served.forward(batch), batch)
        assert sum(bool(r) for r in reasons) <= 1, (population, [r for r in reasons if r])
