"""medcam.gate: intended use in the checkpoint, the DICOM tag gate, the out-of-distribution score.

The tag gate runs on every non-radiograph of pydicom's and pydicom-data's test corpora, on
pydicom-data's chest (RG1) and extremity (RG3) radiographs and on the RSNA Pneumonia Challenge's
Secondary Captures of chest radiographs in ../shared; the image gate on the bundled model with
pediatric chest films of ../shared and PNGs made from pydicom's CT and MR slices.
"""

from __future__ import annotations

import copy
import random
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage
from pydicom import Dataset
from pydicom.data import get_testdata_files
from pydicom.sequence import Sequence as DicomSequence

from medcam.errors import CheckpointError, ConfigError
from medcam.gate import (
    IntendedUse,
    OODStats,
    ServedModel,
    check_tags,
    collect_features,
    fit_ood,
    read_intended_use,
    read_ood,
    tag_findings,
    update_checkpoint,
    write_intended_use,
    write_ood,
)
from medcam.gate.tags import SECONDARY_CAPTURE_SOP_CLASSES, SINGLE_FRAME_CAPTURE, tag_notes
from medcam.io import read_dicom
from medcam.models import load_checkpoint
from medcam.training.data import read_samples, split_by_patient
from tests.conftest import SHARED
from tests.conftest import testdata_path as _testdata

ADULT = IntendedUse(min_age=18, max_age=90)
RG1 = ("RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm")
RG3 = ("RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm")
NON_RADIOGRAPH_MODALITIES = {"CT", "MR", "US", "NM", "OT", "PT"}
NOT_A_CAPTURE_OF_A_RADIOGRAPH = "secondary capture that is not a plain capture of a radiograph: "
# RG1's header as a Secondary Capture of it (without RG1's own Image Type, DERIVED\PRIMARY)
CAPTURE: dict[str, object] = {"SOPClassUID": SINGLE_FRAME_CAPTURE, "ImageType": None}


def _header(name: str) -> Dataset:
    return pydicom.dcmread(_testdata(name), stop_before_pixels=True)


@pytest.fixture(scope="module")
def rg1_header() -> Dataset:
    return _header("RG1_UNCR.dcm")


# --- IntendedUse ----------------------------------------------------------------------------


def test_intended_use_round_trips_through_plain_data() -> None:
    use = IntendedUse(modalities=("dx",), views=["PA"], min_age=1, max_age=5.5, min_size=200,  # type: ignore[arg-type]
                      allow_secondary_capture=True)
    assert use.modalities == ("DX",) and use.views == ("PA",)
    data = use.to_dict()
    assert data["modalities"] == ["DX"] and data["max_age"] == 5.5
    assert all(isinstance(v, list | str | int | float | bool | type(None)) for v in data.values())
    assert IntendedUse.from_dict(data) == use
    assert IntendedUse.from_dict({}) == IntendedUse()
    assert IntendedUse().age_range == "any" and use.age_range == "1-5.5"
    assert IntendedUse(min_age=18).age_range == "at least 18"


def test_intended_use_refuses_bad_values_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) min_years"):
        IntendedUse.from_dict({"min_years": 3})
    with pytest.raises(ConfigError, match=r"min_age \(20\) is above max_age \(5\)"):
        IntendedUse.from_dict({"min_age": 20, "max_age": 5})
    with pytest.raises(TypeError, match="modalities must be a sequence of strings, got 'CR'"):
        IntendedUse(modalities="CR")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_size must be at least 1 pixel, got 0"):
        IntendedUse(min_size=0)


