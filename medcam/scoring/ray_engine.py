"""The Ray engine: the same scoring as :mod:`medcam.scoring.local`, on a Ray cluster.

A Ray Data pipeline per chunk of inputs::

    paths (driver, streamed from the walk; already-scored ones left out)
      -> map_batches(decode)        CPU tasks: load_image + prepare, refusals become error rows
      -> map_batches(model actor)   one actor per GPU (num_gpus=1 with device "cuda"), or CPU actors
      -> map_batches(write)         with --cams or --regions only: CPU tasks read each image again
                                    and write its files from the feature-grid maps
      -> rows, appended on the driver to the same durable results file

so a crash or Ctrl-C is resumed exactly as with the local engine. The checkpoint travels to
the actors through the object store, and so do the small feature-grid maps; images do not
(they are read again where files are written). The input files, and the ``--cams`` and
``--regions`` folders, must be on storage that every node shares. Ray is optional:
``pip install "medcam-screening[distributed]"``.

Which cluster: ``address=None`` connects to the cluster named by the ``RAY_ADDRESS``
environment variable when it is set, and otherwise starts a local instance; pass
``address="auto"`` (``medcam score --ray-address auto``) to join the cluster this machine is
part of, or ``"ray://head:10001"`` for a remote one.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from medcam.config import PreprocessConfig
from medcam.errors import ConfigError, MedcamError, UnsupportedInputError
from medcam.gate import IntendedUse, read_intended_use
from medcam.gate.served import ServedModel
from medcam.gate.verdict import image_gate
from medcam.io import VOI, load_image
from medcam.models.checkpoint import Checkpoint, load_checkpoint
from medcam.models.grid import maps_to_source
from medcam.models.lungs import BUNDLED_SEGMENTER, load_segmenter
from medcam.models.predictor import Prediction, evidence_caution
from medcam.models.preprocess import prepare
from medcam.runtime import retain_freed_memory
from medcam.scoring.dataset import load_record
from medcam.scoring.discover import Item, count_items, iter_items
from medcam.scoring.options import ScoreOptions, ScoreSummary, progress_bar
from medcam.scoring.outputs import prepare_outputs, write_outputs
from medcam.scoring.ray_cluster import check_resources, requested_resources
from medcam.scoring.results import (
    HEADER_COLUMNS,
    ModelInfo,
    ResultsFile,
    SkippedFile,
    label_of,
    make_row,
    results_columns,
    write_studies,
)

__all__ = ["INSTALL_HINT", "import_ray", "score_ray"]

INSTALL_HINT = 'the Ray engine needs Ray Data; install it with: pip install "medcam-screening[distributed]"'
_DECODE_CPUS = 1.0
_TEXT = ("path", "status", "reason", "sop_instance_uid", "series_instance_uid", "study_instance_uid")
_HEADER = tuple(f"header_{name}" for name in HEADER_COLUMNS)


def import_ray() -> ModuleType:
    """``ray``, with Ray Data loaded.

    Raises:
        MedcamError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise MedcamError(INSTALL_HINT) from err
    return ray


