"""Full versus reduced-resolution DICOM reading (``load_image(path, min_size=...)``).

For each file (pydicom-data's RG1 chest CR as uncompressed, JPEG 2000 lossless and lossy,
the RG1 fixtures' RLE and JPEG-LS re-encodings (tests/data/rg1), and the RSNA JPEG baseline files when ``../shared``
is there), :func:`medcam.io.load_image` reads it once at full resolution and once with
``min_size`` (default 320, the model's input size). Printed per file: the wall and CPU
milliseconds of each read (decode and display steps, one run each, after one untimed warm-up
read of the file), the CPU ratio full / reduced, the reduction and how it was done.

    python benchmarks/bench_reduce.py [--min-size 320]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pydicom.data import get_testdata_file

from medcam.io import Image, load_image
from medcam.io.openjpeg import library_version

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "cxr" / "rsna" / "dicom"


def files() -> list[Path]:
    found = [get_testdata_file(name, download=False)
             for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm")]
    paths = [Path(str(p)) for p in found if p is not None]
    paths += [p for p in (REPO / "tests" / "data" / "rg1" / "dicom" / name for name in ("RG1_RLE.dcm", "RG1_JLSL.dcm"))
              if p.is_file()]
    return paths + (sorted(RSNA.glob("*.dcm")) if RSNA.is_dir() else [])


def timed(path: Path, min_size: int | None) -> tuple[float, float, Image]:
    """Wall and CPU milliseconds of one ``load_image``, and the image."""
    start, start_cpu = time.perf_counter(), time.process_time()
    image = load_image(path, min_size=min_size)
    return (time.perf_counter() - start) * 1e3, (time.process_time() - start_cpu) * 1e3, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-size", type=int, default=320, help="the smallest side needed")
    args = parser.parse_args()
    print(f"OpenJPEG for reduced JPEG 2000: {library_version() or 'none (block means instead)'}")
    print(f"{'file':<28} {'full ms wall/cpu':>17} {'reduced ms wall/cpu':>20} {'cpu ratio':>9}  "
          "reduction")
    for path in files():
        load_image(path)  # warm-up: file cache, plugin imports
        full_wall, full_cpu, full = timed(path, None)
        wall, cpu, reduced = timed(path, args.min_size)
        how = reduced.display.split(";")[0] if reduced.reduction > 1 else "none"
        print(f"{path.name[:28]:<28} {full_wall:8.1f}/{full_cpu:<8.1f} {wall:10.1f}/{cpu:<9.1f} "
              f"{full_cpu / max(cpu, 1e-6):9.1f}  {full.shape} -> {reduced.shape}: {how}")


if __name__ == "__main__":
    main()
