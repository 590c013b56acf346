"""The worklist: uploads and their limits, scanning, scoring with a cache, triage and filters."""

from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medcam.errors import ConfigError, UnsupportedInputError
from medcam.gate import ServedModel
from medcam.review.store import ImageRef, ReviewStore
from medcam.review.worklist import Limits, WorkItem, Worklist, file_key, image_pixels, save_upload, select


@pytest.fixture()
def classifier(tiny_classifier: ServedModel) -> ServedModel:
    return tiny_classifier


def _item(name: str, probability: float | None, status: str = "unread", flagged: bool | None = None) -> WorkItem:
    return WorkItem(key=name, path=f"/d/{name}", name=name, source="folder", probability=probability,
                    flagged=flagged, error="" if probability is not None else "refused", status=status,  # type: ignore[arg-type]
                    reviewer="")


def test_triage_order_and_filters() -> None:
    items = [_item("b.dcm", 0.2), _item("err.dcm", None), _item("a.dcm", 0.9, "reviewed", True),
             _item("c.png", 0.5, "in review", True), _item("d.png", 0.5)]
    assert [i.name for i in select(items)] == ["a.dcm", "c.png", "d.png", "b.dcm", "err.dcm"]
    assert [i.name for i in select(items, statuses=["unread"])] == ["d.png", "b.dcm", "err.dcm"]
    assert [i.name for i in select(items, flagged_only=True)] == ["a.dcm", "c.png"]
    assert [i.name for i in select(items, text="PNG")] == ["c.png", "d.png"]


def test_file_key_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_key(path) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="limits must be positive"):
        Limits(max_pixels=0)


def test_upload_of_a_good_png_is_kept_once(tmp_path: Path) -> None:
    data = (Path(__file__).resolve().parents[1] / "data" / "rg1" / "png" / "RG1.png").read_bytes()
    first = save_upload("my chest (1).png", data, tmp_path / "uploads", Limits())
    again = save_upload("my chest (1).png", data, tmp_path / "uploads", Limits())
    assert first == again and first.read_bytes() == data
    assert first.name.startswith(hashlib.sha256(data).hexdigest()[:12] + "-my_chest_1-") and first.suffix == ".png"
    assert list((tmp_path / "uploads").iterdir()) == [first]
    nifti = (Path(__file__).resolve().parents[1] / "data" / "rg1" / "nifti" / "RG1.nii.gz").read_bytes()
    kept = save_upload("../../lung scan.nii.gz", nifti, tmp_path / "uploads", Limits())
    assert kept.parent == tmp_path / "uploads"
    assert kept.name.startswith(hashlib.sha256(nifti).hexdigest()[:12] + "-lung_scan-")
    assert kept.name.endswith(".nii.gz")  # NIfTI is recognised by its suffix: it must survive


def test_upload_of_random_bytes_is_refused_and_removed(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(4096)
    with pytest.raises(UnsupportedInputError, match=r"^junk\.dcm: not a DICOM, NIfTI"):
        save_upload("junk.dcm", data, tmp_path, Limits())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnsupportedInputError, match="empty"):
        save_upload("empty.png", b"", tmp_path, Limits())


def test_upload_of_a_structured_report_is_refused(tmp_path: Path) -> None:
    data = Path(str(get_testdata_file("test-SR.dcm"))).read_bytes()
    with pytest.raises(UnsupportedInputError, match=r"^report\.dcm: .*structured report"):
        save_upload("report.dcm", data, tmp_path, Limits())
    assert list(tmp_path.iterdir()) == []


def test_upload_of_a_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    PILImage.new("L", (8000, 6000)).save(huge)  # 48 million pixels, a small file
    assert image_pixels(huge) == 48_000_000
    with pytest.raises(UnsupportedInputError, match=r"48,000,000 pixels, more than .* 40,000,000"):
        save_upload("huge.png", huge.read_bytes(), tmp_path / "uploads", Limits())
    with pytest.raises(UnsupportedInputError, match=r"0\.1 MiB, more than the upload limit"):
        save_upload("big.png", b"\0" * 100_000, tmp_path / "uploads", Limits(max_bytes=50_000))
    assert list((tmp_path / "uploads").iterdir()) == []


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only its signature, its IHDR chunk and IEND: the size without the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused(tmp_path: Path) -> None:
    data = _png_header(20_000, 20_000)  # 400 million pixels: Pillow will not open it
    with pytest.raises(UnsupportedInputError, match=r"^bomb\.png: the image is too large to open safely"):
        save_upload("bomb.png", data, tmp_path / "uploads", Limits())
    assert list((tmp_path / "uploads").iterdir()) == []


