"""DICOMweb for ``medcam score dicomweb:URL``: QIDO-RS lists, WADO-RS fetches, STOW-RS stores back.

:func:`fetch_instances` copies the radiographs of an archive's studies into a folder that the
pipeline then scores like any other: QIDO-RS finds the studies (one Study Instance UID, or
every study since a date) and their instances, the instances medcam does not read are left
on the archive (structured reports, segmentations, presentation states, CT ... and medcam's
own results, so that a second run never scores them), and WADO-RS fetches the others, in the
transfer syntax they are stored in. Each lands at ``FOLDER/<study>/<series>/<sop>.dcm``, every
part a valid UID or else a hash of the tag's value (:func:`instance_path`), so that no value an
archive sends can place a file outside ``FOLDER``; it is written to a temporary file beside
it, ``fsync``-ed and renamed, so the folder never holds half an instance. An instance already
there is not fetched again: a second run resumes.

:func:`stow_results` sends the DICOM results of a results file by STOW-RS (:func:`stow_files`)
and records each SOP Instance UID the archive confirmed in ``RESULTS.stowed.csv``, so that a
rerun sends only what has not been stored yet; results carry deterministic UIDs
(:mod:`medcam.export.uids`), so a file sent twice after a crash is still one instance.

Every failure of one instance (its fetch, its store) is that instance's, reported with the
reason, and the others go on; only an archive that cannot be searched at all is fatal.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcam.errors import ConfigError, MedcamError
from medcam.export.equipment import MANUFACTURER
from medcam.files import atomic_open
from medcam.gate.tags import IMAGE_SOP_CLASSES
from medcam.node.spool import uid_name

if TYPE_CHECKING:  # dicomweb-client imports requests: only when an archive is used
    from dicomweb_client.api import DICOMwebClient

__all__ = ["PREFIX", "Fetched", "StowReport", "fetch_folder", "fetch_instances", "instance_path", "make_client",
           "parse_date", "parse_source", "parse_study", "parse_url", "stow_files", "stow_results", "stowed_path"]

#: An input of ``medcam score`` that names an archive: ``dicomweb:http://host:8042/dicom-web``.
PREFIX = "dicomweb:"
TIMEOUT = 300.0  # seconds: a large radiograph over a slow link

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DATE = re.compile(r"[0-9]{8}")
# QIDO-RS attributes, by tag
_STUDY, _SERIES, _SOP, _SOP_CLASS, _MANUFACTURER = "0020000D", "0020000E", "00080018", "00080016", "00080070"


def instance_path(folder: Path, study: object, series: object, sop: object) -> Path:
    """Where an instance is kept under ``folder``: ``<study>/<series>/<sop>.dcm``, each part a valid UID
    or else ``x`` and a hash of the value (:func:`medcam.node.spool.uid_name`)."""
    return Path(folder) / uid_name(study) / uid_name(series) / f"{uid_name(sop)}.dcm"


def parse_url(url: str, what: str) -> str:
    """A DICOMweb base URL (``http://`` or ``https://``), without a trailing slash.

    Raises:
        ConfigError: it is not one; the message starts with ``what`` (an option or input).
    """
    if not re.match(r"https?://[^/\s]+", url):
        raise ConfigError(f"{what}: {url!r} is not a DICOMweb base URL; give one like http://pacs:8042/dicom-web")
    return url.rstrip("/")


def parse_source(text: str) -> str | None:
    """The DICOMweb base URL of a ``dicomweb:URL`` input, or None for any other input.

    Raises:
        ConfigError: the URL after ``dicomweb:`` is not ``http://`` or ``https://``.
    """
    if not text.startswith(PREFIX):
        return None
    return parse_url(text[len(PREFIX):], f"input {text!r}")


def parse_date(text: str) -> str:
    """``--since``: a date as YYYYMMDD.

    Raises:
        ConfigError: ``text`` is not a real date in that form.
    """
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ConfigError(f"--since {text!r} is not a date as YYYYMMDD (e.g. 20240131)") from None
    return text


def parse_study(text: str) -> str:
    """``--study``: a Study Instance UID.

    Raises:
        ConfigError: ``text`` is not a valid UID.
    """
    if not (0 < len(text) <= 64 and _UID.fullmatch(text)):
        raise ConfigError(f"--study {text!r} is not a Study Instance UID (digits and dots, at most 64 characters)")
    return text


def fetch_folder(results: Path) -> Path:
    """Where ``medcam score`` keeps the instances it fetches: ``RESULTS.dicomweb/`` beside the results file."""
    name = results.name[:-4] if results.name.lower().endswith(".csv") else results.name
    return results.with_name(f"{name}.dicomweb")


def stowed_path(results: Path) -> Path:
    """The record of results stored by STOW-RS: ``RESULTS.stowed.csv`` beside the results file."""
    name = results.name[:-4] if results.name.lower().endswith(".csv") else results.name
    return results.with_name(f"{name}.stowed.csv")


def make_client(url: str) -> DICOMwebClient:
    """A DICOMweb client of the service at ``url`` with medcam's timeout."""
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url, timeout=TIMEOUT)


