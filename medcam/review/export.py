"""The reviewer's exports: the ACCEPTED regions through :func:`medcam.export.export_regions`.

This module is the only place where the reviewer calls the export module. Only regions a
reviewer accepted are exported; they keep the ids they were reviewed under (so the SEG's
label image, the NIfTI label values, the JSON annotation ids and the review CSV agree). Each
export goes to a new folder ``<exports>/<image name>-<first 12 hex of its hash>/<UTC time>``,
so an earlier export is never overwritten, and is offered to the browser as one zip file.

The SR (format ``sr``) is the exception to "accepted only": it is the reviewer's report, so
it lists every region of the map with the reviewer's decision (accepted, rejected, or none
yet) and names the reviewer as its person observer (:class:`medcam.export.sr.Review`); it
needs the reviewer's name.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medcam.export import FORMATS, ExportResult, export_regions, parse_formats, safe_name
from medcam.export.sr import Review
from medcam.models.predictor import Prediction
from medcam.regions import RegionSet

__all__ = ["FORMATS", "accepted_regions", "export_accepted", "export_folder", "zip_files"]


def accepted_regions(regions: RegionSet, accepted: Collection[int]) -> RegionSet:
    """``regions`` with only the ``accepted`` ids kept (labels of the others set to 0).

    Raises:
        ValueError: an accepted id that is not a region of ``regions``.
    """
    ids = {int(i) for i in accepted}
    unknown = ids - {r.id for r in regions.regions}
    if unknown:
        raise ValueError(f"regions {sorted(unknown)} are not among the {len(regions)} regions of this map")
    labels = np.where(np.isin(regions.labels, sorted(ids)), regions.labels, 0).astype(regions.labels.dtype)
    return dataclasses.replace(regions, labels=labels, regions=tuple(r for r in regions.regions if r.id in ids))


def export_folder(root: str | Path, name: str, key: str) -> Path:
    """A new, empty folder for one export of one image (see the module documentation)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    folder = Path(root) / f"{safe_name(name, max_length=60)}-{key[:12]}" / stamp
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def export_accepted(prediction: Prediction, regions: RegionSet, accepted: Collection[int], out_dir: str | Path,
                    formats: Sequence[str], *, reviewer: str | None = None,
                    rejected: Collection[int] = ()) -> ExportResult:
    """Write the accepted regions in ``formats`` (a subset of :data:`FORMATS`) into ``out_dir``.

    Args:
        prediction: the image's prediction.
        regions: every region of the reviewed map.
        accepted: ids of the regions the reviewer accepted.
        out_dir: the export folder (:func:`export_folder`).
        formats: the formats to write.
        reviewer: the reviewer's name; required for the SR.
        rejected: ids of the regions the reviewer rejected (recorded in the SR).

    Raises:
        ValueError: no region accepted, an unknown region id, a region both accepted and
            rejected, or an SR without a reviewer name.
        ConfigError: an unknown format.
    """
    if not accepted:
        raise ValueError("no region is accepted: accept at least one region to export")
    kept = accepted_regions(regions, accepted)
    review = None
    if "sr" in parse_formats(formats):
        if reviewer is None or not reviewer.strip():
            raise ValueError("the SR records the reviewer's decisions: give the reviewer's name to export it")
        both = {int(i) for i in accepted} & {int(i) for i in rejected}
        if both:
            raise ValueError(f"regions {sorted(both)} are both accepted and rejected")
        decisions = {int(i): False for i in rejected} | {int(i): True for i in accepted}
        review = Review(reviewer=reviewer, regions=regions, decisions=decisions)
    return export_regions(prediction, kept, out_dir, formats, review=review)


def zip_files(files: Mapping[str, Path]) -> bytes:
    """The files, flat, in one zip archive (deflated), as bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files.values():
            archive.write(path, arcname=Path(path).name)
    return buffer.getvalue()
