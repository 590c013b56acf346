"""``medcam listen`` from receipt to results stored, against ``medcam score`` on the same files.

One run, on loopback: ``--n`` full-size chest CRs (pydicom-data's RG1, 1955x1841, 15-bit,
explicit VR, each with its own UIDs, in series of ``--series-size``) are sent by C-STORE to a
``medcam listen`` process, which scores each series once quiet and sends an SR per image to
an archive (a pynetdicom storage SCP in this process). The figure is images per second from
the first C-STORE to the last SR stored, the settle time included. The baseline is the same
pipeline with no network: :func:`medcam.scoring.score` on the same files with the node's
options (SR of every image, decoding in the main process, the node's batch size).

    python benchmarks/bench_node.py
    python benchmarks/bench_node.py --n 96 --settle 1 --threads 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import torch
from pydicom.uid import generate_uid

from medcam.gate import ServedModel
from medcam.scoring import ScoreOptions, score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import testdata_path  # noqa: E402
from tests.node.peers import Archive, free_port, send  # noqa: E402


def make_series(folder: Path, n: int, series_size: int) -> list[Path]:
    source = pydicom.dcmread(testdata_path("RG1_UNCR.dcm"))
    paths = []
    for i in range(n):
        if i % series_size == 0:
            study, series = generate_uid(), generate_uid()
        ds = source.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"cr{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--series-size", type=int, default=8)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        paths = make_series(work / "images", args.n, args.series_size)
        print(f"{args.n} full-size CRs (1955x1841, explicit VR) in series of {args.series_size}; "
              f"model {args.model}; {args.threads} threads; settle {args.settle:g} s")

        options = ScoreOptions(out=work / "baseline.csv", regions=work / "baseline", region_formats=("sr",),
                               report_all=True, batch_size=args.batch_size, workers=0, progress=False)
        classifier = ServedModel(args.model)
        start = time.perf_counter()
        summary = score([work / "images"], classifier, options)
        baseline = summary.scored / (time.perf_counter() - start)
        print(f"medcam score (no network):            {baseline:6.2f} images/s")
        del classifier

        archive = Archive().start()
        port = free_port()
        node = subprocess.Popen(
            [str(Path(sys.executable).parent / "medcam"), "listen", "--port", str(port), "--spool", str(work / "spool"),
             "--send-to", archive.peer, "--settle", str(args.settle), "--model", args.model,
             "--threads", str(args.threads), "--batch-size", str(args.batch_size)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert node.stderr is not None
            for line in node.stderr:
                if "listening as" in line:
                    break
            else:
                sys.exit("medcam listen did not start")
            threading.Thread(target=lambda: [None for _ in node.stderr or ()], daemon=True).start()
            start = time.perf_counter()
            statuses = send(paths, port)
            assert statuses == [0] * len(paths), statuses
            received = time.perf_counter() - start
            archive.wait_for(len(paths), timeout=3600)
            seconds = time.perf_counter() - start
        finally:
            node.terminate()
            node.wait(60)
            archive.stop()
        rate = len(paths) / seconds
        print(f"medcam listen, C-STORE in to SR stored: {rate:6.2f} images/s "
              f"({rate / baseline:.2f}x of medcam score; receiving alone took {received:.1f} s)")


if __name__ == "__main__":
    main()
