"""Reduced-resolution decoding in the pipeline: the exactness budget on real radiographs, and full
pixels only for the images that get files."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.models import normalise_maps
from medcam.models.cam import CAMOutput
from medcam.models.preprocess import prepare
from medcam.scoring import ScoreOptions, read_results, score

REPO = Path(__file__).resolve().parents[1]
SHARED_RSNA = REPO.parent / "shared" / "data" / "cxr" / "rsna" / "dicom"
CORPUS = ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm",
          "RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"]
PROBABILITY_BUDGET = 0.01  # issue 16; where a reduction cannot hold it, medcam.io.reduce does not use it
MAP_TOLERANCE = 0.15  # max |difference| of the normalised positive-class map on the full grid


def _radiographs() -> list[Path]:
    files = [Path(str(f)) for f in (get_testdata_file(n, download=False) for n in CORPUS) if f]
    files += sorted((REPO / "tests" / "data" / "rg1" / "dicom").glob("*.dcm"))
    files += sorted(SHARED_RSNA.glob("*.dcm")) if SHARED_RSNA.is_dir() else []
    return files


@pytest.fixture(scope="module")
def bundled() -> ServedModel:
    return ServedModel("bundled")


@pytest.mark.parametrize("path", _radiographs(), ids=lambda p: p.name)
def test_reduced_decode_keeps_the_probability_flag_and_map(bundled: ServedModel, path: Path) -> None:
    preprocess = bundled.checkpoint.preprocess
    full = load_image(path)
    reduced = load_image(path, min_size=preprocess.size)
    (x_full, t_full), (x_reduced, t_reduced) = prepare(full, preprocess), prepare(reduced, preprocess)
    output = bundled.forward(torch.stack([x_full, x_reduced]))
    p_full, p_reduced = bundled.probabilities(output.logits, output.features)[:, 1].tolist()
    assert abs(p_full - p_reduced) <= PROBABILITY_BUDGET, (path.name, reduced.reduction, p_full, p_reduced)
    threshold = bundled.checkpoint.threshold
    assert (p_full >= threshold) == (p_reduced >= threshold)
    transforms = [t_full, t_reduced.from_full_resolution(full.shape, reduced.reduction)]
    maps = [bundled.predictions([full], [t], CAMOutput(output.logits[i:i + 1], output.maps[i:i + 1],
                                                       output.features[i:i + 1]))[0].maps
            for i, t in enumerate(transforms)]
    assert maps[0].shape == maps[1].shape == (2, *full.shape)
    heat = normalise_maps(torch.stack(maps))[:, 1]
    assert float((heat[0] - heat[1]).abs().max()) <= MAP_TOLERANCE, path.name


def test_scoring_decodes_reduced_and_reads_flagged_images_in_full_for_their_files(
        bundled: ServedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("RG1_J2KR.dcm", "RG3_J2KR.dcm"):
        source = get_testdata_file(name, download=False)
        if source is None:
            pytest.skip(f"pydicom-data's {name} is not installed")
        shutil.copy(str(source), folder / name)
    ckpt = bundled.checkpoint
    flag_all = ServedModel(dataclasses.replace(ckpt, threshold=0.0))
    rows = {}
    for reduce in (True, False):
        out = tmp_path / f"reduce-{reduce}.csv"
        score([folder], flag_all, ScoreOptions(out=out, regions=tmp_path / f"regions-{reduce}",
                                               region_formats=("nifti", "png"), workers=0, progress=False,
                                               reduce=reduce, ignore_intended_use=True))  # RG3 is an extremity
        rows[reduce] = {Path(r["path"]).name: r for r in read_results(out)}
    for name, row in rows[True].items():
        assert row["status"] == "ok" and row["flagged"] == "true"
        full_row = rows[False][name]
        assert abs(float(row["prob_PNEUMONIA"]) - float(full_row["prob_PNEUMONIA"])) <= PROBABILITY_BUDGET
        masks = [np.asarray(PILImage.open(next(f for f in r["exports"].split(";") if f.endswith("_mask.png"))))
                 for r in (row, full_row)]
        assert masks[0].shape == masks[1].shape == load_image(folder / name).shape  # the full source grid