def score_ray(inputs: Iterable[str | Path], checkpoint: Checkpoint, options: ScoreOptions, *,
              device: str = "cpu", address: str | None = None, num_cpus: int | None = None,
              actors: int = 1, actor_cpus: float | None = None, chunk_size: int = 100_000,
              segmenter: str | None = BUNDLED_SEGMENTER) -> ScoreSummary:
    """Score like :func:`medcam.scoring.score`, with the decoding and the model on Ray.

    Args:
        checkpoint: the model; its file is sent to the actors.
        device: ``cpu``, or ``cuda`` for one GPU per model actor.
        address: the Ray cluster (see the module documentation); a Ray already initialised
            in this process is used as it is, and left running.
        num_cpus: CPUs of a local instance started here (default: all).
        actors: model actors (GPUs used, with ``cuda``).
        actor_cpus: CPUs reserved by each model actor (its torch threads); default 1 with
            ``cuda``, 2 on CPU. Decoding tasks take 1 CPU each, so a local instance needs
            ``num_cpus > actors * actor_cpus``. On CPU, 1 would let Ray fuse the decoding
            into the actors, which then decode serially; it is refused.
        chunk_size: inputs per Ray dataset; the driver holds one chunk of paths at a time.
        segmenter: the lung segmenter (a path or ``"bundled"``; its file is sent to the actors),
            or None for none.

    Raises:
        ConfigError: a bad device, count or CAM class, or a cluster too small for ``actors``
            actors of ``actor_cpus`` CPUs (and a GPU each with ``cuda``) plus a decoding task,
            refused before any work is sent (:func:`~medcam.scoring.ray_cluster.check_resources`).
        MedcamError: Ray is not installed, or the results file belongs to another run.
    """
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"the Ray engine runs on device 'cpu' or 'cuda', got {device!r}")
    if options.method != "cam":
        raise ConfigError(f"batch scoring uses the single-pass CAM; method {options.method!r} is for medcam predict")
    if actors < 1 or chunk_size < 1:
        raise ConfigError(f"actors and chunk_size must be at least 1, got {actors!r} and {chunk_size!r}")
    actor_cpus = actor_cpus if actor_cpus is not None else 1.0 if device == "cuda" else 2.0
    if device == "cpu" and actor_cpus == _DECODE_CPUS:
        raise ConfigError(f"actor_cpus must differ from {_DECODE_CPUS} on CPU (Ray would decode inside the "
                          "model actors, one image at a time); use 2 or more")
    ray = import_ray()
    lungs = None if segmenter is None else load_segmenter(segmenter)
    info = ModelInfo.from_checkpoint(checkpoint, "" if lungs is None else lungs.segmenter_id)
    cam_class = prepare_outputs(options, info)
    inputs = list(inputs)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    counts = {"ok": 0, "error": 0, "not_analysed": 0, "skipped": 0}
    start = time.perf_counter()
    try:
        target = address or os.environ.get("RAY_ADDRESS")
        local = started and not target
        where = ("the Ray cluster this process is connected to" if not started else
                 f"the Ray cluster at {target}" if target else "the Ray instance on this machine")
        check_resources(requested_resources(actors, actor_cpus, device, writes=options.needs_maps,
                                            task_cpus=_DECODE_CPUS), ray.cluster_resources(), where=where, local=local)
        blob = [ray.put(Path(checkpoint.path).read_bytes()),  # in a list: the actor fetches them itself
                None if lungs is None else ray.put(Path(lungs.path).read_bytes())]
        columns = results_columns(info.classes, options.output_columns)
        with ResultsFile.open(options.out, columns, info.model_id, resume=options.resume,
                              segmenter_id=info.segmenter_id) as results:
            skipped_file = SkippedFile(options.out)
            resumed = len(results.done)
            total = count_items(inputs, skip=results.done, outputs=options.outputs)
            items = iter_items(inputs, skip=results.done, outputs=options.outputs)
            with progress_bar(total, options.progress) as bar:
                for chunk in _chunks(items, chunk_size):
                    for batch in _pipeline(ray, chunk, checkpoint.preprocess, options, blob, device, actors,
                                           actor_cpus, info, cam_class, read_intended_use(checkpoint).to_dict()):
                        rows = _rows(batch, info, options.output_columns)
                        results.append(rows)
                        skipped = [(str(p), str(why)) for p, why in zip(batch["path"], batch["skipped"], strict=True)
                                   if why]
                        skipped_file.append(skipped)
                        for row in rows:
                            counts[row[1]] += 1
                        counts["skipped"] += len(skipped)
                        bar.update(len(rows) + len(skipped))
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - start
    studies = write_studies(options.out, info.positive_class)
    return ScoreSummary(Path(options.out), studies, counts["ok"] + counts["error"] + counts["not_analysed"],
                        counts["error"], resumed, counts["skipped"], seconds, refused=counts["not_analysed"])


