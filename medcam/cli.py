"""The ``medcam`` command: one entry point, one subcommand per job; flags map onto library calls."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from medcam import __version__
from medcam.commands import EXIT_FATAL, EXIT_INTERRUPTED
from medcam.errors import MedcamError
from medcam.runtime import retain_freed_memory

if TYPE_CHECKING:  # the subcommands import what they need when they run: --help stays fast
    from medcam.io import VOI
    from medcam.regions import RegionOptions

__all__ = ["main"]


def _voi(args: argparse.Namespace) -> VOI:
    """The VOI step asked for: ``--window CENTER WIDTH`` when given, else ``--voi``."""
    return (args.window[0], args.window[1]) if args.window else args.voi


def _train(args: argparse.Namespace) -> int:
    import torch

    from medcam.config import load_config
    from medcam.training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    train(load_config(args.config), args.out, device=args.device)
    return 0


def _train_lungs(args: argparse.Namespace) -> int:
    from medcam.training.lungs import load_lungs_config, train_lungs

    train_lungs(load_lungs_config(args.config), args.out)
    return 0


def _fit_lung_gate(args: argparse.Namespace) -> int:
    from medcam.gate.served import ServedModel
    from medcam.training.lung_gate import fit_lung_gate, frontal_splits

    val = Path(args.splits) / "val.csv"
    if not val.is_file():
        frontal_splits(args.classifier_config, args.lungs_config, args.rsna, args.splits)
    model = ServedModel(args.model, segmenter=_segmenter(args), check_gate=False)
    model_id = fit_lung_gate(model, val, args.out, view_quantile=args.view_quantile, quantile=args.quantile)
    print(f"wrote {args.out} ({model_id})")
    return 0


def _region_options(args: argparse.Namespace) -> RegionOptions:
    from medcam.regions import RegionOptions, parse_threshold

    rule, value = parse_threshold(args.threshold)
    return RegionOptions(rule=rule, value=value, smoothing=args.smooth, min_area=args.min_area)


def _predict(args: argparse.Namespace) -> int:
    from medcam.commands import exit_status, predict
    from medcam.gate.served import ServedModel

    options = predict.predict_options(args.out, cam_class=args.cam_class, colour_map=args.colour_map,
                                      opacity=args.opacity, batch_size=args.batch_size, voi=_voi(args),
                                      method=args.method, workers=0,
                                      ignore_intended_use=args.ignore_intended_use)
    model = ServedModel(args.model, device=args.device, segmenter=_segmenter(args))
    return exit_status(predict.main(args.paths, model, options))


def _score(args: argparse.Namespace) -> int:
    import torch

    from medcam.commands import score
    from medcam.scoring import ScoreOptions, default_workers

    if args.threads and args.engine == "local":
        torch.set_num_threads(args.threads)
    options = ScoreOptions(out=Path(args.out), cams=Path(args.cams) if args.cams else None,
                           regions=Path(args.regions) if args.regions else None,
                           region_formats=tuple(args.formats.split(",")), region_options=_region_options(args),
                           cam_class=args.cam_class, batch_size=args.batch_size,
                           workers=default_workers() if args.workers is None else args.workers, voi=_voi(args),
                           reduce=not args.full_decode, ignore_intended_use=args.ignore_intended_use,
                           report_all=args.report_all)
    return score.main(args.inputs, args.model, options, device=args.device, engine=args.engine,
                      ray_address=args.ray_address, actors=args.actors, study=args.study, since=args.since,
                      stow_url=args.stow, segmenter=_segmenter(args))


def _export(args: argparse.Namespace) -> int:
    from medcam.commands import exit_status, export
    from medcam.gate.served import ServedModel

    options = export.export_options(args.out, cam_class=args.cam_class, region_formats=args.formats,
                                    region_options=_region_options(args), batch_size=args.batch_size,
                                    voi=_voi(args), workers=0, ignore_intended_use=args.ignore_intended_use)
    model = ServedModel(args.model, device=args.device, segmenter=_segmenter(args))
    return exit_status(export.main(args.paths, model, options))


def _listen(args: argparse.Namespace) -> int:
    import torch

    from medcam.commands import listen
    from medcam.node.scp import ReceiveOptions
    from medcam.node.service import NodeOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    receive = ReceiveOptions(ae_title=args.ae_title, host=args.host, port=args.port, allow_ae=tuple(args.allow_ae),
                             max_bytes=int(args.max_size_mb * 2**20), timeout=args.timeout)
    options = NodeOptions(spool=Path(args.spool), formats=tuple(args.formats.split(",")), settle=args.settle,
                          receive=receive, region_options=_region_options(args), batch_size=args.batch_size,
                          ignore_intended_use=args.ignore_intended_use)
    destination = listen.destination_of(args.send_to, args.stow, calling_ae=receive.ae_title, timeout=args.timeout)
    return listen.main(args.model, options, destination, device=args.device, debug=args.debug,
                       segmenter=_segmenter(args))


def _evaluate(args: argparse.Namespace) -> int:
    from medcam.gate.served import ServedModel
    from medcam.training.evaluate import evaluate

    result = evaluate(ServedModel(args.model, device=args.device, segmenter=_segmenter(args)), args.data, args.out,
                      batch_size=args.batch_size, command=shlex.join(["medcam", *sys.argv[1:]]), boxes=args.boxes,
                      regions=_region_options(args))
    m = result.metrics
    low, high = m["auroc_ci95"]
    print(f"n={m['n']} ({m['n_positive']} positive)  AUROC {m['auroc']:.4f} (95% CI {low:.4f}-{high:.4f})  "
          f"threshold {m['threshold']:.3f}: sensitivity {m['sensitivity']:.3f}, "
          f"specificity {m['specificity']:.3f}  ECE {m['ece']:.3f}")
    for name, group in m["groups"].items():
        if group.get("auroc") is not None:
            print(f"  {name}: n={group['n']}  AUROC {group['auroc']:.4f} (95% CI {group['auroc_ci95'][0]:.4f}-"
                  f"{group['auroc_ci95'][1]:.4f})  sensitivity {group['sensitivity']:.3f}, specificity "
                  f"{group['specificity']:.3f}  ECE {group['ece']:.3f}")
    if "localisation" in m:
        loc = m["localisation"]
        print(f"localisation on {loc['n_with_boxes']} image(s) with boxes: pointing game {loc['pointing_game']}, "
              f"mean best region IoU {loc['mean_best_iou']}")
    print(f"wrote metrics.json, roc.png, reliability.png, confusion.png to {args.out}")
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from medcam.training.train import recalibrate

    try:
        groups = None
        if args.group:
            groups = {}
            for text in args.group:
                name, _, held = text.partition("=")
                if not name or not held:
                    raise ValueError(f"--group {text!r}: write NAME=POPULATION[,POPULATION...]")
                groups[name.strip()] = [p.strip() for p in held.split(",") if p.strip()]
        model_id = recalibrate(args.model, args.data, out=args.out, sensitivity=args.sensitivity,
                               bias=not args.temperature_only, batch_size=args.batch_size, groups=groups,
                               train=args.train, fit_on=args.fit_on)
    except ValueError as err:  # no target sensitivity known, or data that cannot fix a threshold
        raise MedcamError(str(err)) from err
    print(f"wrote {args.out} ({model_id})")
    return 0


def _fit_ood(args: argparse.Namespace) -> int:
    from medcam.commands.gate import fit_ood_command

    fit_ood_command(args.model, args.data, args.val, args.out, batch_size=args.batch_size,
                    quantile=args.quantile, reference=args.reference)
    return 0


def _intended_use(args: argparse.Namespace) -> int:
    from medcam.commands.gate import intended_use_command

    changes = {k: v for k, v in vars(args).items()
               if k in ("modalities", "views", "body_parts", "min_age", "max_age", "min_size") and v is not None}
    if args.allow_secondary_capture is not None:
        changes["allow_secondary_capture"] = args.allow_secondary_capture
    intended_use_command(args.model, changes, args.out)
    return 0


def _model_card(args: argparse.Namespace) -> int:
    from medcam.models.checkpoint import load_checkpoint
    from medcam.models.lungs import load_segmenter
    from medcam.training.modelcard import render_model_card

    evaluations = dict(item.split("=", 1) for item in args.eval)
    notes = Path(args.notes).read_text() if args.notes else ""
    segmenter = None if args.segmenter.lower() == "none" else load_segmenter(args.segmenter)
    card = render_model_card(load_checkpoint(args.model), evaluations, notes=notes, segmenter=segmenter)
    Path(args.out).write_text(card)
    print(f"wrote {args.out}")
    return 0


def _review(args: argparse.Namespace) -> int:
    from medcam.review import ReviewConfig, default_db, launch
    from medcam.review.worklist import Limits

    folder = Path(args.folder) if args.folder else None
    limits = Limits(max_bytes=args.max_upload_mb * 2**20, max_pixels=args.max_pixels)
    config = ReviewConfig(folder=folder, db=Path(args.db) if args.db else default_db(folder), model=args.model,
                          limits=limits, segmenter=args.segmenter)
    return launch(config, host=args.host, port=args.port)


def _monitor(args: argparse.Namespace) -> int:
    from medcam.monitor import MonitorOptions, monitor, print_result

    options = MonitorOptions(inputs=tuple(args.results), out=Path(args.out), reference=tuple(args.reference),
                             baseline_periods=args.baseline_periods, since=args.since, period=args.period, by=args.by,
                             by_study_date=args.by_study_date, reviews=Path(args.reviews) if args.reviews else None,
                             model=args.model, on_alarm=args.on_alarm,
                             command=shlex.join(["medcam", *sys.argv[1:]]))
    result = monitor(options)
    print_result(result)
    return result.exit_status


def _names(text: str) -> list[str]:
    """A comma-separated list of names, as ``--fit-on pediatric,rsna`` gives it."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more names separated by commas")
    return names


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bundled", help="checkpoint path, or 'bundled' (default)")


