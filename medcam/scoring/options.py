"""What a scoring run is asked to do, what it reports, and the pieces both engines share."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib import colormaps
from tqdm import tqdm

from medcam.config import check_choice
from medcam.errors import ConfigError
from medcam.export import COLOUR_MAPS, FORMATS, parse_formats
from medcam.io import VOI
from medcam.regions import RegionOptions
from medcam.scoring.results import skipped_path, studies_path

__all__ = ["METHODS", "ScoreOptions", "ScoreSummary", "default_workers", "output_name", "progress_bar"]

METHODS = ("cam", "gradcam", "gradcam++", "occlusion")


def default_workers() -> int:
    """Decoding workers by default: one per CPU core, up to 8.

    With the model on the CPU they run at the lowest priority (see
    :func:`~medcam.scoring.dataset.make_loader`), so they take the time the model leaves
    rather than the model's own.
    """
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class ScoreOptions:
    """A run of the pipeline: which inputs' rows go where, and which files each image gets.

    ``medcam score``, ``predict`` and ``export`` are this one run with different outputs
    switched on (see :mod:`medcam.commands`).

    Attributes:
        out: the results CSV (created, or resumed when it exists and ``resume`` is true).
        resume: keep the rows of an existing results file and skip their inputs; False
            starts the file afresh.
        cams: folder for each image's CAM overlay and raw map; None writes none.
        cam_nifti: also write the maps as NIfTI on the source geometry (DICOM, NIfTI inputs).
        batch_size: images per forward pass.
        workers: decoding processes (0 decodes in the main process).
        prefetch: batches each worker keeps ready.
        cam_class: class whose map is overlaid and gives the regions (any case; default: the
            model's positive class).
        reduce: decode large DICOMs at the resolution the model needs for scoring; the
            images that get files are decoded again in full (see :attr:`decode_full`).
        ignore_intended_use: analyse images outside the model's intended use too (research
            only); their rows keep the reason as a note.
        method: how the maps are made: ``cam`` (single pass, the default) or, for
            comparison, ``gradcam``, ``gradcam++`` or ``occlusion`` (several passes each).
        regions: folder for the region exports (:func:`medcam.export.export_regions`) of the
            ``cam_class`` map; None writes none.
        regions_of: ``flagged`` (images whose positive class is flagged) or ``all`` analysed images.
        report_all: with ``regions_of="flagged"``, also write the SR (when ``sr`` is one of the
            formats) of every analysed image that is not flagged, so that an archive holds a
            result for each image (finding absent, no region outlined); the other formats stay
            for flagged images.
        region_options: the threshold rule, smoothing and minimum area of those regions.
        region_formats: the export formats, a subset of :data:`medcam.export.FORMATS`.
        progress: show a progress bar (on a terminal).
    """

    out: Path
    resume: bool = True
    cams: Path | None = None
    cam_nifti: bool = False
    regions: Path | None = None
    regions_of: str = "flagged"
    report_all: bool = False
    region_options: RegionOptions = field(default_factory=RegionOptions)
    region_formats: tuple[str, ...] = FORMATS
    batch_size: int = 16
    workers: int = field(default_factory=default_workers)
    prefetch: int = 2
    voi: VOI = "auto"
    cam_class: str | None = None
    colour_map: str = "jet"
    opacity: float = 0.5
    method: str = "cam"
    reduce: bool = True
    ignore_intended_use: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size!r}")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {self.workers!r}")
        if self.prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1, got {self.prefetch!r}")
        if self.colour_map not in colormaps:
            raise ConfigError(f"unknown colour map {self.colour_map!r}; try one of {', '.join(COLOUR_MAPS)}")
        object.__setattr__(self, "region_formats", parse_formats(self.region_formats))
        check_choice("method", self.method, METHODS)
        check_choice("regions_of", self.regions_of, ("flagged", "all"))
        if not 0.0 <= self.opacity <= 1.0:
            raise ConfigError(f"opacity must be in [0, 1], got {self.opacity!r}")

    @property
    def outputs(self) -> list[Path]:
        """What this run writes, never to be scored itself."""
        written = [self.out, studies_path(self.out), skipped_path(self.out)]
        return [*written, *(p for p in (self.cams, self.regions) if p is not None)]

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The results file's columns for the files written beside each row."""
        cams = ("overlay", "cam", "cam_nifti", "lungs") if self.cams is not None else ()
        regions = ("regions", "exports", "not_exported") if self.regions is not None else ()
        return (*cams, *regions)

    @property
    def decode_full(self) -> bool:
        """Whether the decoding workers read every image in full: when reduction is off, or
        every analysed image gets files. Otherwise they decode reduced, and the few images
        that get files (the flagged ones, for ``--regions``) are read again in full."""
        every_image = self.regions_of == "all" or (self.report_all and "sr" in self.region_formats)
        return not self.reduce or self.cams is not None or (self.regions is not None and every_image)

    def formats_for(self, flagged: bool) -> tuple[str, ...]:
        """The region formats one analysed image gets: every one for a flagged image (or with
        ``regions_of="all"``), else only the SR with ``report_all``, else none."""
        if self.regions is None:
            return ()
        if self.regions_of == "all" or flagged:
            return self.region_formats
        return ("sr",) if self.report_all and "sr" in self.region_formats else ()

    @property
    def needs_maps(self) -> bool:
        """Whether the maps must be brought back onto the source images."""
        return self.cams is not None or self.regions is not None


@dataclass(frozen=True)
class ScoreSummary:
    """The outcome of a run.

    Attributes:
        scored: rows this run wrote: ``errors`` error rows, ``refused`` not-analysed rows.
        resumed: rows that were already in the results file and were skipped.
        skipped: files inside folders that are not inputs (no row; listed in ``RESULTS.skipped.csv``).
        seconds: wall time of the scoring loop.
    """

    results: Path
    studies: Path
    scored: int
    errors: int
    resumed: int
    skipped: int
    seconds: float
    refused: int = 0

    @property
    def complete(self) -> bool:
        """Every input of this run was analysed (no error or not-analysed row)."""
        return not self.errors and not self.refused

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def output_name(path: str) -> str:
    """The base name of every file written for an input: its file name and a hash of its
    absolute path, so that two inputs with the same name never collide and a resumed run
    rewrites the same files. :func:`~medcam.export.safe_path` makes it safe."""
    name = Path(path).name.removesuffix(".gz")
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:10]
    return f"{stem[:80]}-{digest}"


def progress_bar(total: int, enabled: bool) -> tqdm:
    """Images scored, images/s and time left, on standard error when it is a terminal."""
    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1,
                disable=None if enabled else True, desc="scoring")

