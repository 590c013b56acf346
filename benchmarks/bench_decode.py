"""DICOM reading costs: decoding per installed pydicom plugin, and the display pipeline.

1. For each file (the sample CR ``RG1`` in its four encodings and, when ``../shared`` is
   there, one RSNA JPEG baseline file), pydicom's default choice (what ``ds.pixel_array``
   uses) and every installed plugin for its transfer syntax decode it ``--repeats`` times.
   The best wall time and the best CPU time of this process (all its threads: some plugins
   decode on several) are printed with the CPU time relative to the default; what
   :func:`medcam.io.read_dicom` uses is marked. Batch scoring keeps every core busy, so
   CPU time is what it pays. All plugins must give the same pixels; the script stops when
   one does not.
2. :func:`medcam.io.read_dicom` on the same files (decoding included), with the display
   steps (modality LUT, VOI, MONOCHROME1) run through its lookup table and on every pixel:
   best wall time of each, the ratio, and a check that the pixels are identical.

    python benchmarks/bench_decode.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pixel_array

from medcam.io import dicom, read_dicom
from medcam.io.dicom import _FAST_PLUGINS

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "cxr" / "rsna" / "dicom"


def best_ms(path: Path, plugin: str, repeats: int) -> tuple[float, float, np.ndarray]:
    """Best wall and best CPU milliseconds of decoding ``path`` with ``plugin``, and the pixels."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        pixels = pixel_array(path, decoding_plugin=plugin)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall) * 1000, min(cpu) * 1000, pixels


def read_ms(path: Path, repeats: int) -> tuple[float, np.ndarray]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pixels = read_dicom(path).pixels
        times.append(time.perf_counter() - start)
    return min(times) * 1000, pixels


def display_steps(files: list[Path], repeats: int) -> None:
    print("\n| file | size | read_dicom, display steps by lookup table (ms) | on every pixel (ms) | speed-up |")
    print("|---|---|---|---|---|")
    for path in files:
        table, fast = read_ms(path, repeats)
        lookup, dicom._lookup = dicom._lookup, lambda stored: (None, stored)
        try:
            whole, slow = read_ms(path, repeats)
        finally:
            dicom._lookup = lookup
        if not np.array_equal(fast, slow):
            raise SystemExit(f"{path.name}: the lookup table gives different pixels")
        rows, columns = fast.shape[1:]
        print(f"| {path.name} | {rows}x{columns} | {table:.1f} | {whole:.1f} | {whole / table:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    files = sorted((REPO / "tests" / "data" / "rg1" / "dicom").glob("RG1_*.dcm"))
    files += sorted(RSNA.iterdir())[:1] if RSNA.is_dir() else []
    print(f"| file | transfer syntax | plugin | wall ms | CPU ms (best of {args.repeats}) | CPU vs default |")
    print("|---|---|---|---|---|---|")
    for path in files:
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        default = best_ms(path, "", args.repeats)
        medcam = _FAST_PLUGINS.get(str(syntax), "")
        for plugin in ("", *get_decoder(syntax).available_plugins):
            wall, cpu, pixels = best_ms(path, plugin, args.repeats) if plugin else default
            if not np.array_equal(pixels, default[2]):
                raise SystemExit(f"{path.name}: {plugin} decodes different pixels from the default plugin")
            name = (plugin or "pydicom's default") + (" (medcam)" if plugin == medcam else "")
            print(f"| {path.name} | {syntax.name} | {name} | {wall:.1f} | {cpu:.1f} | {default[1] / cpu:.2f}x |")
    display_steps(files, args.repeats)


if __name__ == "__main__":
    main()