def test_intended_use_is_written_into_the_checkpoint_and_the_rest_kept(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    before = load_checkpoint(tiny_checkpoint)
    assert read_intended_use(before) == IntendedUse()  # none stored: the defaults
    out = tmp_path / "with-use.pt"
    model_id = write_intended_use(tiny_checkpoint, ADULT, out=out)
    after = load_checkpoint(out)
    assert read_intended_use(after) == ADULT
    assert model_id == after.model_id != before.model_id
    assert torch.load(out, weights_only=True)["metadata"]["intended_use"]["min_age"] == 18
    kept = {k: v for k, v in after.metadata.items() if k != "intended_use"}
    assert kept == before.metadata
    assert all(torch.equal(a, b) for a, b in zip(before.network.state_dict().values(),
                                                   after.network.state_dict().values(), strict=True))
    with pytest.raises(CheckpointError, match="does not change threshold"):
        update_checkpoint(out, {"threshold": 0.1})
    with pytest.raises(CheckpointError, match="does not change class_bias"):
        update_checkpoint(out, {"class_bias": [0.0, 1.0]})
    with pytest.raises(CheckpointError, match="give out="):
        write_intended_use("bundled", ADULT)


def test_bundled_weights_stay_float16_when_metadata_is_added(tmp_path: Path) -> None:
    out = tmp_path / "bundled-adult.pt"
    write_intended_use("bundled", ADULT, out=out)
    state = torch.load(out, weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert read_intended_use(load_checkpoint(out)) == ADULT
    bundled = load_checkpoint("bundled")
    assert (load_checkpoint(out).calibration, load_checkpoint(out).threshold) == (bundled.calibration,
                                                                                  bundled.threshold)


def test_malformed_intended_use_in_a_checkpoint_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad.pt"
    update_checkpoint(tiny_checkpoint, {"intended_use": {"max_age": "five"}}, out=out)
    with pytest.raises(CheckpointError, match="max_age must be a number of years"):
        read_intended_use(load_checkpoint(out))


# --- The tag gate on real files -------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_headers() -> list[tuple[str, Dataset]]:
    """``(name, header)`` of every file of the corpora that pydicom parses."""
    headers: list[tuple[str, Dataset]] = []
    for path in get_testdata_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # the corpus holds deliberately broken files; they have no header to judge
            continue
        headers.append((Path(path).name, ds))
    return headers


def test_every_non_radiograph_image_of_the_test_corpora_is_refused(
    corpus_headers: list[tuple[str, Dataset]]
) -> None:
    picked = [(name, ds) for name, ds in corpus_headers
              if str(ds.get("Modality", "")) in NON_RADIOGRAPH_MODALITIES
              or str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_SOP_CLASSES]
    modalities = {str(ds.get("Modality", "")) for _, ds in picked}
    assert len(picked) >= 150 and {"CT", "MR", "US", "NM", "OT"} <= modalities, "corpus not installed?"
    passed = [name for name, ds in picked if check_tags(ds, IntendedUse()) is None]
    assert passed == []
    for name, ds in picked:
        reason = check_tags(ds, IntendedUse())
        modality = str(ds.get("Modality", ""))
        capture = str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_SOP_CLASSES
        expected = NOT_A_CAPTURE_OF_A_RADIOGRAPH if capture and modality in ("", "OT") else f"modality {modality}"
        assert reason is not None and reason.startswith(expected), (name, reason)
        assert "this model reads" in reason
        assert tag_notes(ds, IntendedUse()) == []


def test_secondary_capture_without_modality_is_refused(corpus_headers: list[tuple[str, Dataset]]) -> None:
    """The one tag whose absence refuses: a capture's Modality is its only claim to show a radiograph."""
    headers = [ds for _, ds in corpus_headers
               if "Modality" not in ds and str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE_SOP_CLASSES]
    assert headers, "pydicom's corpus has Secondary Capture files without Modality"
    for ds in headers:
        reason = check_tags(ds, IntendedUse())
        assert reason is not None and reason.startswith(f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}no Modality"), reason
        assert reason.endswith("; this model reads chest radiographs (CR, DX) and greyscale captures of them "
                               "(ConversionType WSD, DF, DI or none) only")


def test_every_rsna_secondary_capture_is_read_as_the_radiograph_it_holds(rsna_dicoms: list[Path]) -> None:
    """The RSNA Pneumonia Challenge's chest films: Secondary Captures (Modality CR, ConversionType
    WSD), passed by the default rule and by the bundled checkpoint's intended use, which predates
    the rule (``allow_secondary_capture: false``)."""
    bundled_use = read_intended_use(load_checkpoint("bundled"))
    assert load_checkpoint("bundled").metadata["intended_use"]["allow_secondary_capture"] is False
    assert len(rsna_dicoms) >= 4
    for path in rsna_dicoms:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.SOPClassUID, ds.Modality, ds.ConversionType) == (SINGLE_FRAME_CAPTURE, "CR", "WSD")
        for use in (IntendedUse(), bundled_use, IntendedUse(allow_secondary_capture=True)):
            assert tag_findings(ds, use) == [], path.name
            assert tag_notes(ds, use) == ["secondary capture of a radiograph (ConversionType WSD)"]


@pytest.mark.parametrize("name", RG3)
def test_rg3_extremity_radiograph_is_refused(name: str) -> None:
    ds = _header(name)
    assert (ds.Modality, ds.BodyPartExamined) == ("CR", "EXTREMITY")
    assert check_tags(ds, IntendedUse()) == (
        "body part EXTREMITY (BodyPartExamined); this model reads chest films only")


@pytest.mark.parametrize("name", RG1)
def test_rg1_chest_pa_passes_in_every_encoding(name: str) -> None:
    ds = _header(name)
    assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition) == ("CR", "CHEST", "PA")
    assert check_tags(ds, IntendedUse()) is None
    assert check_tags(ds, ADULT) is None  # born 1940, studied 2004: 64
    assert check_tags(ds, IntendedUse(min_age=1, max_age=5)) == (
        "patient age 64 years (from PatientBirthDate and StudyDate) is outside the model's "
        "range of 1-5 years")