def _add_segmenter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--segmenter", default="bundled",
                   help="lung segmenter checkpoint, 'bundled' (default) or 'none' (then no lung mask, lung_evidence "
                        "or frontal-view check)")


def _segmenter(args: argparse.Namespace) -> str | None:
    return None if args.segmenter.lower() == "none" else args.segmenter


def _add_display(p: argparse.ArgumentParser) -> None:
    """``--voi`` and ``--window``: how DICOM pixels become the image (see :mod:`medcam.io.dicom`)."""
    p.add_argument("--voi", choices=["auto", "lut", "window", "none"], default="auto",
                   help="DICOM VOI step (default: auto = VOI LUT, else window, else percentiles)")
    p.add_argument("--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"),
                   help="DICOM window to use instead of the file's")


def _add_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ignore-intended-use", action="store_true",
                   help="research only: analyse images outside the model's intended use too (wrong modality, "
                        "view, body part, age, or unlike its training images); their rows say so")


def _add_regions(p: argparse.ArgumentParser) -> None:
    """How regions are cut from a map (see :class:`medcam.regions.RegionOptions`)."""
    p.add_argument("--threshold", default="fraction:0.5",
                   help="region rule: a fraction of the map's maximum ('0.5' or 'fraction:0.5', the default), "
                        "a calibrated probability ('absolute:0.7') or 'otsu'")
    p.add_argument("--smooth", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian smoothing sigma in mm (pixels when the spacing is unknown; default 0: none)")
    p.add_argument("--min-area", type=float, default=0.0, metavar="AREA",
                   help="drop regions smaller than this, in mm^2 (pixels when the spacing is unknown)")


class _Parser(argparse.ArgumentParser):
    """Bad arguments are fatal like any other refusal: exit status 1, not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FATAL, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medcam", description=__doc__,
                     epilog="Exit status of predict, export and score: 0 every input analysed; 3 finished, some "
                            "inputs not analysed or failed (their rows say why); 1 fatal; 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"medcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a classifier from a YAML config (resumes)")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/pneumonia_densenet121.yaml")
    p.add_argument("--out", default="runs/train", help="run folder (resumed if it holds last.pt)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="where the network trains: cpu (default), cuda, cuda:1 ...; "
                   "a run may resume on another device")
    p.set_defaults(func=_train)

    p = sub.add_parser("train-lungs", help="train the lung-field segmenter from a YAML config (resumes)")
    p.add_argument("--config", default="configs/lungs.yaml", help="YAML config (default: configs/lungs.yaml)")
    p.add_argument("--out", default="runs/lungs", help="run folder (resumed if it holds last.pt)")
    p.set_defaults(func=_train_lungs)

    p = sub.add_parser("fit-lung-gate", help="set the frontal-view check and the lung_evidence threshold of a "
                                             "checkpoint on frontal validation films")
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--splits", default="runs/frontal",
                   help="folder of the frontal populations' val.csv/test.csv (written first when absent)")
    p.add_argument("--classifier-config", default="configs/pneumonia_three_sources.yaml",
                   help="the classifier's training config, whose splits give the pediatric and adult films")
    p.add_argument("--lungs-config", default="configs/lungs.yaml", help="the segmenter's config (its split)")
    p.add_argument("--rsna", default="../shared/data/rsna/labels.csv", help="the RSNA challenge films' labels")
    p.add_argument("--view-quantile", type=float, default=0.995,
                   help="each frontal population's view limit: this quantile of its validation films' distances")
    p.add_argument("--quantile", type=float, default=0.05,
                   help="lung_evidence quantile of flagged pneumonia films that sets the threshold")
    p.add_argument("--out", required=True, help="the checkpoint to write")
    p.set_defaults(func=_fit_lung_gate)

    p = sub.add_parser("predict", help="probabilities, CAM overlays and raw maps for images",
                       description="Score DICOM, NIfTI, PNG or JPEG files (folders recursively).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--out", default="medcam-out", help="output folder (default: medcam-out)")
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--class", dest="cam_class", help="class whose map is overlaid (default: the positive class)")
    p.add_argument("--colour-map", "--colormap", default="jet", help="matplotlib colour map (default: jet)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    _add_display(p)
    p.add_argument("--method", choices=["cam", "gradcam", "gradcam++", "occlusion"], default="cam",
                   help="how the maps are made: cam (single pass, default), or for comparison gradcam, "
                        "gradcam++ (a forward and backward pass per class) or occlusion (many passes)")
    _add_gate(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("score", help="score folders of images into a resumable results CSV",
                       description="Score every DICOM, NIfTI, PNG or JPEG file under INPUT (folders "
                       "recursively; DICOM recognised by content) into one CSV row per file, appended "
                       "durably: re-run the same command after a crash or Ctrl-C to resume. Also writes "
                       "RESULTS.studies.csv (one row per study, highest probability first) and "
                       "RESULTS.skipped.csv (files passed over, with the reason). Exit status: 0 every input "
                       "analysed, 3 some inputs not analysed or failed (their rows say why), 1 fatal, "
                       "130 interrupted. An INPUT dicomweb:URL is an archive's DICOMweb service: its chest "
                       "radiographs are fetched into RESULTS.dicomweb/ (resumed too) and scored.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders, or dicomweb:URL (e.g. dicomweb:http://pacs:8042/dicom-web)")
    p.add_argument("--study", metavar="UID", help="fetch only this study from the dicomweb: input")
    p.add_argument("--since", metavar="YYYYMMDD", help="fetch the studies of this date or later from the dicomweb: "
                   "input (default: every study)")
    p.add_argument("--stow", metavar="URL", help="after scoring, store the DICOM results of --regions (sr, seg, sc, "
                   "gsps) at this DICOMweb base URL by STOW-RS; a rerun stores only what is new")
    p.add_argument("--out", required=True, metavar="RESULTS.csv", help="results CSV (resumed if it exists)")
    p.add_argument("--cams", metavar="DIR", help="also write each image's CAM overlay and raw map here")
    p.add_argument("--regions", metavar="DIR",
                   help="also export the pneumonia regions of every flagged image here (as medcam export does)")
    p.add_argument("--formats", default="seg,sc,sr,nifti,png,json",
                   help="formats of --regions, from seg,sc,sr,gsps,nifti,png,json,csv,lungs "
                        "(default: seg,sc,sr,nifti,png,json)")
    p.add_argument("--class", dest="cam_class", help="class whose map is overlaid and gives the regions, any case "
                   "(default: the positive class)")
    p.add_argument("--report-all", action="store_true",
                   help="with --regions and sr among --formats: the SR of every analysed image, not only of flagged "
                        "ones, so that the archive holds a result for each (the other formats stay for flagged images)")
    _add_regions(p)
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    p.add_argument("--workers", type=int,
                   help="decoding processes (default: one per CPU core, up to 8; 0 decodes in the main process)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int,
                   help="CPU threads of the model (default: torch's choice, all cores; the local engine)")
    _add_display(p)
    _add_gate(p)
    p.add_argument("--full-decode", action="store_true",
                   help="decode every image at full resolution for scoring (default: large DICOMs are decoded "
                        "at the resolution the model needs, and read in full only for the files they get)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help='local (default), or ray (pip install "medcam-screening[distributed]")')
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="Ray cluster to use: 'auto' for the one this machine belongs to, or ray://HOST:PORT "
                   "(default: $RAY_ADDRESS if set, else a local Ray instance)")
    p.add_argument("--actors", type=int, default=1,
                   help="Ray model actors; with --device cuda one GPU each (default: 1)")
    p.set_defaults(func=_score)

    p = sub.add_parser("listen", help="run as a DICOM node: receive images (C-STORE), score, send results back",
                       description="Receive chest radiographs by C-STORE (C-ECHO answered), write each durably "
                       "to the spool before acknowledging it, score each series once it has been quiet for "
                       "--settle seconds (the pipeline of medcam score, one results CSV per series in "
                       "SPOOL/results), and send its DICOM results (an SR for every analysed image; SEG, SC, "
                       "GSPS for flagged ones when asked) to --send-to by C-STORE or to --stow by STOW-RS, "
                       "retrying while the destination is down. Safe to kill at any moment: a restart "
                       "resumes. Stops on SIGTERM, SIGHUP or Ctrl-C.")
    p.add_argument("--ae-title", default="MEDCAM", help="this node's AE title (default: MEDCAM)")
    p.add_argument("--port", type=int, default=11112, help="TCP port (default: 11112)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for all)")
    p.add_argument("--spool", required=True, metavar="DIR",
                   help="the node's folder: received images, results files, the outbox; nothing is written "
                        "outside it")
    p.add_argument("--send-to", metavar="AET@HOST:PORT", help="send results by C-STORE to this AE")
    p.add_argument("--stow", metavar="URL", help="send results by STOW-RS to this DICOMweb base URL instead")
    p.add_argument("--formats", default="sr",
                   help="DICOM results to send, from sr,seg,sc,gsps,lungs (default: sr; lungs: the lung "
                        "fields' SEG); the SR goes for every analysed image, the others for flagged images")
    p.add_argument("--settle", type=float, default=10.0, metavar="SECONDS",
                   help="score a series once nothing has arrived for it for this long (default: 10)")
    p.add_argument("--allow-ae", nargs="+", default=[], metavar="AET",
                   help="calling AE titles allowed to send (default: any)")
    p.add_argument("--max-size-mb", type=float, default=512.0,
                   help="largest instance accepted, in MiB (default: 512)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="network and DIMSE timeout, long enough for large radiographs on slow links (default: 300)")
    _add_regions(p)
    _add_model(p)
    _add_segmenter(p)
    _add_gate(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, help="CPU threads of the model (default: torch's choice)")
    p.add_argument("--debug", action="store_true", help="debug log lines (still no patient data)")
    p.set_defaults(func=_listen)

    p = sub.add_parser("export", help="CAM regions of one class as DICOM SEG/SC, NIfTI, PNG, COCO JSON and CSV",
                       description="Find the regions of a class's activation map and export them for "
                                   "annotation tools (DICOM, NIfTI, PNG or JPEG inputs; folders recursively).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--out", default="medcam-export", help="output folder (default: medcam-export)")
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--class", dest="cam_class", help="class whose map gives the regions, any case "
                   "(default: the positive class)")
    p.add_argument("--formats", default="all",
                   help="comma-separated: seg,sc,sr,gsps,nifti,png,json,csv,lungs (default: all)")
    _add_regions(p)
    _add_gate(p)
    _add_display(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=_export)

    p = sub.add_parser("evaluate", help="AUROC with CI, calibration and operating point on labelled data")
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--data", required=True,
                   help="CSV (file,label[,patient_id][,population][,view]) or a folder per class")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--boxes", metavar="BOXES.csv",
                   help="reference boxes (file,x,y,width,height in source pixels): pointing game and region IoU")
    _add_regions(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("recalibrate", help="refit a checkpoint's calibration and threshold on validation data",
                       description="Refit the calibration map (temperature and class bias, populations weighing the "
                       "same; or one map per --group of populations) and the one operating threshold (the target "
                       "sensitivity in every population) on "
                       "labelled validation images - never the test split; the weights are kept.")
    _add_model(p)
    p.add_argument("--data", required=True, metavar="VAL.csv",
                   help="labelled images with a population column, e.g. the val.csv a training run writes")
    p.add_argument("--out", required=True, metavar="MODEL.pt", help="the recalibrated checkpoint")
    p.add_argument("--sensitivity", type=float, help="reached in every population (default: the training config's)")
    p.add_argument("--temperature-only", action="store_true", help="fit a temperature alone, no class bias")
    p.add_argument("--group", action="append", metavar="NAME=POP[,POP...]",
                   help="one calibration map per group of populations, chosen per image from its features by a "
                   "linear discriminant fitted on --train (repeat for every group: --group pediatric=pediatric "
                   "--group adult=adult,rsna)")
    p.add_argument("--train", metavar="TRAIN.csv", help="the training images (with a population column) the "
                   "discriminant behind --group is fitted on")
    p.add_argument("--fit-on", type=_names, metavar="POP[,POP...]",
                   help="only these populations' labels fit the maps and the threshold; the others are calibrated "
                   "and reported (e.g. --fit-on pediatric,rsna leaves out labels mined from reports)")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=_recalibrate)

    p = sub.add_parser("fit-ood", help="fit the image gate's out-of-distribution statistics into a checkpoint",
                       description="Fit means (one per population and class, and one for the reference films) and "
                       "a shrunk covariance (Ledoit-Wolf) of the model's pooled features on the training images, "
                       "set the refusal threshold at a quantile of every population's validation scores, and "
                       "write a new checkpoint that carries them.")
    p.add_argument("--model", required=True, help="checkpoint path, or 'bundled'")
    p.add_argument("--data", required=True, help="training images: CSV (file,label[,patient_id]) or a folder per class")
    p.add_argument("--val", required=True, help="validation images, for the threshold (same forms)")
    p.add_argument("--out", required=True, help="the checkpoint to write (may be --model itself, not 'bundled')")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="validation quantile of the threshold (default 0.99: 1%% of validation images refused)")
    p.add_argument("--reference", help="CSV of more frontal chest films the model was not trained on (its 'file' "
                   "or first column), summarised by one more mean: e.g. the lung segmenter's training split")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=_fit_ood)

    p = sub.add_parser("intended-use", help="show or edit the intended use a checkpoint carries",
                       description="Print the intended use (modalities, views, body parts, ages, minimum size) that "
                       "the tag gate holds DICOM headers against; with options, write a checkpoint that "
                       "carries the changed values.")
    p.add_argument("--model", required=True, help="checkpoint path, or 'bundled'")
    p.add_argument("--modalities", nargs="+", metavar="MODALITY", help="e.g. CR DX")
    p.add_argument("--views", nargs="+", metavar="VIEW", help="e.g. PA AP")
    p.add_argument("--body-parts", nargs="+", metavar="PART", help="e.g. CHEST")
    p.add_argument("--min-age", type=float, help="youngest patient, years")
    p.add_argument("--max-age", type=float, help="oldest patient, years")
    p.add_argument("--min-size", type=int, help="smallest rows and columns, pixels")
    p.add_argument("--allow-secondary-capture", action=argparse.BooleanOptionalAction, default=None,
                   help="research only: also accept Secondary Captures that are not plain greyscale captures of a "
                        "chest radiograph (OT screenshots, scans, derived or annotated images); captures of CR/DX "
                        "chest films are accepted either way")
    p.add_argument("--out", help="the checkpoint to write when changing values")
    p.set_defaults(func=_intended_use)

    p = sub.add_parser("model-card", help="write a model card from a checkpoint and its evaluations")
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--eval", nargs="+", default=[], metavar="SPLIT=DIR",
                   help="evaluation folders holding metrics.json, e.g. test=runs/eval-test")
    p.add_argument("--notes", help="markdown file with reviewer observations of the CAMs")
    p.add_argument("--out", required=True, help="the markdown file to write")
    p.set_defaults(func=_model_card)

    p = sub.add_parser("review", help="start the reviewer app (Streamlit) for radiologists",
                       description="Start the reviewer in the browser: a worklist of the images under DIR and "
                       "uploads, triaged by probability, with CAM overlays, regions and reviews stored in SQLite. "
                       "Needs: pip install \"medcam-screening[app]\".")
    p.add_argument("folder", nargs="?", metavar="DIR", help="folder of images (recursively); omit for uploads only")
    p.add_argument("--db", help="review database (default: DIR/.medcam-review/review.db)")
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this computer only; the app has no login)")
    _add_model(p)
    _add_segmenter(p)
    p.add_argument("--max-upload-mb", type=int, default=100, help="largest upload in MiB (default: 100)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image in pixels, folder or upload (default: 40000000)")
    p.set_defaults(func=_review)

    p = sub.add_parser("monitor", help="watch a deployed model over time: flag rate, drift, data quality, alarms",
                       description="Read results files (medcam score's, or a node's spool; folders recursively) and "
                       "write DIR/report.html (self-contained) and DIR/summary.json: volume and status per period, "
                       "the flag rate against 3-sigma p-chart limits and a CUSUM (k 0.5, h 5), the probability and "
                       "OOD-score distributions against the reference (PSI, Kolmogorov-Smirnov), per group with --by. "
                       "Alarms are judged on the latest complete period. Exit status: 4 an alarm (each named in the "
                       "last line), 3 an input could not be read, 0 no alarm, 1 bad arguments, no readable rows or "
                       "nothing to judge.")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results CSVs or folders (e.g. SPOOL/results)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.html and summary.json")
    p.add_argument("--reference", nargs="+", default=[], metavar="BASELINE",
                   help="results of a baseline period (default: the first --baseline-periods periods of RESULTS)")
    p.add_argument("--baseline-periods", type=int, default=2, metavar="K",
                   help="without --reference, the first K periods with rows are the reference (default: 2)")
    p.add_argument("--since", metavar="DATE", help="leave out rows before this day (YYYY-MM-DD)")
    p.add_argument("--period", choices=["day", "week"], default="day", help="period length (default: day, UTC)")
    p.add_argument("--by", choices=["manufacturer", "station_name", "view_position"],
                   help="also compare the score distributions per value of this header column")
    p.add_argument("--by-study-date", action="store_true",
                   help="periods from the DICOM Study Date instead of the time the row was scored")
    p.add_argument("--reviews", metavar="DB", help="the reviewer app's database: accepted/rejected findings per period")
    p.add_argument("--model", metavar="M", help="only rows of this model: a checkpoint (path or 'bundled', whose "
                   "validation flag rate is shown for comparison) or a model id")
    p.add_argument("--on-alarm", metavar="CMD", help="on an alarm, run CMD (no shell) with summary.json's path as its "
                   "last argument, e.g. 'logger -t medcam-monitor -f'")
    p.set_defaults(func=_monitor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()
    try:
        return int(args.func(args))
    except MedcamError as err:
        print(f"medcam {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print(f"medcam {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
