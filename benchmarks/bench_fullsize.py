"""``medcam score`` on full-size radiographs against the model alone and a MONAI pipeline.

One run:

1. makes ``--n`` DICOMs (new UIDs each) from six real full-size encodings in turn: RG1 (a
   1955x1841 15-bit chest CR, pydicom-data and ``tests/data/rg1/``) as explicit VR little
   endian, RLE, JPEG-LS lossless, JPEG 2000 lossless and JPEG 2000 lossy, and the RSNA
   1024x1024 JPEG baseline films (``../shared/data/cxr/rsna/dicom``) as they are: chest CRs
   stored as Secondary Capture, which the intended-use gate reads as captures of radiographs
   (it checks that every one of them is scored, not refused before decoding, which would
   flatter medcam's rate);
2. (a) the model alone: ``network(x)`` of the served model on inputs already decoded and
   prepared in memory (channels-last on the CPU, as ``medcam`` serves), batch by batch, just
   before and just after step 3, whose ratio is to their mean (the machine's speed drifts);
3. ``medcam score`` end to end (discovery, decoding workers, the single-pass model, the
   intended-use gate, durable rows), reduced-resolution decoding on (the default);
4. (c) the same with ``--full-decode``;
5. (b) a MONAI pipeline: ``LoadImage(reader="PydicomReader")``, ``EnsureChannelFirst``,
   ``Resize``, ``NormalizeIntensity`` in a ``monai.data.DataLoader`` with the same number of
   workers, the same weights, and ``monai.visualize.CAM`` for every class;
6. the ratios, per encoding (``--per-encoding``, ``--n`` files of each) and on the mix;
7. with ``--rss``, the RSS of one ``medcam score`` on the files read every second: the peak
   after the first fifth of the rows and at the end (flat: within 10%);
8. the CPU time that decoding and preparing one input takes (``load_record`` as the workers
   run it, in this process, one file after another), and that as a share of the core time
   the model alone takes per image (``cores / (a)``). With every core busy all the time,
   ``medcam score`` would reach ``1 / (1 + share)`` of (a); it can do a little better where
   the model's threads leave a core idle (waiting for each other), which decoding then fills.

Targets (issue 16): ``medcam score`` >= 0.8x the model alone on the mix, >= 4x the MONAI
pipeline, peak RSS flat as files grow.

    python benchmarks/bench_fullsize.py --n 504 --rss
    python benchmarks/bench_fullsize.py --n 120 --per-encoding
    python benchmarks/bench_fullsize.py --n 504 --device cuda --workers 8   # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import plain_forward, rss_trace

from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.models.preprocess import prepare
from medcam.runtime import retain_freed_memory
from medcam.scoring import ScoreOptions, default_workers, score
from medcam.scoring.dataset import load_record
from medcam.scoring.discover import Item

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "cxr" / "rsna" / "dicom"


def sources() -> dict[str, list[Path]]:
    """The six encodings and their source files."""
    corpus = {name: get_testdata_file(f"RG1_{name}.dcm", download=False) for name in ("UNCR", "J2KR", "J2KI")}
    found = {
        "explicit": [corpus["UNCR"]],
        "rle": [REPO / "tests" / "data" / "rg1" / "dicom" / "RG1_RLE.dcm"],
        "jpeg-ls": [REPO / "tests" / "data" / "rg1" / "dicom" / "RG1_JLSL.dcm"],
        "j2k-lossless": [corpus["J2KR"]],
        "j2k-lossy": [corpus["J2KI"]],
        "jpeg": sorted(RSNA.glob("*.dcm")),
    }
    missing = [name for name, files in found.items() if not files or not all(f and Path(str(f)).is_file()
                                                                               for f in files)]
    if missing:
        sys.exit(f"missing sources for {', '.join(missing)}: install pydicom-data and keep ../shared beside the repo")
    return {name: [Path(str(f)) for f in files] for name, files in found.items()}


def make_files(folder: Path, n: int, encodings: dict[str, list[Path]]) -> list[Path]:
    """``n`` copies in the encodings in turn, each with new study, series and instance UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(encodings)
    paths = []
    for i in range(n):
        name = names[i % len(names)]
        options = encodings[name]
        ds = pydicom.dcmread(options[(i // len(names)) % len(options)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{i:05d}_{name}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def model_alone(classifier: ServedModel, encodings: dict[str, list[Path]], n: int, batch_size: int) -> float:
    """Images/s of (a) on ``n`` inputs, the encodings' prepared images repeated."""
    prepared = [prepare(load_image(f), classifier.checkpoint.preprocess)[0] for files in encodings.values()
                for f in files]
    x = torch.stack([prepared[i % len(prepared)] for i in range(n)])
    return plain_forward(classifier, x, batch_size)


def medcam_score(classifier: ServedModel, folder: Path, out: Path, *, batch_size: int, workers: int,
                 reduce: bool) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = score([folder], classifier, ScoreOptions(out=out, batch_size=batch_size, workers=workers,
                                                      progress=False, reduce=reduce))
    seconds = time.perf_counter() - start
    assert summary.errors == 0 and summary.refused == 0, summary  # refused files would skip the model
    return summary.scored / seconds


def decode_cpu_ms(classifier: ServedModel, files: list[Path], *, reduce: bool, limit: int = 24) -> float:
    """Mean CPU milliseconds of one worker's ``load_record`` (read, gate, decode, display,
    prepare) over up to ``limit`` of ``files``, in this process, after one warm-up file."""
    chosen = files[:limit]
    preprocess, use = classifier.checkpoint.preprocess, classifier.intended_use
    load_record(Item(str(chosen[0]), named=True), preprocess, reduce=reduce, use=use)
    start = time.process_time()
    for f in chosen:
        record = load_record(Item(str(f), named=True), preprocess, reduce=reduce, use=use)
        assert record.ok, (f, record.reason)
    return (time.process_time() - start) / len(chosen) * 1000


def core_share(alone: float, decode_ms: float, cores: int) -> float:
    """Decoding CPU per image as a share of the core time the model alone takes per image
    (``alone`` images/s with ``cores`` cores)."""
    return decode_ms / 1000 / (cores / alone)


def monai_pipeline(classifier: ServedModel, files: list[Path], *, batch_size: int, workers: int) -> float:
    """Images/s of (b): MONAI's loader, transforms and CAM of every class, same weights."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, NormalizeIntensity, Resize
    from monai.visualize import CAM

    size = classifier.checkpoint.preprocess.size
    transforms = Compose([LoadImage(reader="PydicomReader", image_only=True), EnsureChannelFirst(),
                          Resize((size, size)), NormalizeIntensity()])
    loader = DataLoader(Dataset([str(f) for f in files], transforms), batch_size=batch_size, num_workers=workers)
    network = classifier.checkpoint.network.to(classifier.device)
    cam = CAM(nn_module=network, target_layers="class_layers.relu", fc_layers="class_layers.out")
    start = time.perf_counter()
    seen = 0
    with torch.no_grad():
        for batch in loader:
            x = batch.as_tensor().float().to(classifier.device)
            for k in range(len(classifier.classes)):
                cam(x, class_idx=torch.full((len(x),), k))
            seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=504, help="files (default 504: 84 of each encoding)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-encoding", action="store_true", help="also --n files of each encoding on its own")
    parser.add_argument("--rss", action="store_true", help="RSS of one medcam score run, read every second")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    retain_freed_memory()
    classifier = ServedModel(args.model, device=args.device)
    encodings = sources()
    print(f"model {classifier.checkpoint.model_id}, {classifier.checkpoint.preprocess.size} px; batch "
          f"{args.batch_size}, {args.workers} decoding workers, {torch.get_num_threads()} model threads, "
          f"device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        groups = {"mix": encodings}
        if args.per_encoding:
            groups |= {name: {name: files} for name, files in encodings.items()}
        cores = len(os.sched_getaffinity(0))
        print("| files | model alone (a) | medcam score | ratio to (a) | --full-decode (c) | score / (c) | "
              f"MONAI (b) | score / (b) | decoding CPU per image | share of the model's core time ({cores} cores) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for group, chosen in groups.items():
            folder = work / group
            files = make_files(folder, args.n, chosen)
            # the machine's speed drifts (a shared virtual machine): (a) is measured just before and
            # just after medcam score, and the ratio taken to their mean
            before = model_alone(classifier, chosen, args.n, args.batch_size)
            fast = medcam_score(classifier, folder, work / f"{group}.csv", batch_size=args.batch_size,
                                workers=args.workers, reduce=True)
            after = model_alone(classifier, chosen, args.n, args.batch_size)
            alone = (before + after) / 2
            full = medcam_score(classifier, folder, work / f"{group}-full.csv", batch_size=args.batch_size,
                                workers=args.workers, reduce=False)
            monai = (float("nan") if args.skip_monai else
                     monai_pipeline(classifier, files, batch_size=args.batch_size, workers=args.workers))
            # one file of each encoding in turn, as in the folder
            decode_ms = decode_cpu_ms(classifier, files, reduce=True)
            print(f"| {group} ({args.n}) | {alone:.1f} images/s ({before:.1f} before, {after:.1f} after) | "
                  f"{fast:.1f} | {fast / alone:.2f}x | {full:.1f} | "
                  f"{fast / full:.2f}x | {monai:.1f} | {fast / monai:.2f}x | {decode_ms:.0f} ms | "
                  f"{core_share(alone, decode_ms, cores):.2f} |", flush=True)
        if args.rss:
            out = work / "rss.csv"
            out.unlink(missing_ok=True)
            tenths, peak_at_fifth, peak = rss_trace(work / "mix", out, args.model, args.batch_size, args.workers,
                                                    args.n // 5)
            print(f"RSS of medcam score on {args.n} files, highest in each tenth (MB): {tenths}")
            print(f"peak RSS after {args.n // 5} rows: {peak_at_fifth:.0f} MB; at the end: {peak:.0f} MB "
                  f"({(peak / peak_at_fifth - 1) * 100 if peak_at_fifth else float('nan'):+.1f}%)")


if __name__ == "__main__":
    main()
