"""The reviewer's worklist: images from a folder and from uploads, scored, in triage order.

Every image is identified by the SHA-256 of its bytes (:func:`file_key`): its score is cached
in the review database under that key and the model id, and its review follows the content,
not the path (the same file under two names is one item). Scoring runs the batch pipeline
(:func:`medcam.scoring.score`), so the worklist refuses what ``medcam score`` refuses, with
the same reasons; the viewer classifies the chosen image again for its maps.

**Limits** (:class:`Limits`), checked before an image is decoded, from its header alone:

- ``max_bytes`` (default 100 MiB) per uploaded file; the Streamlit server refuses larger
  uploads first (``--server.maxUploadSize``, set by ``medcam review`` to the same value);
- ``max_pixels`` (default 40 million, e.g. 6,300 x 6,300) per image, folder or upload: a
  chest radiograph has at most about 4,300 x 4,300 = 18.5 million pixels, and a decoded
  image costs about 20 bytes per pixel on its way through the viewer.

Triage order: highest probability of the model's positive class first; files that could not
be scored last, by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medcam.errors import ConfigError, MedcamError, UnsupportedInputError
from medcam.export.naming import safe_name
from medcam.gate.served import ServedModel
from medcam.io import detect_format, load_image
from medcam.io.discover import iter_images
from medcam.models.predictor import Prediction
from medcam.review.store import NOT_ANALYSED, STATUSES, ReviewStore, Status

__all__ = ["Limits", "Source", "WorkItem", "Worklist", "cache_result", "file_key", "image_pixels", "load_prediction",
           "save_upload", "select", "triage_order"]

Source = Literal["folder", "upload"]


@dataclass(frozen=True)
class Limits:
    """Size limits on what the reviewer reads (see the module documentation)."""

    max_bytes: int = 100 * 2**20
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ConfigError(f"limits must be positive, got {self.max_bytes!r} bytes, {self.max_pixels!r} pixels")


@dataclass(frozen=True)
class WorkItem:
    """One worklist row.

    Attributes:
        key: SHA-256 of the file's bytes.
        probability: the positive class's calibrated probability; None when not scored.
        flagged: at or above the model's operating threshold; None when not scored.
        error: why the file could not be scored; empty otherwise.
        status: the review status (``unread`` when there is no review).
        reviewer: the last reviewer to change the review; empty when unread.
        lung_evidence: the share of the positive class's positive evidence inside the lungs;
            None when not scored or served without a lung segmenter.
        quality: the caution of a flagged image whose evidence lies outside the lungs, else "".
    """

    key: str
    path: str
    name: str
    source: Source
    probability: float | None
    flagged: bool | None
    error: str
    status: Status
    reviewer: str
    lung_evidence: float | None = None
    quality: str = ""


def file_key(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_pixels(path: str | Path) -> int | None:
    """The number of pixels of an image, from its header only (None when it has none).

    DICOM: Rows x Columns x Number of Frames; PNG/JPEG: width x height; NIfTI: the product
    of its dimensions.

    Raises:
        UnsupportedInputError: a PNG/JPEG so large that Pillow refuses to open it (more than
            twice ``PIL.Image.MAX_IMAGE_PIXELS``, a decompression-bomb guard).
    """
    fmt = detect_format(path)
    try:
        if fmt == "dicom":
            import pydicom

            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True,
                                 specific_tags=["Rows", "Columns", "NumberOfFrames"])
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            return rows * cols * max(1, int(ds.get("NumberOfFrames", 1) or 1)) if rows and cols else None
        if fmt in ("png", "jpeg"):
            from PIL import Image as PILImage

            try:
                with PILImage.open(path) as img:
                    return int(img.width) * int(img.height)
            except PILImage.DecompressionBombError as err:
                raise UnsupportedInputError(path, f"the image is too large to open safely ({err})") from err
        if fmt == "nifti":
            import nibabel as nib

            count = 1
            for n in nib.load(path).shape:  # type: ignore[attr-defined]
                count *= int(n)
            return count
    except UnsupportedInputError:
        raise
    except Exception:  # an unreadable header is the reader's to report, with its reason
        return None
    return None


def check_pixels(path: str | Path, limits: Limits) -> None:
    """Refuse an image with more than ``limits.max_pixels`` pixels, before decoding it."""
    count = image_pixels(path)
    if count is not None and count > limits.max_pixels:
        raise UnsupportedInputError(path, f"the image has {count:,} pixels, more than the reviewer's limit of "
                                    f"{limits.max_pixels:,}; reduce it or score it with `medcam score`")


def load_prediction(path: str | Path, classifier: ServedModel, limits: Limits, *, method: str = "cam") -> Prediction:
    """Check the limits, load the image and classify it, its maps made by ``method``.

    Raises:
        UnsupportedInputError: too large, or refused by its reader (with the reason).
    """
    check_pixels(path, limits)
    return classifier.classify([load_image(path)], method=method)[0]


def save_upload(name: str, data: bytes, folder: str | Path, limits: Limits) -> Path:
    """Keep an uploaded file in ``folder`` if it is an image the reviewer can read.

    The file is written as ``<first 12 hex of its SHA-256>-<safe name>`` (uploading the
    same bytes twice keeps one file), then checked: size, format, pixel count and a full
    decode. A refused file is removed again.

    Raises:
        UnsupportedInputError: the reason, naming the uploaded file.
    """
    if len(data) > limits.max_bytes:
        raise UnsupportedInputError(name, f"the file is {len(data) / 2**20:.1f} MiB, more than the upload limit "
                                    f"of {limits.max_bytes / 2**20:.0f} MiB")
    if not data:
        raise UnsupportedInputError(name, "the file is empty")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{digest[:12]}-{_safe_file_name(name)}"
    existed = path.exists()
    if not existed:
        partial = path.with_name(f".{path.name}.part")
        partial.write_bytes(data)
        os.replace(partial, path)
    try:
        if detect_format(path) is None:
            raise UnsupportedInputError(name, "not a DICOM, NIfTI (.nii/.nii.gz), PNG or JPEG file")
        check_pixels(path, limits)
        load_image(path)
    except MedcamError as err:
        if not existed:
            path.unlink(missing_ok=True)
        reason = err.reason if isinstance(err, UnsupportedInputError) else str(err)
        raise UnsupportedInputError(name, reason) from err
    return path


def _safe_file_name(name: str) -> str:
    """``name`` made safe, keeping its extension (``.nii.gz`` included): NIfTI is recognised by it."""
    base = Path(name).name
    if base.lower().endswith(".nii.gz") and len(base) > 7:
        stem, suffix = base[:-7], base[-7:]
    else:
        stem, dot, extension = base.rpartition(".")
        suffix = f".{extension}" if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,8}", extension) else ""
        stem = stem if suffix else base
    return f"{safe_name(stem, max_length=80)}{suffix}"


def cache_result(store: ReviewStore, key: str, row: Mapping[str, str]) -> None:
    """Cache a results row (:mod:`medcam.scoring.results`, as :func:`medcam.scoring.read_results`
    gives it) as the score of the file whose content hash is ``key``: under the row's model and
    segmenter, with its probabilities, ``lung_evidence``, ``quality``, OOD score and DICOM header
    values; a row not analysed or failed keeps its reason ("not analysed: <reason>" for an image
    outside the model's intended use), with no probability."""
    from medcam.scoring.results import HEADER_COLUMNS

    ood = float(row["ood_score"]) if row["ood_score"] else None
    header = {c: row[c] for c in HEADER_COLUMNS}
    if row["status"] == "ok":
        evidence = row["lung_evidence"]
        store.save_score(key, row["model"], probabilities={
            c[len("prob_"):]: float(v) for c, v in row.items() if c.startswith("prob_")},
            lung_evidence=float(evidence) if evidence else None, quality=row["quality"], segmenter=row["segmenter"],
            ood_score=ood, acquisition=header)
    else:
        prefix = NOT_ANALYSED if row["status"] == "not_analysed" else ""
        store.save_score(key, row["model"], error=prefix + row["reason"], segmenter=row["segmenter"], ood_score=ood,
                         acquisition=header)


def triage_order(items: Iterable[WorkItem]) -> list[WorkItem]:
    """Highest probability first; unscored and refused files last, by name."""
    return sorted(items, key=lambda i: (i.probability is None, -(i.probability or 0.0), i.name.lower(), i.path))


def select(items: Iterable[WorkItem], *, statuses: Sequence[str] = STATUSES, flagged_only: bool = False,
           text: str = "") -> list[WorkItem]:
    """The items with one of ``statuses``, flagged when asked, whose name contains ``text``
    (case-insensitive), in triage order."""
    needle = text.strip().lower()
    return triage_order(i for i in items if i.status in statuses and (not flagged_only or bool(i.flagged))
                        and needle in i.name.lower())


class Worklist:
    """The images of a folder (recursively) and of the uploads folder, with their scores.

    Args:
        folder: the data folder, or None for uploads only.
        uploads: where :func:`save_upload` keeps uploads.
        store: the review database (score cache, statuses).
        limits: the size limits.
    """

    def __init__(self, folder: str | Path | None, uploads: str | Path, store: ReviewStore,
                 limits: Limits | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.uploads = Path(uploads)
        self.store = store
        self.limits = limits or Limits()
        self._keys: dict[tuple[str, int, int], str] = {}
        self._problems: list[tuple[str, str]] = []

    def files(self) -> list[tuple[Path, Source]]:
        """Image files of the folder, then of the uploads folder (content-sniffed)."""
        self._problems = []

        def report(path: Path, reason: str) -> None:
            self._problems.append((str(path), reason))

        found: list[tuple[Path, Source]] = []
        uploads = self.uploads.resolve()
        if self.folder is not None:
            for path in iter_images([self.folder], on_error=report):
                if uploads not in path.resolve().parents:
                    found.append((path, "folder"))
        if self.uploads.is_dir():
            found += [(path, "upload") for path in iter_images([self.uploads], on_error=report)]
        return found

    @property
    def problems(self) -> list[tuple[str, str]]:
        """``(path, reason)`` for what the last :meth:`files` could not read."""
        return list(self._problems)

    def key(self, path: Path) -> str:
        """:func:`file_key`, remembered while the file's size and modification time stay."""
        info = path.stat()
        memo = (str(path), info.st_size, info.st_mtime_ns)
        if memo not in self._keys:
            self._keys[memo] = file_key(path)
        return self._keys[memo]

    def unscored(self, model_id: str, files: Sequence[tuple[Path, Source]], *,
                 segmenter: str | None = None) -> list[tuple[Path, str]]:
        """``(path, key)`` of the files with no cached score for ``model_id`` (and, when given, the
        lung segmenter id ``segmenter``, "" for none)."""
        cached = self.store.cached_scores(model_id, segmenter=segmenter)
        out: list[tuple[Path, str]] = []
        seen: set[str] = set()
        for path, _ in files:
            key = self.key(path)
            if key not in cached and key not in seen:
                seen.add(key)
                out.append((path, key))
        return out

    def score(self, classifier: ServedModel, pending: Sequence[tuple[Path, str]],
              progress: Callable[[int, int, str], None] | None = None, *, chunk: int = 8) -> None:
        """Score ``pending`` files with the batch pipeline (:func:`medcam.scoring.score`: the same
        decoding, intended-use gate and rows as ``medcam score``) and cache each result row
        (:func:`cache_result`), or the reason there is none."""
        from medcam.scoring import ScoreOptions, read_results, score

        model_id, segmenter = classifier.checkpoint.model_id, classifier.segmenter_id
        allowed: list[tuple[Path, str]] = []
        for path, key in pending:
            try:
                check_pixels(path, self.limits)
            except MedcamError as err:
                self.store.save_score(key, model_id, error=err.reason if isinstance(err, UnsupportedInputError)
                                      else str(err), segmenter=segmenter)
                continue
            allowed.append((path, key))
        with tempfile.TemporaryDirectory(prefix="medcam-review-") as folder:
            out = Path(folder) / "scores.csv"
            for start in range(0, len(allowed), chunk):
                part = allowed[start:start + chunk]
                if progress is not None:
                    progress(start, len(allowed), part[0][0].name)
                score([path for path, _ in part], classifier,
                      ScoreOptions(out=out, resume=False, workers=0, batch_size=chunk, progress=False))
                rows = {row["path"]: row for row in read_results(out)}
                for path, key in part:
                    row = rows.get(os.path.abspath(path))
                    if row is None:
                        self.store.save_score(key, model_id, error="not scored (no result row)", segmenter=segmenter)
                    else:
                        cache_result(self.store, key, row)

    def items(self, classifier: ServedModel, files: Sequence[tuple[Path, Source]] | None = None) -> list[WorkItem]:
        """One :class:`WorkItem` per distinct file content, with cached scores and statuses."""
        ckpt = classifier.checkpoint
        files = self.files() if files is None else files
        cached = self.store.cached_scores(ckpt.model_id, segmenter=classifier.segmenter_id)
        reviews = {r.image_key: r for r in self.store.reviews()}
        items: dict[str, WorkItem] = {}
        for path, source in files:
            key = self.key(path)
            if key in items:
                continue
            score = cached.get(key)
            probability = score.probabilities.get(ckpt.model.positive_class) if score else None
            review = reviews.get(key)
            name = path.name.split("-", 1)[-1] if source == "upload" else path.name  # without the hash prefix
            items[key] = WorkItem(
                key=key, path=str(path), name=name, source=source, probability=probability,
                flagged=None if probability is None else probability >= ckpt.threshold,
                error=score.error if score else "not scored yet",
                status=review.status if review else "unread", reviewer=review.reviewer if review else "",
                lung_evidence=score.lung_evidence if score else None, quality=score.quality if score else "")
        return triage_order(items.values())
