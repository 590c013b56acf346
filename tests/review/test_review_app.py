"""The reviewer app's logic through Streamlit's AppTest: worklist, viewer, review, export, uploads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from medcam.models import Classifier
from medcam.models.calibration import PopulationCalibration
from medcam.models.checkpoint import POPULATION_KEY, load_checkpoint, resave_checkpoint
from medcam.models.lungs import load_segmenter
from medcam.models.predictor import EVIDENCE_KEY
from medcam.review import display
from medcam.review.launcher import ReviewConfig
from medcam.review.store import ReviewStore

pytest.importorskip("streamlit", reason='the reviewer app needs Streamlit: pip install -e ".[test]"')
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "apps" / "reviewer.py"
REVIEWER = "Dr Ada"


@pytest.fixture()
def config(tmp_path: Path, review_folder: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> ReviewConfig:
    (review_folder / "report.dcm").write_bytes(Path(str(get_testdata_file("test-SR.dcm"))).read_bytes())
    config = ReviewConfig(folder=review_folder, db=tmp_path / "reviews" / "review.db", model=str(tiny_checkpoint))
    for name, value in config.to_env().items():
        monkeypatch.setenv(name, value)
    return config


@pytest.fixture()
def start(config: ReviewConfig) -> Callable[[], AppTest]:
    def new_session() -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=180)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return new_session


def _choose(at: AppTest, name: str) -> None:
    box = at.selectbox(key="image")
    (index,) = [i for i, label in enumerate(box.options) if label.startswith(f"{name} — ")]
    box.select_index(index).run()
    assert not at.exception, [e.value for e in at.exception]


def _texts(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in [*at.markdown, *at.caption, *at.error, *at.info, *at.success, *at.warning])


def _overlay(at: AppTest):
    (image,) = at.get("image")
    return image.proto.imgs[0]


def test_worklist_is_triaged_and_filtered(start: Callable[[], AppTest]) -> None:
    at = start()
    labels = at.selectbox(key="image").options
    names = [label.split(" — ")[0] for label in labels]
    assert sorted(names[:2]) == ["chest.png", "chest_pa.dcm"] and names[2] == "report.dcm"
    scores = [float(label.split("p=")[1].split(" ")[0]) for label in labels[:2]]
    assert scores == sorted(scores, reverse=True)
    assert labels[2] == "report.dcm — not scored"  # refused: last, with no score
    at.sidebar.checkbox(key="flagged_only").check().run()
    assert all("report.dcm" not in label for label in at.selectbox(key="image").options)
    at.sidebar.checkbox(key="flagged_only").uncheck()
    at.sidebar.text_input(key="search").input("PA").run()
    assert [label.split(" — ")[0] for label in at.selectbox(key="image").options] == ["chest_pa.dcm"]
    at.sidebar.text_input(key="search").input("")
    at.sidebar.multiselect(key="statuses").set_value(["reviewed"]).run()
    assert at.selectbox(key="image").options == []
    assert any("Untrained placeholder" in w.value for w in at.sidebar.warning)


def test_viewer_controls_and_a_refused_file(start: Callable[[], AppTest]) -> None:
    at = start()
    _choose(at, "chest_pa.dcm")
    assert "Enter your name" in _texts(at)
    assert all(b.disabled for b in at.button if b.key and b.key.startswith(("accept-", "reject-")))
    overlay = _overlay(at)
    assert overlay.alt == "overlay chest_pa.dcm PNEUMONIA fraction:0.50"
    assert overlay.url.endswith(".png")  # sent lossless, not re-encoded as JPEG
    assert "0.175 x 0.175 mm pixels" in overlay.caption
    assert "mm²" in _texts(at)  # measured in mm: the file has a pixel spacing
    at.selectbox(key="preset").select("bone").run()
    assert (at.slider(key="level").value, at.slider(key="width").value) == (0.7, 0.5)
    at.slider(key="zoom").set_value(2.0).run()
    assert at.slider(key="centre_row").value == 50
    at.radio(key="cam_class").set_value("NORMAL").run()
    assert _overlay(at).alt == "overlay chest_pa.dcm NORMAL fraction:0.50"
    at.toggle(key="show_cam").set_value(False).run()
    assert not at.exception
    _choose(at, "report.dcm")
    assert any("report.dcm cannot be shown" in e.value and "structured report" in e.value for e in at.error)
    _choose(at, "chest.png")  # still usable
    assert _overlay(at).alt.startswith("overlay chest.png ")
    assert "pixel spacing unknown" in _overlay(at).caption and "area (px)" in str(at.dataframe[-2].value.columns)


def test_review_accept_sign_off_export_and_reopen(start: Callable[[], AppTest], config: ReviewConfig) -> None:
    at = start()
    at.sidebar.text_input(key="reviewer").input(REVIEWER)
    _choose(at, "chest_pa.dcm")
    store = ReviewStore(config.db)
    key = next(i.image_key for i in store.reviews())
    assert store.status(key) == "in review"  # opened by a named reviewer

    regions_at = {}
    for value in (0.5, 0.3):
        at.slider(key="threshold").set_value(value).run()
        regions_at[value] = sum(1 for b in at.button if b.key and b.key.startswith("accept-"))
        assert _overlay(at).alt.endswith(f"fraction:{value:.2f}")
    assert regions_at[0.3] >= regions_at[0.5] >= 1

    at.button(key="accept-1").click().run()
    decisions = store.region_decisions(key, class_name="PNEUMONIA", threshold="fraction:0.30")
    assert decisions[1].decision == "accept" and decisions[1].reviewer == REVIEWER
    assert decisions[1].measurements["area_mm2"] > 0
    assert "Region 1 · " in _texts(at) and "**accept**" in _texts(at)

    at.radio(key=f"agreement-{key}").set_value("agree")
    at.text_area(key=f"note-{key}").input("RLL opacity")
    next(b for b in at.button if b.label == "Save and mark reviewed").click().run()
    assert store.status(key) == "reviewed"
    assert "is reviewed" in _texts(at)

    at.multiselect(key="formats").set_value(["seg", "json"])
    at.button(key="export").click().run()
    assert not at.error, [e.value for e in at.error]
    assert store.status(key) == "exported"
    (seg,) = config.exports.rglob("*_seg.dcm")
    assert pydicom.dcmread(seg).Modality == "SEG"
    assert len(list(config.exports.rglob("*_regions.json"))) == 1
    assert "Exported json, seg" in _texts(at), _texts(at)
    assert at.get("download_button")  # the zip, and the reviews CSV in the sidebar
    csv_text = store.reviews_csv()
    assert "RLL opacity" in csv_text and REVIEWER in csv_text and "1:" in csv_text
    assert [e.action for e in store.audit(key)] == ["open", "region accept", "sign off", "export"]

    again = start()  # a new session (as after a restart): the review is there, at its threshold
    again.sidebar.text_input(key="reviewer").input("Dr Ben")
    _choose(again, "chest_pa.dcm")
    assert again.slider(key="threshold").value == 0.3
    assert "**accept**" in _texts(again) and "status **exported**" in _texts(again)
    assert again.text_area(key=f"note-{key}").value == "RLL opacity"


def test_bad_uploads_are_refused_and_the_app_stays_usable(start: Callable[[], AppTest], config: ReviewConfig,
                                                          tmp_path: Path) -> None:
    from PIL import Image as PILImage
    from streamlit.testing.v1 import element_tree

    if not hasattr(element_tree, "FileUploader"):
        pytest.skip("this Streamlit's AppTest cannot upload files (the browser test does)")
    huge = tmp_path / "huge.png"
    PILImage.new("L", (8000, 6000)).save(huge)
    at = start()
    at.sidebar.file_uploader(key="uploads").set_value([
        ("noise.dcm", np.random.default_rng(1).bytes(5000), "application/dicom"),
        ("report.dcm", Path(str(get_testdata_file("test-SR.dcm"))).read_bytes(), "application/dicom"),
        ("huge.png", huge.read_bytes(), "image/png"),
        ("good.png", (config.folder / "chest.png").read_bytes()[:], "image/png"),  # type: ignore[operator]
    ]).run()
    assert not at.exception
    errors = "\n".join(e.value for e in at.sidebar.error)
    assert "noise.dcm: not a DICOM, NIfTI (.nii/.nii.gz), PNG or JPEG file" in errors
    assert "report.dcm: " in errors and "structured report" in errors
    assert "huge.png: the image has 48,000,000 pixels" in errors
    assert "good.png" not in errors
    # the good upload has the same bytes as chest.png: it is the same worklist item
    assert sorted(label.split(" — ")[0] for label in at.selectbox(key="image").options) == \
        ["chest.png", "chest_pa.dcm", "report.dcm"]
    assert sorted(p.name.split("-", 1)[1] for p in config.uploads.iterdir()) == ["good.png"]
    _choose(at, "chest_pa.dcm")
    assert _overlay(at).alt.startswith("overlay chest_pa.dcm ")


@pytest.fixture()
def cautious_model(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """The tiny model, flagging at p >= 0.1, with a lung_evidence threshold of 0.99 for the bundled
    segmenter: every flagged image whose evidence is not all inside the lungs carries the caution.
    Its calibration is by group, two groups with its own map, and every image resembles "adults"."""
    out = tmp_path / "cautious.pt"
    ckpt = load_checkpoint(tiny_checkpoint)
    probe = Classifier(str(tiny_checkpoint)).cam(torch.zeros(1, 1, ckpt.preprocess.size, ckpt.preprocess.size))
    coef = torch.zeros(2, probe.features.shape[1], dtype=torch.float64)
    groups = PopulationCalibration(("children", "adults"), (ckpt.calibration, ckpt.calibration), coef,
                                   torch.tensor([0.0, 1.0], dtype=torch.float64))
    resave_checkpoint(tiny_checkpoint, out=out, threshold=0.1, updates={
        EVIDENCE_KEY: {"threshold": 0.99, "rule": "test", "segmenter": load_segmenter().segmenter_id},
        POPULATION_KEY: groups.to_metadata()})
    return out


def test_lung_outline_toggle_and_the_caution(tmp_path: Path, review_folder: Path, cautious_model: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pictures: list[np.ndarray] = []
    render = display.render

    def recording(*args: object, **kwargs: object) -> np.ndarray:
        pictures.append(render(*args, **kwargs))  # type: ignore[arg-type]
        return pictures[-1]

    monkeypatch.setattr(display, "render", recording)
    config = ReviewConfig(folder=review_folder, db=tmp_path / "reviews" / "review.db", model=str(cautious_model))
    for name, value in config.to_env().items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table["caution"].str.startswith("evidence outside the lungs (lung_evidence ").all()
    at.sidebar.text_input(key="reviewer").input(REVIEWER)
    _choose(at, "chest_pa.dcm")
    (caution,) = [w.value for w in at.warning if "Caution" in w.value]
    assert "evidence outside the lungs (lung_evidence " in caution and "< 0.99" in caution
    assert "lung evidence 0." in _texts(at) and "calibrated as adults" in _texts(at)
    toggle = at.toggle(key="show_lungs")
    assert toggle.label == "Lung outline" and not toggle.disabled and toggle.value is False
    before = pictures[-1]
    assert not np.all(before == display.LUNG_COLOUR, axis=-1).any()
    toggle.set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    after = pictures[-1]
    outline = np.all(after == display.LUNG_COLOUR, axis=-1)
    assert outline.sum() > 100 and "lung outline" in _overlay(at).caption
    np.testing.assert_array_equal(after[~outline], before[~outline])  # only the outline is added
    store = ReviewStore(config.db)
    (review,) = store.reviews()
    assert review.quality.startswith("evidence outside the lungs") and review.segmenter.startswith("lungunet-")
    assert review.lung_evidence is not None and "quality" in store.reviews_csv().splitlines()[0]

    monkeypatch.setenv("MEDCAM_REVIEW_SEGMENTER", "none")  # served without a segmenter: no outline, no caution
    bare = AppTest.from_file(str(APP), default_timeout=180)
    bare.run()
    _choose(bare, "chest_pa.dcm")
    assert bare.toggle(key="show_lungs").disabled
    assert not [w for w in bare.warning if "Caution" in w.value] and "lung evidence 0." not in _texts(bare)
    assert any("no lung segmenter" in c.value for c in bare.sidebar.caption)


def test_the_monitoring_page_says_why_one_day_is_not_judged_and_keeps_the_review_choices(
        start: Callable[[], AppTest]) -> None:
    at = start()
    at.sidebar.text_input(key="search").input("chest").run()
    _choose(at, "chest_pa.dcm")
    at.sidebar.radio(key="page").set_value("Monitoring").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header] == ["Monitoring"]
    assert not at.get("selectbox") or all(s.key != "image" for s in at.selectbox)  # the viewer is not drawn
    # the worklist was scored today: one day, all of it the reference, as medcam monitor says
    assert [i.value for i in at.info] == [
        "**NOT JUDGED** · not judged: the rows fall in 1 day(s), and the first 2 are the reference: no day is "
        "left to judge (give --reference, or wait for more rows)"]
    assert "rows per period by status" in [image.proto.imgs[0].caption for image in at.get("image")]
    at.radio(key="monitor_rows").set_value("the images of the worklist now").run()
    assert not at.exception and at.info
    at.sidebar.radio(key="page").set_value("Review").run()
    assert at.sidebar.text_input(key="search").value == "chest"
    assert at.selectbox(key="image").value is not None and _overlay(at).alt.startswith("overlay chest_pa.dcm ")
