"""``medcam score`` end to end against the plain forward pass, and its memory as files grow.

One run:

1. makes ``--n-large`` DICOMs from ``tests/data/rg1/dicom/RG1_UNCR.dcm`` (CR chest, 15-bit,
   MONOCHROME1), resized to ``--size`` px, each with new UIDs, in five transfer syntaxes in
   turn (explicit VR little endian, RLE, JPEG-LS lossless, JPEG 2000 lossless, deflated;
   ``--syntaxes`` chooses others), in folders of ``--n`` files;
2. (a) plain forward: the first ``--n`` files decoded and prepared into memory first, then only
   ``network(x)`` of the checkpoint's network is timed, batch by batch, in the memory layout
   that ``medcam`` serves in (channels-last on the CPU, :func:`medcam.models.serving_memory_format`)
   and with its allocator setting (:mod:`medcam.runtime`); then (a0) in a fresh process with
   glibc's defaults (``MEDCAM_MALLOC=system``), and (a1) in PyTorch's default NCHW layout, to
   show what each setting is worth;
3. (b) ``medcam.scoring.score`` on the same ``--n`` files, in this process: discovery, decoding
   workers, the single-pass CAM model, durable CSV appends, the per-study file;
4. the ratio (b) / (a), target >= 0.9; (a) is timed before and after (b) and averaged, so that
   a change in background load during the run shows (the two timings are printed);
5. (c) when there are more cores than workers, (a) and (b) again with the model on
   ``cores - workers`` threads, so that decoding has cores of its own: the ratio then shows
   what the pipeline itself costs, rather than the CPU time that decoding takes from the model;
6. peak RSS of ``medcam score`` (a subprocess; the largest process of its tree, from
   ``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper) on ``--n`` and on ``--n-large`` files,
   ``--rss-repeats`` times each, alternating; target: the medians within 10%. Repeats, because
   the level at which a run's memory settles (within its first batches; it is flat after that)
   differs between runs by up to ~20% with the same files;
7. with ``--trace``, the RSS of one ``medcam score`` on ``--n-large`` files, read from
   ``/proc`` every second: the highest value in each tenth of the run, and the peak when
   ``--n`` rows were written against the peak at the end. That compares the peaks for
   ``--n`` and ``--n-large`` files without the run-to-run variation.

The model is the bundled one when ``medcam/weights/pneumonia_densenet121.pt`` exists, otherwise an
untrained DenseNet121 placeholder with the bundled configuration (224 px; weights do not change
the cost); the output says which.

    python benchmarks/bench_score.py                          # 1,000 files; RSS 1,000 vs 5,000
    python benchmarks/bench_score.py --n 200 --n-large 1000   # quick
    python benchmarks/bench_score.py --trace                  # and the RSS trace of a 5,000-file run
    python benchmarks/bench_score.py --n-large 0 --syntaxes j2k   # throughput on JPEG 2000 alone
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import torch
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medcam.config import ModelConfig, PreprocessConfig
from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.models import build_network, prepare, save_checkpoint
from medcam.models.checkpoint import bundled_checkpoint_path
from medcam.runtime import retain_freed_memory
from medcam.scoring import ScoreOptions, default_workers, score

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "tests" / "data" / "rg1" / "dicom" / "RG1_UNCR.dcm"
SYNTAXES = {  # name -> transfer syntax, encoding plugin
    "explicit": (ExplicitVRLittleEndian, None),
    "rle": (RLELossless, "pylibjpeg"),
    "jpegls": (JPEGLSLossless, "pyjpegls"),
    "j2k": (JPEG2000Lossless, "pylibjpeg"),
    "deflate": (DeflatedExplicitVRLittleEndian, None),
}
_PEAK_RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def make_dicoms(folder: Path, n: int, per_folder: int, size: int, syntaxes: list[str]) -> None:
    """``n`` files in folders of ``per_folder``, cycling through ``syntaxes`` (names in
    :data:`SYNTAXES`); 4 images a study."""
    ds = pydicom.dcmread(SOURCE)
    pixels = cv2.resize(ds.pixel_array, (size, size), interpolation=cv2.INTER_AREA)
    ds.Rows, ds.Columns = size, size
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    templates = []
    for syntax, plugin in (SYNTAXES[name] for name in syntaxes):
        t = copy.deepcopy(ds)
        if plugin is None:
            t.file_meta.TransferSyntaxUID = syntax
        else:
            t.compress(syntax, pixels, encoding_plugin=plugin)
        templates.append(t)
    study = ""
    for i in range(n):
        t = templates[i % len(templates)]
        if i % 4 == 0:
            study = generate_uid()
        t.SOPInstanceUID = t.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        t.StudyInstanceUID, t.SeriesInstanceUID = study, generate_uid()
        path = folder / f"part{i // per_folder:03d}" / f"{i:06d}"  # no extension: found by content
        path.parent.mkdir(parents=True, exist_ok=True)
        t.save_as(path, enforce_file_format=True)


def model_path(work: Path) -> tuple[str, str]:
    bundled = bundled_checkpoint_path()
    if bundled.is_file():
        return "bundled", f"bundled model ({bundled})"
    torch.manual_seed(0)
    path = work / "placeholder.pt"
    save_checkpoint(path, build_network(ModelConfig()).eval(), ModelConfig(), PreprocessConfig(), trained=False)
    return str(path), "UNTRAINED placeholder DenseNet121, 224 px (no bundled model yet)"


def prepared(classifier: ServedModel, files: list[Path]) -> tuple[torch.Tensor, float]:
    """The model inputs of ``files``, and images/s of decode + prepare in this process."""
    start = time.perf_counter()
    x = torch.stack([prepare(load_image(f), classifier.checkpoint.preprocess)[0] for f in files])
    return x, len(files) / (time.perf_counter() - start)


def forward_with_glibc_defaults(model: str, n: int, size: int, batch_size: int) -> float:
    """Images/s of :func:`plain_forward` in a fresh process that leaves the allocator alone."""
    command = [sys.executable, __file__, "--forward-only", str(n), "--model", model, "--size", str(size),
               "--batch-size", str(batch_size)]
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, "MEDCAM_MALLOC": "system"})
    return float(result.stdout.split()[-1])


def plain_forward(classifier: ServedModel, x: torch.Tensor, batch_size: int,
                  memory_format: torch.memory_format | None = None) -> float:
    """Images/s of the networks alone as served (the classifier's ``network(x)`` and, when it serves
    one, the lung segmenter on the same batch), batch by batch, after one warm-up batch, with the
    networks and their inputs in the layout that :class:`ServedModel` serves in (channels-last on
    the CPU) unless ``memory_format`` says otherwise."""
    memory_format = memory_format or classifier.memory_format
    network = copy.deepcopy(classifier.checkpoint.network).to(memory_format=memory_format)
    segmenter = classifier.segmenter
    x = x.contiguous(memory_format=memory_format)

    def run(batch: torch.Tensor) -> None:
        network(batch)
        if segmenter is not None:
            segmenter(batch)

    with torch.inference_mode():
        run(x[:batch_size])
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            run(x[i:i + batch_size])
    return len(x) / (time.perf_counter() - start)


def peak_rss_mb(folder: Path, out: Path, model: str, batch_size: int, workers: int) -> float:
    command = [sys.executable, "-m", "medcam", "score", str(folder), "--out", str(out), "--model", model,
               "--batch-size", str(batch_size), "--workers", str(workers)]
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS, *command], check=True, capture_output=True,
                            text=True)
    return int(result.stdout.split()[-1]) / 1024


def compare(classifier: ServedModel, x: torch.Tensor, folder: Path, out: Path, batch_size: int,
            workers: int) -> tuple[float, float]:
    """(a) and (b) as described above: images/s of the plain forward and of ``score``."""
    before = plain_forward(classifier, x, batch_size)
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = score([folder], classifier, ScoreOptions(out=out, batch_size=batch_size, workers=workers,
                                                      progress=False))
    seconds = time.perf_counter() - start
    assert summary.scored == len(x) and summary.errors == 0, summary
    after = plain_forward(classifier, x, batch_size)
    forward = (before + after) / 2
    end_to_end = summary.scored / seconds
    print(f"(a) plain forward on {len(x)} images prepared in memory: {forward:.2f} images/s "
          f"({before:.2f} before (b), {after:.2f} after)")
    print(f"(b) medcam score end to end on {summary.scored} files: {end_to_end:.2f} images/s")
    print(f"ratio (b)/(a): {end_to_end / forward:.2f}x (target >= 0.9x)", flush=True)
    return forward, end_to_end


def rss_trace(folder: Path, out: Path, model: str, batch_size: int, workers: int,
              n: int) -> tuple[list[int], float, float]:
    """Sample a ``medcam score`` process's memory every second.

    Returns the highest RSS (MB) in each tenth of the run, and its peak RSS (``VmHWM``, MB)
    when its results file first had ``n`` rows and at the end: the peak for ``n`` files
    against the peak for all of them, in one process.
    """
    command = [sys.executable, "-m", "medcam", "score", str(folder), "--out", str(out), "--model", model,
               "--batch-size", str(batch_size), "--workers", str(workers)]
    samples: list[int] = []
    peak_at_n = peak = 0.0
    with subprocess.Popen(command, stdout=subprocess.DEVNULL) as process:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            # KeyError: the process ended between poll() and the read (a zombie has no VmRSS)
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                fields = {line.split(":")[0]: int(line.split()[1]) // 1024
                          for line in status.read_text().splitlines() if line.startswith(("VmRSS:", "VmHWM:"))}
                samples.append(fields["VmRSS"])
                peak = fields["VmHWM"]
                if not peak_at_n and out.is_file() and sum(1 for _ in out.open()) > n:  # header + n rows
                    peak_at_n = peak
            time.sleep(1)
    tenths = [max(samples[i * len(samples) // 10:(i + 1) * len(samples) // 10], default=0) for i in range(10)]
    return tenths, peak_at_n, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="files for throughput and the small RSS run")
    parser.add_argument("--n-large", type=int, default=5000, help="files for the large RSS run (0: skip)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of the DICOMs made")
    parser.add_argument("--syntaxes", type=lambda v: v.split(","), default=list(SYNTAXES),
                        help=f"transfer syntaxes of the files made, in turn (default: {','.join(SYNTAXES)})")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rss-repeats", type=int, default=3, help="runs of each size for peak RSS")
    parser.add_argument("--trace", action="store_true", help="also trace the RSS of one run on --n-large files")
    parser.add_argument("--work", type=Path, help="folder for the files (kept; reused when it has them)")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--forward-only", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n_large and args.n_large < args.n:
        parser.error("--n-large must be at least --n")
    if unknown := set(args.syntaxes) - set(SYNTAXES):
        parser.error(f"unknown --syntaxes {', '.join(sorted(unknown))}; choose from {', '.join(SYNTAXES)}")
    retained = retain_freed_memory()
    if args.forward_only:  # the child of forward_with_glibc_defaults: random inputs cost the same
        classifier = ServedModel(args.model)
        size = classifier.checkpoint.preprocess.size
        print(plain_forward(classifier, torch.rand(args.forward_only, 1, size, size), args.batch_size))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        total = max(args.n, args.n_large)
        mix = "" if args.syntaxes == list(SYNTAXES) else "_" + "-".join(args.syntaxes)
        data = work / f"dicom_{args.size}px_{total}_by_{args.n}{mix}"
        if sum(1 for p in data.rglob("*") if p.is_file()) < total:
            start = time.perf_counter()
            make_dicoms(data, total, args.n, args.size, args.syntaxes)
            print(f"made {total} DICOMs ({args.size}x{args.size}, {', '.join(args.syntaxes)}) in "
                  f"{time.perf_counter() - start:.0f} s")
        small = data / "part000"
        files = sorted(small.iterdir())[:args.n]
        model, what = model_path(work)
        classifier = ServedModel(model)
        cores, threads = os.cpu_count() or 1, torch.get_num_threads()
        print(f"model: {what}; CPU, torch threads {threads}, {cores} cores, batch {args.batch_size}, "
              f"workers {args.workers}; allocator keeps freed memory: {retained}")

        x, decode = prepared(classifier, files)
        print(f"decode + prepare in this process (not the workers): {decode:.1f} images/s", flush=True)
        default = forward_with_glibc_defaults(model, len(files), classifier.checkpoint.preprocess.size,
                                              args.batch_size)
        print(f"(a0) plain forward with glibc's allocator defaults, fresh process: {default:.2f} images/s")
        if classifier.memory_format != torch.contiguous_format:
            nchw = plain_forward(classifier, x, args.batch_size, torch.contiguous_format)
            print(f"(a1) plain forward in the default NCHW layout, not {classifier.memory_format}: "
                  f"{nchw:.2f} images/s")
        forward, end_to_end = compare(classifier, x, small, work / "results.csv", args.batch_size, args.workers)
        print(f"the allocator setting: plain forward (a)/(a0) {forward / default:.2f}x; "
              f"medcam score (b)/(a0) {end_to_end / default:.2f}x")
        if cores > args.workers > 0:
            torch.set_num_threads(cores - args.workers)
            print(f"(c) the model on {cores - args.workers} threads, decoding on the other "
                  f"{args.workers} core(s):")
            compare(classifier, x, small, work / "results.csv", args.batch_size, args.workers)
            torch.set_num_threads(threads)
        del x

        if args.n_large and args.rss_repeats:
            rss: dict[int, list[float]] = {args.n: [], args.n_large: []}
            for _ in range(args.rss_repeats):
                for n, folder in ((args.n, small), (args.n_large, data)):
                    result = work / f"rss_{n}.csv"
                    result.unlink(missing_ok=True)
                    rss[n].append(peak_rss_mb(folder, result, model, args.batch_size, args.workers))
                    print(f"peak RSS, medcam score on {n} files: {rss[n][-1]:.0f} MB", flush=True)
            small_mb, large_mb = (statistics.median(rss[n]) for n in (args.n, args.n_large))
            print(f"median peak RSS: {small_mb:.0f} MB on {args.n} files, {large_mb:.0f} MB on {args.n_large}: "
                  f"{large_mb / small_mb - 1:+.1%} (target within 10%)")
        if args.trace and args.n_large:
            result = work / "rss_trace.csv"
            result.unlink(missing_ok=True)
            trace, at_n, at_end = rss_trace(data, result, model, args.batch_size, args.workers, args.n)
            print(f"RSS (MB) of medcam score on {args.n_large} files, highest in each tenth of the run: "
                  f"{', '.join(map(str, trace))}")
            print(f"same run, peak RSS when {args.n} files were scored: {at_n:.0f} MB; after all "
                  f"{args.n_large}: {at_end:.0f} MB: {at_end / at_n - 1:+.1%} (target within 10%)")

if __name__ == "__main__":
    main()
