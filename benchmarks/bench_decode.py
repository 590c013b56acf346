"""DICOM decoding time per installed pydicom plugin, against pydicom's default choice.

For each file (the sample CR ``RG1`` in its four encodings and, when ``../shared`` is there,
one RSNA JPEG baseline file), pydicom's default choice (what ``ds.pixel_array`` uses) and
every installed plugin for its transfer syntax decode it ``--repeats`` times; the best time
is printed with its speed relative to the default, and what :func:`medcam.io.read_dicom`
uses is marked. All plugins must give the same pixels; the script stops when one does not.

    python benchmarks/bench_decode.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pixel_array

from medcam.io.dicom import _FAST_PLUGINS

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "cxr" / "rsna" / "dicom"


def best_ms(path: Path, plugin: str, repeats: int) -> tuple[float, np.ndarray]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pixels = pixel_array(path, decoding_plugin=plugin)
        times.append(time.perf_counter() - start)
    return min(times) * 1000, pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    files = sorted((REPO / "sample_data" / "dicom").glob("RG1_*.dcm"))
    files += sorted(RSNA.iterdir())[:1] if RSNA.is_dir() else []
    print(f"| file | transfer syntax | plugin | ms (best of {args.repeats}) | speed vs default |")
    print("|---|---|---|---|---|")
    for path in files:
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        default, reference = best_ms(path, "", args.repeats)
        medcam = _FAST_PLUGINS.get(str(syntax), "")
        for plugin in ("", *get_decoder(syntax).available_plugins):
            ms, pixels = (default, reference) if not plugin else best_ms(path, plugin, args.repeats)
            if not np.array_equal(pixels, reference):
                raise SystemExit(f"{path.name}: {plugin} decodes different pixels from the default plugin")
            name = (plugin or "pydicom's default") + (" (medcam)" if plugin == medcam else "")
            print(f"| {path.name} | {syntax.name} | {name} | {ms:.1f} | {default / ms:.2f}x |")


if __name__ == "__main__":
    main()