def _pipeline(ray: ModuleType, chunk: list[Item], preprocess: PreprocessConfig, options: ScoreOptions,
              blob: list[Any], device: str, actors: int, actor_cpus: float, info: ModelInfo,
              cam_class: str, use: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    data = ray.data.from_items([dataclasses.asdict(item) for item in chunk])
    data = data.map_batches(_decode, fn_kwargs={"preprocess": dataclasses.asdict(preprocess), "voi": options.voi,
                                                "reduce": not options.decode_full, "use": use,
                                                "enforce": not options.ignore_intended_use},
                            batch_size=options.batch_size, batch_format="numpy", num_cpus=_DECODE_CPUS)
    data = data.map_batches(_Scorer, fn_constructor_kwargs={"checkpoint": blob, "device": device,
                                                            "maps": options.needs_maps,
                                                            "enforce": not options.ignore_intended_use},
                            batch_size=options.batch_size, batch_format="numpy", concurrency=actors,
                            num_cpus=actor_cpus, num_gpus=1 if device == "cuda" else 0)
    if options.needs_maps:
        data = data.map_batches(_write, fn_kwargs={"preprocess": dataclasses.asdict(preprocess), "options": options,
                                                   "info": info, "cam_class": cam_class},
                                batch_size=None, batch_format="numpy", num_cpus=_DECODE_CPUS)
    batches: Iterator[dict[str, np.ndarray]] = data.iter_batches(batch_size=None, batch_format="numpy")
    return batches


def _decode(batch: dict[str, np.ndarray], preprocess: dict[str, Any], voi: VOI, reduce: bool = True,
            use: dict[str, Any] | None = None, enforce: bool = True) -> dict[str, np.ndarray]:
    """Ray task: read and prepare a batch of inputs (the tag gate first); files in folders that
    are not inputs keep their reason in ``skipped`` (and get no row)."""
    config = PreprocessConfig(**preprocess)
    intended = IntendedUse.from_dict(use) if use is not None else None
    records = [load_record(Item(str(path), bool(named), str(error)), config, voi=voi, reduce=reduce, use=intended,
                           enforce=enforce)
               for path, named, error in zip(batch["path"], batch["named"], batch["error"], strict=True)]
    x = np.zeros((len(records), 1, config.size, config.size), dtype=np.float32)
    for i, record in enumerate(records):
        if record.tensor is not None:
            x[i] = record.tensor.numpy()
    columns = {name: np.array([getattr(r, name) for r in records], dtype=object) for name in (*_TEXT, "skipped")}
    header = {f"header_{name}": np.array([r.header[k] if r.header else "" for r in records], dtype=object)
              for k, name in enumerate(HEADER_COLUMNS)}
    return {**columns, **header, "view_named": np.array([r.view_named for r in records], dtype=bool), "x": x}


class _Scorer:
    """Ray actor: holds the model; logits become calibrated probabilities (NaN on error rows).

    With ``maps``, the logits, the feature-grid maps ``(K, h, w)`` and the lung probabilities on
    the model grid go on to :func:`_write` (a warm-up pass gives their shapes).
    """

    def __init__(self, checkpoint: list[Any], device: str, maps: bool = False, enforce: bool = True) -> None:
        import ray

        retain_freed_memory()
        with tempfile.TemporaryDirectory() as folder:
            path, lungs = Path(folder) / "model.pt", Path(folder) / "lungs.pt"
            path.write_bytes(ray.get(checkpoint[0]))
            if checkpoint[1] is not None:
                lungs.write_bytes(ray.get(checkpoint[1]))
            self.classifier = ServedModel(load_checkpoint(path), device=device,
                                          segmenter=load_segmenter(lungs) if checkpoint[1] is not None else None)
        self.enforce = enforce
        self.info = ModelInfo.from_checkpoint(self.classifier.checkpoint, self.classifier.segmenter_id)
        size = self.classifier.checkpoint.preprocess.size
        probe = self.classifier.forward(torch.zeros(1, 1, size, size))
        self.map_shape = tuple(probe.maps.shape[1:]) if maps else ()
        self.lung_shape = tuple(probe.lungs.shape[1:]) if maps and probe.lungs is not None else ()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Every batch has the same columns, even one of errors only: Ray cannot combine blocks that differ
        ok = np.array([status == "ok" and not skipped for status, skipped in zip(batch["status"], batch["skipped"],
                                                                                  strict=True)], dtype=bool)
        probabilities = np.full((len(ok), len(self.classifier.classes)), np.nan, dtype=np.float64)
        logits = np.full(probabilities.shape, np.nan, dtype=np.float32)
        maps = np.full((len(ok), *self.map_shape), np.nan, dtype=np.float32)
        lungs = np.full((len(ok), *self.lung_shape), np.nan, dtype=np.float32)
        scores = np.full(len(ok), np.nan, dtype=np.float64)
        temperature = np.ones(len(ok), dtype=np.float64)  # each image's calibration, for its files' regions
        class_bias = np.full(probabilities.shape, np.nan, dtype=np.float64)
        evidence = np.full(len(ok), np.nan, dtype=np.float64)
        quality = np.array([""] * len(ok), dtype=object)
        group = np.array([""] * len(ok), dtype=object)  # whose calibration map, for the row
        status, reason = batch["status"].copy(), batch["reason"].copy()
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["x"][ok]))
            output = self.classifier.forward(x)
            probabilities[ok] = self.classifier.probabilities(output.logits, output.features).float().cpu().numpy()
            for i, calibration in zip(np.flatnonzero(ok), self.classifier.calibrations(output.features, int(ok.sum())),
                                      strict=True):
                temperature[i] = calibration.temperature
                if calibration.bias is not None:
                    class_bias[i] = calibration.bias
            group[ok] = self.classifier.calibration_groups(output.features, int(ok.sum()))
            if self.map_shape:
                logits[ok] = output.logits.float().cpu().numpy()
                maps[ok] = output.maps.float().cpu().numpy()
            if self.lung_shape and output.lungs is not None:
                lungs[ok] = output.lungs.float().cpu().numpy()
            for i, share in zip(np.flatnonzero(ok), self.classifier.lung_evidence(output), strict=True):
                evidence[i] = np.nan if share is None else share
                quality[i] = evidence_caution(label_of(self.info, probabilities[i].tolist())[1], share,
                                              self.classifier.evidence_threshold)
            verdicts = image_gate(self.classifier, output, x, enforce=self.enforce,
                                  view_named=[bool(v) for v in batch["view_named"][ok]])
            for i, verdict in zip(np.flatnonzero(ok), verdicts, strict=True):
                scores[i] = np.nan if verdict.score is None else verdict.score
                if verdict.refusal:
                    status[i], reason[i] = "not_analysed", verdict.refusal
                    probabilities[i] = np.nan
                elif verdict.note:
                    reason[i] = "; ".join(filter(None, [str(reason[i]), verdict.note]))
        out = {name: batch[name] for name in (*_TEXT, "skipped", *_HEADER)} | {
            "probabilities": probabilities, "ood": scores, "evidence": evidence, "quality": quality,
            "calibration": group, "status": status, "reason": reason,
            "threshold": np.full(len(ok), self.classifier.evidence_threshold or np.nan, dtype=np.float64)}
        return out | ({"logits": logits, "maps": maps, "lungs": lungs, "temperature": temperature,
                       "class_bias": class_bias} if self.map_shape else {})


