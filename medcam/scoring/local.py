"""The local engine: decoding workers feed the single-pass CAM model on one machine.

The inputs are streamed from a walk of the folders (see :mod:`medcam.scoring.discover`);
worker processes read and prepare them ahead of the model (:mod:`medcam.scoring.dataset`);
each batch goes through :meth:`Classifier.forward` once, and its rows are appended to the
results file durably before the next batch (:mod:`medcam.scoring.results`). Memory holds
a few batches and the set of paths already scored, however many files there are.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medcam.gate.served import ServedModel
from medcam.gate.verdict import Verdict, image_gate
from medcam.io import load_image
from medcam.models.cam import CAMOutput
from medcam.models.predictor import evidence_caution
from medcam.scoring.dataset import Batch, Record, ScoringDataset, make_loader
from medcam.scoring.discover import count_items, iter_items
from medcam.scoring.options import ScoreOptions, ScoreSummary, progress_bar
from medcam.scoring.outputs import Written, prepare_outputs, write_outputs, write_refusal
from medcam.scoring.results import (
    ModelInfo,
    ResultsFile,
    SkippedFile,
    label_of,
    make_row,
    results_columns,
    write_studies,
)

__all__ = ["score"]


def score(inputs: Iterable[str | Path], classifier: ServedModel, options: ScoreOptions) -> ScoreSummary:
    """Score every image in or under ``inputs`` into ``options.out``, resuming it if present.

    Files named in ``inputs`` always get a row (an error row when refused); files found
    inside folders get one when they are images or named like images, the others are listed
    in ``RESULTS.skipped.csv``. The per-study file is rebuilt at the end.

    Raises:
        ConfigError: ``options.cam_class`` is not a class of the model.
        MedcamError: the results file belongs to another model or run (see
            :meth:`~medcam.scoring.results.ResultsFile.open`).
    """
    info = ModelInfo.from_checkpoint(classifier.checkpoint, classifier.segmenter_id)
    cam_class = prepare_outputs(options, info)
    inputs = list(inputs)
    counts = {"ok": 0, "error": 0, "not_analysed": 0, "skipped": 0}
    start = time.perf_counter()
    columns = results_columns(info.classes, options.output_columns)
    with ResultsFile.open(options.out, columns, info.model_id, resume=options.resume,
                          segmenter_id=info.segmenter_id) as results:
        skipped_file = SkippedFile(options.out)
        resumed = len(results.done)
        total = count_items(inputs, skip=results.done, outputs=options.outputs)
        items = iter_items(inputs, skip=results.done, outputs=options.outputs)
        dataset = ScoringDataset(classifier.checkpoint.preprocess, voi=options.voi,
                                 keep_image=options.needs_maps and options.decode_full,
                                 reduce=not options.decode_full, use=classifier.intended_use,
                                 enforce=not options.ignore_intended_use)
        loader = make_loader(items, dataset, batch_size=options.batch_size, workers=options.workers,
                             prefetch=options.prefetch, pin_memory=classifier.device.type == "cuda",
                             niceness=19 if classifier.device.type == "cpu" else 0)
        with progress_bar(total, options.progress) as bar, _stop_on_interrupt() as stop:
            for batch in loader:
                rows = _score_batch(batch, classifier, info, options, cam_class)
                results.append(rows)
                skipped_file.append([(r.path, r.skipped) for r in batch.records if r.skipped])
                if stop.is_set():
                    raise KeyboardInterrupt
                for row in rows:
                    counts[row[1]] += 1
                counts["skipped"] += len(batch.records) - len(rows)
                bar.update(len(batch.records))
    seconds = time.perf_counter() - start
    studies = write_studies(options.out, info.positive_class)
    return ScoreSummary(Path(options.out), studies, counts["ok"] + counts["error"] + counts["not_analysed"],
                        counts["error"], resumed, counts["skipped"], seconds, refused=counts["not_analysed"])


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """Turn the first Ctrl-C (SIGINT) into a flag that the loop checks after each batch.

    Python raises KeyboardInterrupt wherever the main thread happens to be, and when that is a
    finaliser (the data loader's worker shutdown, say) the exception is printed and swallowed,
    so the run would carry on. With the flag, the batch in hand is written and the run stops;
    a second Ctrl-C interrupts at once. Outside the main thread nothing is installed.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _score_batch(batch: Batch, classifier: ServedModel, info: ModelInfo, options: ScoreOptions,
                 cam_class: str) -> list[list[str]]:
    """The rows of one batch: one forward pass for its readable images (classifier and lung
    segmenter), the image gate on the same pass, then the files of the images that get them."""
    ok = [r for r in batch.records if r.ok]
    probabilities: list[list[float]] = []
    verdicts: list[Verdict] = []
    evidence: list[float | None] = []
    groups: list[str] = []
    written: list[Written] = [Written() for _ in ok]
    if ok:
        output = classifier.explain(batch.inputs, options.method)
        probabilities = classifier.probabilities(output.logits, output.features).float().cpu().tolist()
        groups = classifier.calibration_groups(output.features, len(ok))
        verdicts = image_gate(classifier, output, batch.inputs, enforce=not options.ignore_intended_use,
                              view_named=[r.view_named for r in ok])
        evidence = classifier.lung_evidence(output, options.method)
        if options.needs_maps:
            written = [_write(classifier, output, i, record, info, options, cam_class, probabilities[i])
                       if not verdicts[i].refusal else Written() for i, record in enumerate(ok)]
    results = iter(zip(probabilities, verdicts, evidence, groups, written, strict=True))
    rows = []
    for record in batch.records:
        if record.skipped:
            continue
        if not record.ok:
            rows.append(_refusal_row(record, record.status, record.reason, None, info, options))
            continue
        probs, verdict, share, group, files = next(results)
        if verdict.refusal:
            rows.append(_refusal_row(record, "not_analysed", verdict.refusal, verdict.score, info, options))
            continue
        note = "; ".join(filter(None, [record.reason, verdict.note]))
        status = "error" if files.error else "ok"
        quality = evidence_caution(label_of(info, probs)[1], share, classifier.evidence_threshold)
        rows.append(make_row(info, record.path, status, files.error or note, record.uids,
                             None if files.error else probs, files.columns, options.output_columns, verdict.score,
                             lung_evidence=share, quality=quality, calibration=group, header=record.header))
    return rows


def _refusal_row(record: Record, status: str, reason: str, score: float | None, info: ModelInfo,
                 options: ScoreOptions) -> list[str]:
    """The row of an image that was not analysed or failed; a refused one gets its report."""
    report = write_refusal(record.path, reason, options, info) if status == "not_analysed" else Written()
    reason = "; ".join(filter(None, [reason, report.error]))
    return make_row(info, record.path, status, reason, record.uids, None, report.columns, options.output_columns,
                    score, header=record.header)


def _write(classifier: ServedModel, output: CAMOutput, index: int, record: Record, info: ModelInfo,
           options: ScoreOptions, cam_class: str, probabilities: list[float]) -> Written:
    """The files of one image of the batch, if it gets any; read in full here if it was decoded reduced."""
    if options.cams is None and not options.formats_for(label_of(info, probabilities)[1]):
        return Written()
    assert record.transform is not None
    image, transform = record.image, record.transform
    if image is None:
        try:
            image = load_image(record.path, voi=options.voi)
        except Exception as err:  # the file changed or went since it was scored: this image's row says so
            return Written(error=f"could not be read again in full to write its files ({err})")
        transform = transform.from_full_resolution(image.shape, record.reduction)
    one = CAMOutput(output.logits[index:index + 1], output.maps[index:index + 1],
                    None if output.features is None else output.features[index:index + 1],
                    None if output.lungs is None else output.lungs[index:index + 1])
    prediction = classifier.predictions([image], [transform], one, method=options.method)[0]
    return write_outputs(prediction, record.path, options, cam_class)
