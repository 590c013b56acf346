"""Make medcam's sample data: four real chest films as DICOM Secondary Captures of radiographs.

Two adults of the NIH ChestX-ray14 set and two children of Kermany et al. (2018), one
pneumonia and one normal film each, taken from the shared data set beside the repository
(``../shared/data``; see ``ATTRIBUTION.md`` for their sources, licences and labels). Run from
anywhere, with medcam installed::

    python sample_data/make_samples.py [--shared PATH/TO/shared/data]

Each film becomes what it is, a Secondary Capture of a radiograph (highdicom ``SCImage``):
Modality CR, Conversion Type WSD, Body Part Examined CHEST, 8-bit MONOCHROME2 pixels that are
exactly the PNG's and a window (centre 128, width 256) that shows them as they are, Explicit VR
Little Endian. Patient's Sex, Patient's Age, View Position and
Pixel Spacing come from the source's ``labels.csv`` where it gives them and are left out where
it does not. UIDs are derived from the source file's name and every date is the fixed date of
the capture (the examinations' dates are not known), so the files are the same bytes on every
run with the same library versions.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image as PILImage
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DA, DT, TM

__all__ = ["FILMS", "Film", "build", "label_row", "main", "nih_spacing", "pixels_of"]

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
CAPTURE_DATE, CAPTURE_TIME = DA("20261203"), TM("120000")
"""When these captures were made, and the date and time of each capture's study, instance and
content: fixed, so that every run writes the same bytes."""
NIH = "NIH ChestX-ray14"
KERMANY = "Kermany et al. 2018"


@dataclass(frozen=True)
class Film:
    """One sample: the DICOM file to write and the film it holds.

    Attributes:
        name: the DICOM file's name in ``sample_data/``.
        collection: :data:`NIH` or :data:`KERMANY`.
        source: the PNG, relative to the shared data folder.
    """

    name: str
    collection: str
    source: str

    @property
    def labels(self) -> str:
        """The ``labels.csv`` that describes the film, relative to the shared data folder."""
        return f"{self.source.split('/')[0]}/labels.csv"

    @property
    def file(self) -> str:
        """The film's ``file`` column in ``labels.csv``."""
        return self.source.split("/", 1)[1]

    @property
    def stem(self) -> str:
        return Path(self.source).stem


FILMS = (
    Film("adult_pneumonia_nih_00000910_001.dcm", NIH, "cxr-adult/images/PNEUMONIA/00000910_001.png"),
    Film("adult_normal_nih_00001323_001.dcm", NIH, "cxr-adult/images/NORMAL/00001323_001.png"),
    Film("child_pneumonia_kermany_person1001_bacteria_2932.dcm", KERMANY,
         "cxr/images/PNEUMONIA/person1001_bacteria_2932.png"),
    Film("child_normal_kermany_IM-0029-0001.dcm", KERMANY, "cxr/images/NORMAL/IM-0029-0001.png"),
)
"""The first film of each class, in ``labels.csv`` order, of each collection's test split
(NIH: PA films only), chosen before any model's output on them was seen."""


def label_row(shared: Path, film: Film) -> dict[str, str]:
    """The film's row of its ``labels.csv``.

    Raises:
        ValueError: the film is not listed there.
    """
    path = shared / film.labels
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["file"] == film.file:
                return row
    raise ValueError(f"{path} has no row for {film.file}")


def pixels_of(path: Path) -> np.ndarray:
    """The PNG's 8-bit greyscale pixels, as they are.

    Raises:
        ValueError: the PNG is not 8-bit greyscale (Pillow mode ``L``).
    """
    with PILImage.open(path) as png:
        if png.mode != "L":
            raise ValueError(f"{path} is Pillow mode {png.mode}, not 8-bit greyscale (L)")
        return np.asarray(png, dtype=np.uint8).copy()