def test_dicomdir_cervical_spine_lateral_gives_every_finding() -> None:
    ds = pydicom.dcmread(next(p for p in get_testdata_files() if Path(p).name == "6154"),
                         stop_before_pixels=True)
    assert check_tags(ds, IntendedUse()) == (
        "body part CSPINE (BodyPartExamined); this model reads chest films only")
    findings = tag_findings(ds, ADULT)
    assert findings[1:] == [
        "lateral view (ViewPosition LL); this model reads frontal chest films (PA, AP) only",
        "image 16x16 is smaller than 256 pixels on a side; this model needs the detail of a "
        "full-size radiograph"]


def _variant(ds: Dataset, **tags: object) -> Dataset:
    out = copy.deepcopy(ds)
    for keyword, value in tags.items():
        if value is None:
            delattr(out, keyword)
        else:
            setattr(out, keyword, value)
    return out


@pytest.mark.parametrize(("tags", "use", "reason"), [
    ({"ViewPosition": "LL"}, IntendedUse(),
     "lateral view (ViewPosition LL); this model reads frontal chest films (PA, AP) only"),
    ({"ViewPosition": "RLD"}, IntendedUse(), "decubitus view (ViewPosition RLD)"),
    ({"ViewPosition": "AP"}, IntendedUse(views=("PA",)),
     "AP view (ViewPosition AP); this model reads chest films (PA) only"),
    ({"PatientAge": "004Y"}, ADULT,
     "patient age 4 years (PatientAge 004Y) is outside the model's range of 18-90 years"),
    ({"PatientAge": "006M"}, IntendedUse(min_age=1, max_age=5), "patient age 6 months"),
    ({"PatientAge": "091Y"}, ADULT, "patient age 91 years"),
    ({"Modality": "MR"}, IntendedUse(),
     "modality MR (magnetic resonance); this model reads chest radiographs (CR, DX) only"),
    ({"Modality": "CR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, IntendedUse(),
     "CT Image Storage object, not a projection radiograph"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2"}, IntendedUse(),
     "Digital Mammography X-Ray Image Storage - For Presentation object"),
    ({"Rows": 120, "Columns": 120}, IntendedUse(), "image 120x120 is smaller than 256 pixels"),
    ({"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3}, IntendedUse(),
     "colour image (PhotometricInterpretation RGB); this model reads greyscale radiographs only"),
    ({**CAPTURE, "Modality": "OT"}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}Modality OT (other: a screenshot, document or photograph); this model reads "
     "chest radiographs (CR, DX) and greyscale captures of them (ConversionType WSD, DF, DI or none) only"),
    ({**CAPTURE, "Modality": None}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}no Modality;"),
    ({**CAPTURE, "BurnedInAnnotation": "YES"}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}BurnedInAnnotation YES (text or marks in the pixels);"),
    ({**CAPTURE, "ImageType": ["DERIVED", "SECONDARY"]}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}ImageType DERIVED\\SECONDARY (processed or composed);"),
    ({**CAPTURE, "ConversionType": "SI"}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}ConversionType SI (scanned image);"),
    ({**CAPTURE, "ConversionType": "SYN"}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}ConversionType SYN (synthetic image);"),
    ({**CAPTURE, "ConversionType": "XYZ"}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}ConversionType XYZ;"),
    ({**CAPTURE, "PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
     IntendedUse(), f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}colour (PhotometricInterpretation RGB);"),
    ({**CAPTURE, "PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
     IntendedUse(greyscale_only=False), f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}colour (PhotometricInterpretation RGB);"),
    ({**CAPTURE, "PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
     IntendedUse(allow_secondary_capture=True), "colour image (PhotometricInterpretation RGB)"),
    ({**CAPTURE, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.3"}, IntendedUse(),
     f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}Multi-frame Grayscale Word Secondary Capture Image Storage, a multi-frame "
     "or bitonal class;"),
    ({**CAPTURE, "Modality": "CT"}, IntendedUse(allow_secondary_capture=True),
     "modality CT (computed tomography); this model reads chest radiographs (CR, DX) only"),
    ({"Manufacturer": "medcam"}, IntendedUse(allow_secondary_capture=True),
     "medcam's own output (Manufacturer medcam), not a radiograph; score the original image instead"),
])
def test_contradicting_tags_are_refused_with_the_right_words(
    rg1_header: Dataset, tags: dict[str, object], use: IntendedUse, reason: str
) -> None:
    found = check_tags(_variant(rg1_header, **tags), use)
    assert found is not None and found.startswith(reason), found


@pytest.mark.parametrize(("tags", "use"), [
    ({"PatientAge": "045Y"}, ADULT),  # PatientAge wins over the birth date
    ({"BodyPartExamined": " Thorax "}, IntendedUse()),
    ({"BodyPartExamined": "chest_pa"}, IntendedUse()),
    ({"ViewPosition": "AP ERECT"}, IntendedUse()),
    ({"ViewPosition": "ERECT"}, IntendedUse()),  # a term we do not know contradicts nothing
    ({"DerivationDescription": "x"}, IntendedUse(min_age=60, max_age=70)),
    ({**CAPTURE, "Modality": "OT"},
     IntendedUse(allow_secondary_capture=True)),
    (CAPTURE, IntendedUse()),  # a capture of RG1, a chest CR
    ({**CAPTURE, "Modality": "DX", "ConversionType": "DF",
      "ImageType": ["ORIGINAL", "SECONDARY"], "BurnedInAnnotation": "NO"}, IntendedUse()),
    ({**CAPTURE, "ConversionType": "DI", "BodyPartExamined": None,
      "ViewPosition": None}, IntendedUse()),
    ({**CAPTURE, "Modality": None, "ConversionType": "SI",
      "ImageType": ["DERIVED", "SECONDARY"], "BurnedInAnnotation": "YES"}, IntendedUse(allow_secondary_capture=True)),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.2"}, IntendedUse(allow_secondary_capture=True)),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1"}, IntendedUse()),
    ({"ImageLaterality": "L"}, IntendedUse()),
])
def test_compatible_tags_pass(rg1_header: Dataset, tags: dict[str, object], use: IntendedUse) -> None:
    assert check_tags(_variant(rg1_header, **tags), use) is None


def test_absent_or_empty_tags_never_refuse(rg1_header: Dataset) -> None:
    strict = IntendedUse(min_age=70, max_age=90, views=("AP",))
    assert check_tags(rg1_header, strict) is not None
    checked = ("Modality", "SOPClassUID", "BodyPartExamined", "ViewPosition", "PatientAge",
               "PatientBirthDate", "StudyDate", "Rows", "Columns", "PhotometricInterpretation")
    stripped = _variant(rg1_header, **{k: None for k in checked if k in rg1_header})
    assert check_tags(stripped, strict) is None
    empty = _variant(rg1_header, **{k: "" for k in ("Modality", "BodyPartExamined", "ViewPosition",
                                                     "PatientAge", "PatientBirthDate")})
    assert check_tags(empty, strict) is None
    assert check_tags(Dataset(), strict) is None


def _view_code(value: str, meaning: str) -> DicomSequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return DicomSequence([item])


def test_view_code_sequence_lateral_is_refused(rg1_header: Dataset) -> None:
    lateral = _variant(rg1_header, ViewPosition=None, ViewCodeSequence=_view_code("399067008", "lateral"))
    assert check_tags(lateral, IntendedUse()) == (
        "lateral view (ViewCodeSequence: lateral); this model reads frontal chest films (PA, AP) only")
    frontal = _variant(rg1_header, ViewCodeSequence=_view_code("399348003", "antero-posterior"))
    assert check_tags(frontal, IntendedUse()) is None
    assert check_tags(frontal, IntendedUse(views=("PA",))) is not None


def test_notes_say_what_kind_of_secondary_capture_was_analysed(rg1_header: Dataset) -> None:
    capture = _variant(rg1_header, **CAPTURE)
    assert tag_notes(capture, IntendedUse()) == ["secondary capture of a radiograph (no ConversionType)"]
    lateral = _variant(capture, ConversionType="DF", ViewPosition="LL")  # refused, but still a capture of one
    assert check_tags(lateral, IntendedUse()) is not None
    assert tag_notes(lateral, IntendedUse()) == ["secondary capture of a radiograph (ConversionType DF)"]
    scan = _variant(capture, ConversionType="SI", BurnedInAnnotation="YES")
    assert tag_notes(scan, IntendedUse()) == []  # refused: the refusal says why
    assert tag_notes(scan, IntendedUse(allow_secondary_capture=True)) == [
        "secondary capture that is not a plain capture of a radiograph, analysed because the intended use allows "
        "secondary captures (research): ConversionType SI (scanned image), BurnedInAnnotation YES (text or marks "
        "in the pixels)"]
    for other in (rg1_header, _variant(capture, Modality="CT"), _variant(capture, Manufacturer="medcam")):
        assert tag_notes(other, IntendedUse(allow_secondary_capture=True)) == []


def test_burned_in_annotation_and_derived_refuse_captures_only(rg1_header: Dataset) -> None:
    """On an original CR they are left alone (markers, processing); on a capture they say it is not plain."""
    marked = {"BurnedInAnnotation": "YES", "ImageType": ["DERIVED", "PRIMARY"]}
    assert check_tags(_variant(rg1_header, **marked), IntendedUse()) is None
    assert check_tags(_variant(rg1_header, SOPClassUID=SINGLE_FRAME_CAPTURE, **marked), IntendedUse()) == (
        f"{NOT_A_CAPTURE_OF_A_RADIOGRAPH}ImageType DERIVED\\PRIMARY (processed or composed), BurnedInAnnotation YES "
        "(text or marks in the pixels); this model reads chest radiographs (CR, DX) and greyscale captures of them "
        "(ConversionType WSD, DF, DI or none) only")


def test_medcams_own_results_are_refused_first_whatever_the_intended_use(
        rg1_header: Dataset, own_results: dict[str, Path]) -> None:
    own_sc = pydicom.dcmread(own_results["sc"], stop_before_pixels=True)
    assert (own_sc.SOPClassUID, own_sc.PhotometricInterpretation, own_sc.BurnedInAnnotation) == (
        SINGLE_FRAME_CAPTURE, "RGB", "YES")
    contributed = Dataset()
    contributed.Manufacturer = "medcam"
    relabelled = _variant(rg1_header, ContributingEquipmentSequence=DicomSequence([contributed]))
    for ds, evidence in ((own_sc, "Manufacturer medcam"), (relabelled, "ContributingEquipmentSequence names medcam")):
        for use in (IntendedUse(), IntendedUse(allow_secondary_capture=True, greyscale_only=False)):
            findings = tag_findings(ds, use)
            assert findings[0] == (f"medcam's own output ({evidence}), not a radiograph; score the original "
                                   "image instead")
    assert tag_findings(own_sc, IntendedUse())[1].startswith(NOT_A_CAPTURE_OF_A_RADIOGRAPH)


# --- The image gate: fitting and scoring ----------------------------------------------------


def _gaussian_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centres = torch.tensor([[4.0] * 8, [-4.0] * 8])
    return centres[labels] + torch.randn(n, 8, generator=generator), labels


def test_fit_ood_is_the_mahalanobis_distance_to_the_nearest_class_mean() -> None:
    x, y = _gaussian_classes(400, 0)
    val, _ = _gaussian_classes(200, 1)
    stats = fit_ood(x, y, val, quantile=0.9)
    torch.testing.assert_close(stats.means, torch.stack([x[y == 0].mean(0), x[y == 1].mean(0)]))
    assert (stats.n_train, stats.n_val) == (400, 200)
    # The within-class covariance is the identity, the very target Ledoit-Wolf shrinks towards.
    assert stats.shrinkage > 0.5
    torch.testing.assert_close(stats.precision, torch.eye(8), atol=0.15, rtol=0)
    probe = torch.tensor([[4.0] * 8, [-4.0] * 8, [0.0] * 8, [30.0] * 8])
    scores = stats.score(probe)
    precision = stats.precision.double()
    expected = torch.tensor([min(float((p - m).double() @ precision @ (p - m).double()) for m in stats.means)
                             for p in probe], dtype=torch.float64).sqrt()
    torch.testing.assert_close(scores.double(), expected, atol=1e-3, rtol=1e-4)
    assert scores[0] < 1.5 and scores[1] < 1.5 and scores[3] > 20  # unit variance: distance ~ sigmas
    assert abs(float((stats.score(val) > stats.threshold).float().mean()) - 0.1) < 0.011
    assert stats.refuses(probe).tolist() == [False, False, True, True]
    assert stats.reason(40.0).endswith(f"(out-of-distribution score 40.0 > {stats.threshold:.1f})")


def test_fit_ood_refuses_bad_arguments_by_name() -> None:
    x, y = _gaussian_classes(20, 0)
    with pytest.raises(ValueError, match=r"labels_train \(N,\), got \(20, 8\) and \(19,\)"):
        fit_ood(x, y[:19], x)
    with pytest.raises(ValueError, match=r"features_val must be \(M, 8\)"):
        fit_ood(x, y, x[:, :4])
    with pytest.raises(ValueError, match=r"at least two training images; counts per class: \[19, 1\]"):
        fit_ood(x, torch.tensor([0] * 19 + [1]), x)
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\], got 1.5"):
        fit_ood(x, y, x, quantile=1.5)
    with pytest.raises(ValueError, match=r"features must have shape \(B, 8\), got \(3, 7\)"):
        fit_ood(x, y, x).score(torch.zeros(3, 7))


# --- The image gate on the bundled model and real images ------------------------------------

LABELS_CSV = SHARED / "data" / "cxr" / "labels.csv"


@pytest.fixture(scope="module")
def bundled() -> ServedModel:
    return ServedModel("bundled")


@pytest.fixture(scope="module")
def pediatric_features(bundled: ServedModel) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Features of the bundled model's own patient split of ../shared (seed 0, 70/15/15):
    200 training images to fit, 50 validation images for the threshold, 100 test images held out."""
    if not LABELS_CSV.is_file():
        pytest.skip(f"{LABELS_CSV} is absent (../shared is not checked out here)")
    samples = read_samples(LABELS_CSV, bundled.classes)
    parts = dict(zip(("train", "val", "test"), split_by_patient(samples, [0.7, 0.15, 0.15], 0), strict=True))
    rng = random.Random(0)
    out = {}
    for name, n in (("train", 200), ("val", 50), ("test", 100)):
        picked = rng.sample(parts[name], n)
        found = collect_features(bundled, [s.path for s in picked], batch_size=25)
        assert found.failures == ()
        out[name] = (found.features, torch.tensor([picked[i].label for i in found.kept]))
    patients = {name: {s.patient_id for s in part} for name, part in parts.items()}
    assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
    return out


@pytest.fixture(scope="module")
def slice_pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """pydicom's CT and MR slices (64 px or more; one per distinct image) as 8-bit PNGs: no tags."""
    folder = tmp_path_factory.mktemp("slices")
    seen: set[bytes] = set()
    pngs = []
    for path in get_testdata_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                if str(ds.get("Modality", "")) not in ("CT", "MR") or min(ds.get("Rows", 0), ds.get("Columns", 0)) < 64:
                    continue
                image = read_dicom(path)
        except Exception:  # multi-frame and undecodable files are the reader's business, not this test's
            continue
        pixels = (image.pixels[0] * 255).round().astype(np.uint8)
        if pixels.tobytes() in seen:
            continue
        seen.add(pixels.tobytes())
        pngs.append(folder / f"{ds.Modality}_{Path(path).stem}.png")
        PILImage.fromarray(pixels).save(pngs[-1])
    return pngs


def test_ct_and_mr_slices_score_above_the_threshold_and_held_out_children_below(
    bundled: ServedModel, pediatric_features: dict[str, tuple[torch.Tensor, torch.Tensor]],
    slice_pngs: list[Path], tmp_path: Path
) -> None:
    train, labels = pediatric_features["train"]
    stats = fit_ood(train, labels, pediatric_features["val"][0])
    assert stats.means.shape == (2, 1024) and stats.precision.dtype == torch.float32
    held_out = stats.score(pediatric_features["test"][0])
    assert float((held_out <= stats.threshold).float().mean()) >= 0.95  # fitted on 200 images only
    shipped = bundled.ood  # the statistics the bundled model ships, fitted on its whole training split
    assert shipped is not None
    assert float((shipped.score(pediatric_features["test"][0]) <= shipped.threshold).float().mean()) >= 0.99

    assert len(slice_pngs) >= 6 and {p.name[:2] for p in slice_pngs} == {"CT", "MR"}
    slices = collect_features(bundled, slice_pngs, batch_size=25)
    assert slices.failures == ()
    slice_scores = stats.score(slices.features)
    below = [p.name for p, s in zip(slice_pngs, slice_scores.tolist(), strict=True) if s <= stats.threshold]
    assert below == []
    assert float(slice_scores.min()) > float(held_out.median()) * 1.5
    # the three-source model's statistics (a mean per population and class, and one for the lung-mask
    # films) let one of the 11 tag-less slices through (55.6 against a threshold of 57.1; the two-source
    # model refused all): the tag gate is what refuses CT and MR DICOM
    assert int((shipped.score(slices.features) > shipped.threshold).sum()) >= len(slice_pngs) - 1

    # Stored in a checkpoint (tensors and numbers), read back with weights_only=True.
    out = tmp_path / "bundled-ood.pt"
    write_ood("bundled", stats, out=out)
    assert torch.load(out, weights_only=True)["metadata"]["ood"]["precision"].shape == (1024, 1024)
    stored = read_ood(load_checkpoint(out))
    assert stored is not None and stored.threshold == stats.threshold
    torch.testing.assert_close(stored.score(slices.features), slice_scores)
    shipped = read_ood(load_checkpoint("bundled"))  # the bundled model ships its own statistics
    assert shipped is not None and shipped.n_train > 1000 and shipped.threshold > 0
    assert "reference" in shipped.groups and "rsna/PNEUMONIA" in shipped.groups


def test_gate_runs_on_the_features_of_the_scoring_pass(
    bundled: ServedModel, pediatric_features: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    train, labels = pediatric_features["train"]
    stats = fit_ood(train, labels, pediatric_features["val"][0])
    batch = torch.randn(3, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    out = bundled.forward(batch)
    assert out.features is not None and out.features.is_inference()
    with torch.inference_mode():
        together = stats.score(out.features)
    alone = torch.cat([stats.score(bundled.forward(batch[i:i + 1]).features) for i in range(3)])  # type: ignore[arg-type]
    torch.testing.assert_close(together, alone, atol=1e-2, rtol=1e-4)
    assert bool(stats.refuses(out.features).all()), "white noise is no radiograph"
    with pytest.raises(ValueError, match="features must have shape"):
        OODStats.from_metadata(stats.to_metadata()).score(out.features[:, :10])


def test_fit_ood_on_keeps_a_mean_per_class_and_one_for_the_reference_films(bundled: ServedModel,
                                                                           tmp_path: Path) -> None:
    from medcam.commands.gate import fit_ood_on

    root = Path(__file__).resolve().parents[1]
    films = sorted((root / "sample_data").glob("*.dcm"))
    train = tmp_path / "train.csv"
    train.write_text("file,label\n" + "".join(f"{f},{'PNEUMONIA' if 'pneumonia' in f.name else 'NORMAL'}\n"
                                               for f in films))
    reference = tmp_path / "reference.csv"  # the lung-split form: file first, other columns ignored
    encodings = sorted((root / "tests" / "data" / "rg1" / "dicom").glob("*.dcm"))
    reference.write_text("file,mask\n" + "".join(f"{f},none\n" for f in encodings))
    stats = fit_ood_on(bundled, train, train, reference=reference, log=lambda _: None)
    assert stats.groups == ("NORMAL", "PNEUMONIA", "reference") and stats.means.shape[0] == 3
    assert stats.n_train == len(films) + len(encodings)
    found = collect_features(bundled, [str(f) for f in encodings])
    torch.testing.assert_close(stats.means[2], found.features.mean(0), atol=1e-4, rtol=1e-4)
    assert OODStats.from_metadata(stats.to_metadata()).groups == stats.groups
    with pytest.raises(ValueError, match="2 group names for 3 means"):
        OODStats(stats.means, stats.precision, 1.0, groups=("a", "b"))
    (tmp_path / "empty.csv").write_text("file\n")
    with pytest.raises(ConfigError, match="lists no files"):
        fit_ood_on(bundled, train, train, reference=tmp_path / "empty.csv")


def test_fit_ood_threshold_lets_through_every_population() -> None:
    features, labels = _gaussian_classes(200, seed=1)
    val_features, _ = _gaussian_classes(120, seed=2)
    val = torch.cat([val_features[:100], val_features[100:] * 1.6])  # a small, more spread population
    groups = ["many"] * 100 + ["few"] * 20
    pooled = fit_ood(features, labels, val, quantile=0.9)
    per_group = fit_ood(features, labels, val, quantile=0.9, groups_val=groups)
    scores = per_group.score(val)
    for name in ("many", "few"):
        mine = scores[[g == name for g in groups]]
        assert float((mine <= per_group.threshold).float().mean()) >= 0.9 - 1e-6
    assert per_group.threshold >= pooled.threshold
    with pytest.raises(ValueError, match="groups_val"):
        fit_ood(features, labels, val, groups_val=groups[:5])
