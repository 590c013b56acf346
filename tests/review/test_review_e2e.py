"""The reviewer end to end in a real browser: ``medcam review`` served, Debian's Chromium driven by Playwright.

Open the app, choose an image, move the threshold slider, accept a region, export a SEG
(downloaded as a zip), refuse a bad upload and stay usable, restart the server and find the
review still there. Screenshots go to ``$MEDCAM_E2E_SCREENSHOTS`` (default: the test's
temporary folder); the path and the select -> overlay time are printed (``pytest -s``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest

REPO = Path(__file__).resolve().parents[2]


def _driver() -> ModuleType:
    """benchmarks/bench_review.py: the one place that knows how to drive the app."""
    spec = importlib.util.spec_from_file_location("bench_review", REPO / "benchmarks" / "bench_review.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


drive = _driver()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not drive.CHROMIUM.is_file(), reason=f"Debian's Chromium is not installed at {drive.CHROMIUM} "
                       "(apt-get install -y chromium chromium-driver; .ci/run does this)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason='Playwright is not installed: pip install -e ".[test]"')
pytest.importorskip("streamlit", reason='the reviewer needs Streamlit: pip install -e ".[test]"')


def test_review_in_a_real_browser(tmp_path: Path, review_folder: Path, tiny_checkpoint: Path) -> None:
    shots = Path(os.environ.get("MEDCAM_E2E_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "state" / "review.db"
    log = tmp_path / "server.log"
    with drive.server(review_folder, db, str(tiny_checkpoint), log=log) as url, sync_api.sync_playwright() as pw:
        browser = drive.launch_browser(pw)
        page = drive.open_app(browser, url)
        drive.set_reviewer(page, "Dr E2E")
        seconds = drive.select_image(page, "chest_pa.dcm")
        print(f"\nselect -> overlay on screen: {seconds:.2f} s (chest_pa.dcm, 1955 x 1841, cold)")
        page.screenshot(path=str(shots / "01-selected.png"))

        assert drive.nudge_slider(page, "Threshold", -1) == "0.45"
        drive.wait_overlay(page, "chest_pa.dcm", "fraction:0.45")
        page.get_by_role("button", name="Accept 1", exact=True).click()
        page.get_by_text(re.compile(r"^Region 1 · [\d,.]+ mm² · accept$")).wait_for()
        page.screenshot(path=str(shots / "02-accepted.png"))

        page.get_by_role("button", name="Export 1 accepted region(s)").click()
        page.get_by_text(re.compile(r"^Exported json, mask_png, overlay_png, seg to .*exports")).first.wait_for()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download export (zip)").click()
        archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
        (seg_name,) = [n for n in archive.namelist() if n.endswith("_seg.dcm")]
        seg = pydicom.dcmread(io.BytesIO(archive.read(seg_name)))
        assert seg.Modality == "SEG" and seg.pixel_array.any()
        page.screenshot(path=str(shots / "03-exported.png"))

        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(files=[{
            "name": "noise.dcm", "mimeType": "application/dicom",
            "buffer": np.random.default_rng(2).bytes(3000)}])
        page.get_by_text("noise.dcm: not a DICOM, NIfTI").wait_for()
        page.screenshot(path=str(shots / "04-bad-upload.png"))
        assert drive.select_image(page, "chest.png") > 0  # the app is still usable
        with page.expect_download() as download:
            page.get_by_role("button", name="Download all reviews (CSV)").click()
        reviews = Path(download.value.path()).read_text()
        assert "chest_pa.dcm" in reviews and "Dr E2E" in reviews and "exported" in reviews
        browser.close()

    with drive.server(review_folder, db, str(tiny_checkpoint), log=log) as url, sync_api.sync_playwright() as pw:
        browser = drive.launch_browser(pw)
        page = drive.open_app(browser, url)
        drive.set_reviewer(page, "Dr Two")
        drive.select_image(page, "chest_pa.dcm")
        drive.wait_overlay(page, "chest_pa.dcm", "fraction:0.45")  # reopened at the reviewed threshold
        page.get_by_text(re.compile(r"status exported · map: cam$")).wait_for()
        page.get_by_text(re.compile(r"^Region 1 · [\d,.]+ mm² · accept$")).wait_for()
        page.screenshot(path=str(shots / "05-after-restart.png"))
        browser.close()
    print(f"screenshots in {shots}")
    assert len(list(shots.glob("*.png"))) == 5
