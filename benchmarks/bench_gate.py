"""What the intended-use gate refuses and what it lets through, on files nobody here wrote.

One run, with the bundled model (or ``--model``) and the statistics it ships:

1. **tag gate** on every image header of pydicom's and pydicom-data's test corpora whose
   modality is not CR/DX: how many are refused (target: all);
2. **the whole pipeline** (``medcam score``) on every DICOM file of those corpora: how many
   non-chest or lateral images come out ``ok`` (target: none);
3. **image gate alone**, on PNGs made from the corpora's CT, MR, US, NM, OT and SC images
   and from RG3 (an extremity CR), tags gone: the share refused (target >= 90%), and its AUROC
   against the in-distribution test images;
4. **false refusals** on the project's own held-out split (``--split``, the test CSV that
   ``medcam train`` wrote), per population (target: >= 95% of every population analysed).

    python benchmarks/bench_gate.py --split runs/adult/test.csv
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.data import get_testdata_files
from sklearn.metrics import roc_auc_score

from medcam.gate import ServedModel, check_tags, collect_features
from medcam.io.dicom import read_dicom
from medcam.scoring import ScoreOptions, read_results, score

RADIOGRAPHS = ("CR", "DX")
FOREIGN = ("CT", "MR", "US", "NM", "OT", "PT", "XA", "RF", "MG", "SC")


def corpus() -> list[tuple[Path, pydicom.Dataset]]:
    """Every readable DICOM image header of the installed test corpora."""
    found = []
    for path in map(Path, get_testdata_files()):
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" in ds and "SOPClassUID" in ds:
            found.append((path, ds))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--split", type=Path, required=True, help="held-out CSV (file,label,...,population)")
    args = parser.parse_args()
    classifier = ServedModel(args.model)
    if classifier.ood is None:
        raise SystemExit(f"{classifier.checkpoint.model_id} has no image-gate statistics; see medcam fit-ood")
    use = classifier.intended_use
    headers = corpus()
    foreign = [(p, ds) for p, ds in headers if str(ds.get("Modality", "")) not in RADIOGRAPHS]
    refused = [p for p, ds in foreign if check_tags(ds, use)]
    print(f"1. tag gate: {len(refused)} of {len(foreign)} non-CR/DX image headers of the corpora refused")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        for i, (path, _) in enumerate(headers):
            shutil.copy(path, folder / f"{i:04d}_{path.name}")
        out = Path(tmp) / "corpus.csv"
        score([folder], classifier, ScoreOptions(out=out, workers=0, progress=False))
        rows = list(read_results(out))
        ok = [r for r in rows if r["status"] == "ok"]
        print(f"2. pipeline on {len(rows)} corpus DICOM files: {len(ok)} ok, "
              f"{sum(r['status'] == 'not_analysed' for r in rows)} not analysed, "
              f"{sum(r['status'] == 'error' for r in rows)} errors; ok: "
              f"{', '.join(sorted({Path(r['path']).name.split('_', 1)[1] for r in ok})) or 'none'}")

        pngs, seen = [], set()
        for path, ds in headers:
            modality = str(ds.get("Modality", ""))
            extremity = str(ds.get("BodyPartExamined", "")).upper() == "EXTREMITY"
            if (modality not in FOREIGN and not extremity) or min(int(ds.Rows), int(ds.Columns)) < 64:
                continue
            try:
                pixels = (read_dicom(path).pixels[0] * 255).round().astype(np.uint8)
            except Exception:
                continue
            if pixels.tobytes() in seen:
                continue
            seen.add(pixels.tobytes())
            pngs.append(Path(tmp) / f"{modality}_{path.stem}.png")
            PILImage.fromarray(pixels).save(pngs[-1])
        outside = collect_features(classifier, pngs)
        outside_scores = classifier.ood.score(outside.features).numpy()

    with open(args.split, newline="") as f:
        samples = list(csv.DictReader(f))
    inside = collect_features(classifier, [s["file"] for s in samples])
    inside_scores = classifier.ood.score(inside.features).numpy()
    populations = np.array([samples[i].get("population", "") for i in inside.kept])
    threshold = classifier.ood.threshold
    share = float(np.mean(outside_scores > threshold))
    auroc = roc_auc_score(np.r_[np.zeros(len(inside_scores)), np.ones(len(outside_scores))],
                          np.r_[inside_scores, outside_scores])
    print(f"3. image gate alone on {len(outside_scores)} tag-less PNGs of CT/MR/US/NM/OT/SC/extremity images: "
          f"{share:.1%} refused; AUROC against the {len(inside_scores)} held-out images {auroc:.3f}")
    for population in sorted(set(populations)):
        mine = inside_scores[populations == population]
        print(f"4. {population or 'all'}: {np.mean(mine <= threshold):.1%} of {len(mine)} held-out images analysed "
              f"({np.sum(mine > threshold)} refused)")


if __name__ == "__main__":
    main()