def test_image_pixels_reads_headers(rg1_dicom: Path) -> None:
    assert image_pixels(rg1_dicom) == 1955 * 1841
    nifti = Path(__file__).resolve().parents[1] / "data" / "rg1" / "nifti" / "RG1.nii.gz"
    assert image_pixels(nifti) == 488 * 460


def test_worklist_scores_once_and_caches(tmp_path: Path, review_folder: Path, classifier: ServedModel) -> None:
    shutil.copy(review_folder / "chest.png", review_folder / "copy_of_chest.png")  # same bytes: one item
    sr = review_folder / "report.dcm"
    sr.write_bytes(Path(str(get_testdata_file("test-SR.dcm"))).read_bytes())
    store = ReviewStore(tmp_path / "review.db")
    worklist = Worklist(review_folder, tmp_path / "uploads", store, Limits(max_pixels=5_000_000))
    files = worklist.files()
    assert sorted(p.name for p, _ in files) == ["chest.png", "chest_pa.dcm", "copy_of_chest.png", "report.dcm"]
    pending = worklist.unscored(classifier.checkpoint.model_id, files)
    assert len(pending) == 3  # the copy has the same key
    progress: list[tuple[int, int, str]] = []
    worklist.score(classifier, pending, lambda *a: progress.append(a), chunk=1)
    assert [p[:2] for p in progress] == [(0, 3), (1, 3), (2, 3)]
    assert worklist.unscored(classifier.checkpoint.model_id, files) == []
    items = {i.name: i for i in worklist.items(classifier, files)}
    assert set(items) == {"chest.png", "chest_pa.dcm", "report.dcm"}
    assert "structured report" in items["report.dcm"].error and items["report.dcm"].probability is None
    chest = items["chest_pa.dcm"]
    assert chest.probability is not None and 0 < chest.probability < 1 and chest.error == ""
    assert chest.flagged == (chest.probability >= classifier.checkpoint.threshold)
    assert chest.lung_evidence is not None and 0 <= chest.lung_evidence <= 1  # the bundled segmenter's share
    assert chest.quality == ""  # the tiny model sets no lung_evidence threshold
    cached = store.cached_scores(classifier.checkpoint.model_id)
    assert {c.segmenter for c in cached.values()} == {classifier.segmenter_id}
    assert cached[chest.key].lung_evidence == chest.lung_evidence
    assert classifier.segmenter_id.startswith("lungunet-")
    assert len(worklist.unscored(classifier.checkpoint.model_id, files, segmenter="")) == 3  # none: scored again
    assert all(i.status == "unread" for i in items.values())
    store.open_review(ImageRef(chest.key, chest.name, chest.path), "Dr A")
    assert {i.name: i.status for i in worklist.items(classifier, files)}["chest_pa.dcm"] == "in review"
    assert [i.name for i in worklist.items(classifier, files)][-1] == "report.dcm"  # refused files last


def test_pixel_limit_applies_to_folder_images(tmp_path: Path, review_folder: Path, classifier: ServedModel) -> None:
    store = ReviewStore(tmp_path / "r.db")
    worklist = Worklist(review_folder, tmp_path / "uploads", store, Limits(max_pixels=1_000_000))
    files = worklist.files()
    worklist.score(classifier, worklist.unscored(classifier.checkpoint.model_id, files))
    items = {i.name: i for i in worklist.items(classifier, files)}
    assert "more than the reviewer's limit of 1,000,000" in items["chest_pa.dcm"].error
    assert items["chest.png"].error == ""  # 512 x 482


def test_uploads_join_the_worklist_without_their_hash_prefix(tmp_path: Path, review_folder: Path,
                                                              classifier: ServedModel) -> None:
    uploads = tmp_path / "uploads"
    PILImage.open(review_folder / "chest.png").rotate(90, expand=True).save(tmp_path / "rotated.png")
    save_upload("rotated.png", (tmp_path / "rotated.png").read_bytes(), uploads, Limits())
    worklist = Worklist(None, uploads, ReviewStore(tmp_path / "r.db"))
    files = worklist.files()
    assert [s for _, s in files] == ["upload"]
    worklist.score(classifier, worklist.unscored(classifier.checkpoint.model_id, files))
    (item,) = worklist.items(classifier, files)
    assert (item.name, item.source, item.error) == ("rotated.png", "upload", "")