def _write(batch: dict[str, np.ndarray], preprocess: dict[str, Any], options: ScoreOptions, info: ModelInfo,
           cam_class: str) -> dict[str, np.ndarray]:
    """Ray task: each scored image is read again and its CAM files and regions are written.

    The maps go onto the image's grid exactly as in the local engine. An image that can no
    longer be read (changed or removed since it was scored) becomes an error row.
    """
    config = PreprocessConfig(**preprocess)
    statuses = [str(status) for status in batch["status"]]
    reasons = [str(reason) for reason in batch["reason"]]
    files: list[dict[str, str]] = [{} for _ in statuses]
    for i, path in enumerate(str(p) for p in batch["path"]):
        if statuses[i] != "ok" or batch["skipped"][i]:
            continue
        try:
            image = load_image(path, voi=options.voi)
            _, transform = prepare(image, config)
        except UnsupportedInputError as err:
            statuses[i], reasons[i] = "error", f"could not be read again to write its files: {err.reason}"
            continue
        except Exception as err:  # as in load_record: a decoder's own failure belongs to this file's row
            statuses[i] = "error"
            reasons[i] = f"could not be read again to write its files ({type(err).__name__}: {err})"
            continue
        prediction = Prediction(
            image=image,
            probabilities=torch.from_numpy(batch["probabilities"][i]).float(),
            logits=torch.from_numpy(batch["logits"][i]),
            maps=maps_to_source(torch.from_numpy(batch["maps"][i:i + 1]), transform)[0],
            classes=info.classes,
            positive_class=info.positive_class,
            threshold=info.threshold,
            model_id=info.model_id,
            temperature=float(batch["temperature"][i]),
            class_bias=None if np.isnan(batch["class_bias"][i]).any() else tuple(map(float, batch["class_bias"][i])),
            lungs=(maps_to_source(torch.from_numpy(batch["lungs"][i:i + 1]), transform)[0, 0] >= 0.5
                   if batch["lungs"].ndim == 4 and not np.isnan(batch["lungs"][i]).any() else None),
            lung_evidence=None if np.isnan(batch["evidence"][i]) else float(batch["evidence"][i]),
            evidence_threshold=None if np.isnan(batch["threshold"][i]) else float(batch["threshold"][i]),
            segmenter_id=info.segmenter_id,
            calibration_group=str(batch["calibration"][i]),
        )
        written = write_outputs(prediction, path, options, cam_class)
        files[i] = written.columns
        if written.error:
            statuses[i], reasons[i] = "error", written.error
    columns = {kind: np.array([f.get(kind, "") for f in files], dtype=object) for kind in options.output_columns}
    kept = {name: batch[name] for name in (*_TEXT, "skipped", *_HEADER, "probabilities", "ood", "evidence", "quality",
                                           "calibration")}
    return kept | {"status": np.array(statuses, dtype=object), "reason": np.array(reasons, dtype=object)} | columns


def _rows(batch: dict[str, np.ndarray], info: ModelInfo, output_columns: tuple[str, ...]) -> list[list[str]]:
    rows = []
    for i, path in enumerate(batch["path"]):
        if batch["skipped"][i]:
            continue
        status = str(batch["status"][i])
        uids = [str(batch[name][i]) for name in _TEXT[3:]]
        probabilities = batch["probabilities"][i].tolist() if status == "ok" else None
        outputs = {kind: str(batch[kind][i]) for kind in output_columns if kind in batch}
        score, share = float(batch["ood"][i]), float(batch["evidence"][i])
        rows.append(make_row(info, str(path), status, str(batch["reason"][i]), uids, probabilities, outputs,
                             output_columns, None if np.isnan(score) else score,
                             lung_evidence=None if np.isnan(share) else share, quality=str(batch["quality"][i]),
                             calibration=str(batch["calibration"][i]),
                             header=[str(batch[name][i]) for name in _HEADER]))
    return rows


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