def nih_spacing(row: dict[str, str], shape: tuple[int, int]) -> tuple[float, float]:
    """Pixel Spacing (row, column) in mm of an NIH film of ``shape`` from its original's.

    ``original_size`` is width x height, in the order of NIH's ``OriginalImage[Width, Height]``;
    the film is the whole original resized to ``shape`` (NIH's 1024 x 1024 PNGs are square
    whatever the original's shape), so each axis scales by its own factor. Rounded to 0.1 um.
    """
    width, height = (int(n) for n in row["original_size"].split("x"))
    spacing = float(row["original_pixel_spacing_mm"])
    rows, cols = shape
    return round(spacing * height / rows, 4), round(spacing * width / cols, 4)


def _comment(film: Film, row: dict[str, str]) -> str:
    png = f"{film.stem}.png"
    if film.collection == NIH:
        label = "PNEUMONIA" if row["label"] == "1" else "NORMAL"
        origin = f"NIH findings {row['nih_findings']}, mined from the radiology report by NLP; may be wrong"
    else:
        label = row["label_name"]
        subtype = {"bacteria": "bacterial", "virus": "viral"}.get(row["subtype"], row["subtype"])
        kind = f"{subtype}; " if label == "PNEUMONIA" else ""
        origin = f"{kind}graded by the source's expert physicians"
    return (f"medcam sample data, not for clinical use: {film.collection} film {png}; "
            f"label {label} ({origin}). See sample_data/ATTRIBUTION.md.")


def build(film: Film, shared: Path = SHARED) -> hd.sc.SCImage:
    """The Secondary Capture of ``film`` (see the module documentation)."""
    row = label_row(shared, film)
    pixels = pixels_of(shared / film.source)
    nih = film.collection == NIH

    def uid(what: str) -> str:
        return generate_uid(entropy_srcs=[film.source, what])

    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.MONOCHROME2,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "F"),  # required by highdicom; emptied below (not given by the source)
        study_instance_uid=uid("study"),
        series_instance_uid=uid("series"),
        series_number=1,
        sop_instance_uid=uid("instance"),
        instance_number=1,
        manufacturer="",
        patient_id=row["patient_id"],
        patient_name=f"{'NIH' if nih else 'Kermany'}^{film.stem}",
        patient_sex=row["sex"] if nih else None,
        pixel_spacing=nih_spacing(row, pixels.shape) if nih else None,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=f"{film.collection} {film.stem}",
        study_date=CAPTURE_DATE,  # a new study, the capture's own: the examination's date is not known
        study_time=CAPTURE_TIME,
        content_date=CAPTURE_DATE,
        content_time=CAPTURE_TIME,
    )
    sc.Modality = "CR"
    sc.ConversionType = "WSD"
    sc.BodyPartExamined = "CHEST"
    sc.PatientOrientation = []
    sc.WindowCenter, sc.WindowWidth = 128, 256  # 0-255 shown as they are, like the PNG, not contrast-stretched
    del sc.ImageType  # highdicom's DERIVED\SECONDARY\OTHER; the pixels are the film's, unprocessed
    sc.InstanceCreationDate, sc.InstanceCreationTime = CAPTURE_DATE, CAPTURE_TIME
    sc.DateOfSecondaryCapture, sc.TimeOfSecondaryCapture = CAPTURE_DATE, CAPTURE_TIME
    for item in sc.ContributingEquipmentSequence:  # highdicom names itself, with the time of the run
        item.ContributionDateTime = DT(f"{CAPTURE_DATE}{CAPTURE_TIME}")
    if nih:
        sc.PatientAge = f"{int(row['age']):03d}Y"
        sc.ViewPosition = row["view"]
    else:  # the copy was made from the source's JPEG files
        sc.LossyImageCompression = "01"
        sc.LossyImageCompressionMethod = "ISO_10918_1"
    sc.ImageComments = _comment(film, row)
    return sc


def main(argv: Sequence[str] | None = None) -> None:
    """Write every sample film next to this script (or into ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help=f"the shared data folder (default: {SHARED})")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the files (default: this folder)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for film in FILMS:
        build(film, args.shared).save_as(args.out / film.name, enforce_file_format=True)


if __name__ == "__main__":
    main()
