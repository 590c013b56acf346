"""medcam.io.provenance: the loaders refuse medcam's own output (DICOM results, marked PNGs) and
nothing else: pydicom-data's RG1 chest CR, relabelled or not, and PNGs other software wrote."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medcam.errors import UnsupportedInputError
from medcam.export.png import save_png
from medcam.io import load_image, read_dataset, read_dicom
from medcam.io.provenance import PNG_TEXT, own_dicom, own_nifti, own_png
from tests.conftest import testdata_path as _testdata


def _contributor(manufacturer: str) -> DicomSequence:
    item = Dataset()
    item.Manufacturer = manufacturer
    return DicomSequence([item])


@pytest.mark.parametrize(("tags", "evidence"), [
    ({"Manufacturer": "medcam"}, "Manufacturer medcam"),
    ({"Manufacturer": "MEDCAM "}, "Manufacturer medcam"),
    ({"Manufacturer": "Acme", "ContributingEquipmentSequence": _contributor("medcam")},
     "ContributingEquipmentSequence names medcam"),
])
def test_own_dicom_names_the_evidence(tags: dict[str, object], evidence: str) -> None:
    ds = Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    assert own_dicom(ds) == f"medcam's own output ({evidence}), not a radiograph; score the original image instead"


@pytest.mark.parametrize("tags", [{}, {"Manufacturer": "Acme medcam"}, {"Manufacturer": "medcamx"},
                                  {"ContributingEquipmentSequence": _contributor("highdicom")}])
def test_other_equipment_is_not_medcam(tags: dict[str, object]) -> None:
    ds = Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    assert own_dicom(ds) is None


def test_own_png_reads_the_software_text() -> None:
    assert own_png({"Software": "medcam"}) == own_png({"Software": "medcam 0.1.0"}) is not None
    assert own_png({"Software": "Matplotlib version3.9"}) is None and own_png({}) is None


def test_a_radiograph_marked_as_medcams_is_refused_by_the_dicom_reader(tmp_path: Path) -> None:
    rg1 = _testdata("RG1_UNCR.dcm")
    assert read_dicom(rg1).shape == (1955, 1841)
    ds = pydicom.dcmread(rg1)
    ds.Manufacturer = "medcam"
    marked = tmp_path / "marked.dcm"
    ds.save_as(marked)
    with pytest.raises(UnsupportedInputError, match=r"marked\.dcm: medcam's own output \(Manufacturer medcam\)"):
        load_image(marked)
    with pytest.raises(UnsupportedInputError, match="medcam's own output"):
        read_dicom(marked, dataset=read_dataset(marked))


def test_png_marked_by_save_png_is_refused_and_others_are_read(tmp_path: Path) -> None:
    picture = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    ours, theirs, plain = tmp_path / "ours.png", tmp_path / "theirs.png", tmp_path / "plain.png"
    save_png(ours, picture)
    info = PngInfo()
    info.add_text("Software", "GIMP 2.10")
    PILImage.fromarray(picture).save(theirs, pnginfo=info)
    PILImage.fromarray(picture).save(plain)
    assert PILImage.open(ours).info["Software"] == "medcam"
    with pytest.raises(UnsupportedInputError) as refused:
        load_image(ours)
    assert refused.value.path == str(ours)
    assert refused.value.reason == ("medcam's own output (PNG Software=medcam), not a radiograph; "
                                    "score the original image instead")
    for path in (theirs, plain):
        np.testing.assert_array_equal(load_image(path).pixels[0], picture / np.float32(255))


def test_a_matplotlib_figure_saved_with_medcams_text_is_refused(tmp_path: Path) -> None:
    """As ``medcam evaluate`` saves its plots."""
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1], [0, 1])
    path = tmp_path / "roc.png"
    fig.savefig(path, metadata=PNG_TEXT)
    plt.close(fig)
    with pytest.raises(UnsupportedInputError, match="PNG Software=medcam"):
        load_image(path)


def test_nifti_written_by_medcam_is_refused_and_other_nifti_is_read(rg1_data: Path, tmp_path: Path) -> None:
    from medcam.export.nifti import write_nifti

    source = load_image(rg1_data / "nifti" / "RG1.nii.gz")  # its description starts "medcam sample": read
    written = write_nifti(tmp_path / "map.nii.gz", source, source.pixels, description="medcam CAM test")
    assert own_nifti(b"medcam output: CAM") and not own_nifti(b"medcam sample: RG1") and not own_nifti(b"")
    with pytest.raises(UnsupportedInputError, match=r"medcam's own output \(NIfTI description"):
        load_image(written)