@dataclass(frozen=True)
class Fetched:
    """One instance of the archive that medcam reads.

    Attributes:
        path: where it is kept (or would have been).
        problem: why it could not be fetched; empty when it is there.
        new: fetched by this call (False when it was there already, or failed).
    """

    path: Path
    problem: str = ""
    new: bool = False


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _search(search: Any, what: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every result of a QIDO-RS search, page by page (``offset``), until a page is empty or brings
    nothing new (a server that ignores ``offset`` answers the same page again)."""
    seen: set[str] = set()
    offset = 0
    while True:
        try:
            page = search(offset=offset, **kwargs)
        except Exception as err:  # requests' errors, a body that is not JSON ...
            raise MedcamError(f"could not search {what}: {_describe(err)}") from err
        fresh = [item for item in page if repr(item) not in seen]
        if not fresh:
            return
        seen.update(repr(item) for item in fresh)
        offset += len(page)
        yield from fresh


def _describe(err: Exception) -> str:
    response = getattr(err, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {response.reason or ''} from {response.url}".replace("  ", " ")
    return f"{type(err).__name__}: {err}"


def _wanted(item: dict[str, Any]) -> bool:
    """An instance medcam reads: a radiograph or secondary capture (or of unknown class), not medcam's own."""
    sop_class = _value(item, _SOP_CLASS)
    if sop_class and sop_class not in IMAGE_SOP_CLASSES:
        return False
    return _value(item, _MANUFACTURER).strip().lower() != MANUFACTURER


def fetch_instances(url: str, folder: Path, *, study: str | None = None, since: str | None = None,
                    client: DICOMwebClient | None = None) -> Iterator[Fetched]:
    """Fetch the instances medcam reads of one study, or of every study since a date, into ``folder``.

    Args:
        url: the DICOMweb base URL (used in messages; ``client`` talks to it).
        folder: where the instances are kept (created); see :func:`instance_path`.
        study: the Study Instance UID to fetch; None: every study (since ``since``).
        since: YYYYMMDD: only studies of that date or later.
        client: the DICOMweb client (default: :func:`make_client` of ``url``).

    Yields:
        A :class:`Fetched` per instance medcam reads, whether fetched now, already there, or
        failed (with the reason); a study whose instances cannot be listed gives one failure.

    Raises:
        MedcamError: the archive's studies cannot be searched.
    """
    client = client or make_client(url)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.rglob(".*.tmp"):  # temporary files of a run that was killed (see atomic_open)
        leftover.unlink(missing_ok=True)
    if study is not None:
        studies = [study]
    else:  # listed in full first: pages by offset would shift as studies arrive during the fetch
        filters = {"StudyDate": f"{since}-"} if since else None
        studies = [_value(item, _STUDY) for item in _search(client.search_for_studies, f"the studies of {url}",
                                                             search_filters=filters)]
    for study_uid in studies:
        try:
            instances = list(_search(client.search_for_instances, f"study {study_uid} of {url}",
                                     study_instance_uid=study_uid, fields=["Manufacturer"]))
        except MedcamError as err:
            yield Fetched(folder / uid_name(study_uid), str(err))
            continue
        for item in filter(_wanted, instances):
            yield _fetch_one(client, url, folder, study_uid, _value(item, _SERIES), _value(item, _SOP))


def _fetch_one(client: DICOMwebClient, url: str, folder: Path, study: str, series: str, sop: str) -> Fetched:
    path = instance_path(folder, study, series, sop)
    if path.is_file():
        return Fetched(path)
    try:
        dataset = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
        if str(dataset.get("SOPInstanceUID", "")) != sop:
            return Fetched(path, f"{url} answered instance {dataset.get('SOPInstanceUID', '(none)')} "
                                 f"when asked for {sop}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            dataset.save_as(f, enforce_file_format=True)
    except Exception as err:  # this instance's failure: reported, the others go on
        return Fetched(path, f"could not fetch instance {sop} of study {study} from {url}: {_describe(err)}")
    return Fetched(path, new=True)


def stow_files(url: str, paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Store each file by STOW-RS, one request per file (the node's :class:`~medcam.node.send.StowDestination`).

    Returns:
        ``(path, error)`` per path, in order; ``error`` is empty when the archive confirmed it.
    """
    from medcam.node.send import StowDestination

    paths = [Path(p) for p in paths]
    outcomes = StowDestination(url, timeout=TIMEOUT).send(paths)
    return [(path, "" if outcome.kind == "stored" else outcome.reason)
            for path, outcome in zip(paths, outcomes, strict=True)]


@dataclass(frozen=True)
class StowReport:
    """What :func:`stow_results` did: files stored now, files stored by an earlier run, failures."""

    stored: int = 0
    already: int = 0
    failed: tuple[tuple[Path, str], ...] = ()


def _dicom_exports(results: Path) -> list[Path]:
    """The DICOM files in the ``exports`` column of a results file, in row order, each once."""
    from medcam.scoring.results import read_results

    found: dict[Path, None] = {}
    for row in read_results(results):
        for name in filter(None, (row.get("exports") or "").split(";")):
            if name.lower().endswith(".dcm"):
                found[Path(name)] = None
    return list(found)


def _read_stowed(path: Path) -> set[tuple[str, str]]:
    if not path.is_file():
        return set()
    with path.open(newline="", encoding="utf-8") as f:
        return {(row[0], row[1]) for row in csv.reader(f) if len(row) >= 2}


def stow_results(url: str, results: Path) -> StowReport:
    """Send the DICOM results listed in ``results`` that the archive at ``url`` has not confirmed yet.

    Each file the archive confirms is recorded (URL, SOP Instance UID, path) in
    :func:`stowed_path`, appended and ``fsync``-ed at once, so that a rerun skips it.
    """
    import pydicom

    ledger = stowed_path(results)
    done = _read_stowed(ledger)
    pending: list[tuple[Path, str]] = []
    failed: list[tuple[Path, str]] = []
    already = 0
    for path in _dicom_exports(results):
        try:
            sop = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        except Exception as err:
            failed.append((path, f"cannot be read: {_describe(err)}"))
            continue
        if (url, sop) in done:
            already += 1
        else:
            pending.append((path, sop))
    stored = 0
    with ledger.open("a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for path, sop in pending:
            [(_, error)] = stow_files(url, [path])
            if error:
                failed.append((path, error))
                continue
            writer.writerow([url, sop, str(path)])
            f.flush()
            os.fsync(f.fileno())
            stored += 1
    return StowReport(stored, already, tuple(failed))
