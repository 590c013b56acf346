"""Decoding ahead of the model: a torch ``Dataset`` of inputs and the ``DataLoader`` around it.

Each :class:`~medcam.scoring.discover.Item` becomes a :class:`Record`: the model input made by
:func:`medcam.models.preprocess.prepare`, its grid transform and the DICOM UIDs, or the reason
the file was refused. A file found inside a folder is an input when its content is an image
or its name says it should be one (:data:`IMAGE_SUFFIXES`); then a file that cannot be read
gets an error row. Any other file is skipped with the reason (``RESULTS.skipped.csv``), and
so is a DICOMDIR. Nothing a file contains raises out of :func:`load_record`, so a bad
file never stops the loader. The items themselves are the loader's "indices": they come
from a streamed walk (the sampler), so no list of every input is ever built, and the
loader's prefetching (``workers * prefetch`` batches) bounds what is held in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pydicom
import torch
from torch.utils.data import DataLoader, Dataset

from medcam.config import PreprocessConfig
from medcam.errors import UnsupportedInputError
from medcam.gate import IntendedUse, check_tags
from medcam.gate.tags import named_view, tag_notes
from medcam.gate.verdict import IGNORED
from medcam.io import VOI, Image, detect_format, identity_of, load_image, read_dataset, read_dicom, read_identity
from medcam.models.grid import GridTransform
from medcam.models.preprocess import prepare
from medcam.scoring.discover import Item
from medcam.scoring.results import HEADER_KEYWORDS

__all__ = ["IMAGE_SUFFIXES", "Batch", "Record", "ScoringDataset", "collate", "load_record", "make_loader"]

IMAGE_SUFFIXES = (".dcm", ".dicom", ".ima", ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class Record:
    """One decoded input, small and picklable.

    Attributes:
        status: ``ok``, ``not_analysed`` or ``error`` (see :mod:`medcam.scoring.results`).
        reason: why the file was refused; for a file that was read, empty or a note (analysed
            outside the intended use).
        skipped: why a file inside a folder is not an input (it gets no row); empty for inputs.
        tensor: the model input ``(1, size, size)``; None once collated, or on error.
        transform: from the decoded pixels to the model grid.
        reduction: source pixels per decoded pixel (see :func:`medcam.io.load_image`'s ``min_size``).
        image: the loaded image, kept only when CAM files are written.
        header: the DICOM header values of :data:`medcam.scoring.results.HEADER_COLUMNS` (empty
            for other formats).
        view_named: the DICOM header names the view (:func:`medcam.gate.tags.named_view`); when
            False the frontal-view check decides from the image.
    """

    path: str
    status: str = "ok"
    reason: str = ""
    skipped: str = ""
    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    tensor: torch.Tensor | None = None
    transform: GridTransform | None = None
    reduction: int = 1
    image: Image | None = None
    header: tuple[str, ...] = ()
    view_named: bool = False

    @property
    def ok(self) -> bool:
        """Decoded and prepared: it goes through the model (``reason`` may hold a note)."""
        return self.status == "ok" and not self.skipped

    @property
    def uids(self) -> tuple[str, str, str]:
        """SOP Instance, Series Instance and Study Instance UIDs (empty when unknown)."""
        return self.sop_instance_uid, self.series_instance_uid, self.study_instance_uid


@dataclass(frozen=True, eq=False)
class Batch:
    """Collated records: ``inputs`` stacks the tensors of the records that are ``ok``, in order."""

    records: list[Record]
    inputs: torch.Tensor

    def pin_memory(self) -> Batch:
        return dataclasses.replace(self, inputs=self.inputs.pin_memory())


def load_record(item: Item, preprocess: PreprocessConfig, *, voi: VOI = "auto",
                keep_image: bool = False, reduce: bool = False, use: IntendedUse | None = None,
                enforce: bool = True) -> Record:
    """Read and prepare one input; every refusal becomes a :class:`Record` with the reason.

    With ``reduce``, a large DICOM is decoded at the lowest resolution that still covers
    the model's grid (:func:`medcam.io.load_image` with ``min_size``): its probability is
    the full decode's to within 0.01 (tested), at a fraction of the decoding time.

    ``use``: a DICOM whose header contradicts the model's intended use
    (:func:`medcam.gate.check_tags`) is ``not_analysed`` before its pixels are decoded (the
    file is read once, for the check and the image);
    with ``enforce=False`` it is analysed and the reason kept as a note.
    """
    if item.error:
        return Record(item.path, status="error", reason=item.error)
    if not item.named:
        skipped = _not_an_input(item.path)
        if skipped:
            return Record(item.path, skipped=skipped)
    note = ""
    dataset = None
    if use is not None and detect_format(item.path) == "dicom":
        try:  # read once: the header for the gate, the pixels (not yet decoded) for the image
            dataset = read_dataset(item.path)
        except UnsupportedInputError as err:
            return _refused(item.path, err.reason)
        except Exception as err:  # whatever the file holds, it is this file's row, not the run's end
            return _refused(item.path, f"could not be read ({type(err).__name__}: {err})")
        refusal = check_tags(dataset, use)
        if refusal and enforce:
            return _refused(item.path, refusal, status="not_analysed", dataset=dataset)
        note = "; ".join([*([f"{IGNORED}: {refusal}"] if refusal else []), *tag_notes(dataset, use)])
    min_size = preprocess.size if reduce else None
    try:
        image = (load_image(item.path, voi=voi, min_size=min_size) if dataset is None else
                 read_dicom(item.path, voi=voi, min_size=min_size, dataset=dataset))
        tensor, transform = prepare(image, preprocess)
    except UnsupportedInputError as err:
        return _refused(item.path, err.reason, dataset=dataset)
    except Exception as err:  # a decoder's own failure is this file's problem, reported in its row
        return _refused(item.path, f"could not be read ({type(err).__name__}: {err})", dataset=dataset)
    identity = image.identity
    return Record(
        path=item.path,
        reason=note,
        header=header_values(dataset) if dataset is not None else (),
        view_named=dataset is not None and named_view(dataset) is not None,
        sop_instance_uid=identity.sop_instance_uid if identity else "",
        series_instance_uid=identity.series_instance_uid if identity else "",
        study_instance_uid=identity.study_instance_uid if identity else "",
        tensor=tensor,
        transform=transform,
        reduction=image.reduction,
        image=image if keep_image else None,
    )


def header_values(dataset: pydicom.Dataset) -> tuple[str, ...]:
    """The values of :data:`~medcam.scoring.results.HEADER_COLUMNS` in ``dataset``, as text."""
    values = []
    for keyword in HEADER_KEYWORDS.values():
        try:
            value = dataset.get(keyword)
        except Exception:  # a malformed element reads as absent: monitoring must not fail a row
            value = None
        values.append("" if value is None else " ".join(str(value).split()))
    return tuple(values)


def _not_an_input(path: str) -> str:
    """Why a file found inside a folder is not an input; empty when it is one."""
    name = os.path.basename(path)
    if name.upper() == "DICOMDIR":
        return "DICOMDIR (a media directory listing the DICOM files, which are scored themselves)"
    if detect_format(path) is not None or name.lower().endswith(IMAGE_SUFFIXES):
        return ""
    return "not an image (no DICOM, NIfTI, PNG or JPEG content or name)"


def _refused(path: str, reason: str, status: str = "error", dataset: pydicom.Dataset | None = None) -> Record:
    """A refused file's record, placed in its study when it has UIDs (from ``dataset`` when the
    file was already read, else from its header)."""
    header: tuple[str, ...] = ()
    if dataset is not None:
        identity = identity_of(dataset)
        header = header_values(dataset)
    else:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            reason = "empty file"
        identity = read_identity(path) if detect_format(path) == "dicom" else None
    if identity is None:
        return Record(path, status=status, reason=reason, header=header)
    return Record(path, status=status, reason=reason, sop_instance_uid=identity.sop_instance_uid,
                  series_instance_uid=identity.series_instance_uid,
                  study_instance_uid=identity.study_instance_uid, header=header)


class ScoringDataset(Dataset[Record]):
    """``dataset[item]`` is :func:`load_record` of an :class:`~medcam.scoring.discover.Item`."""

    def __init__(self, preprocess: PreprocessConfig, *, voi: VOI = "auto", keep_image: bool = False,
                 reduce: bool = False, use: IntendedUse | None = None, enforce: bool = True) -> None:
        self.preprocess = preprocess
        self.voi = voi
        self.keep_image = keep_image
        self.reduce = reduce
        self.use = use
        self.enforce = enforce

    def __getitem__(self, item: Item) -> Record:
        return load_record(item, self.preprocess, voi=self.voi, keep_image=self.keep_image, reduce=self.reduce,
                           use=self.use, enforce=self.enforce)


def collate(records: Sequence[Record]) -> Batch:
    """Stack the inputs of the readable records; the records travel on without their tensors."""
    tensors = [r.tensor for r in records if r.ok and r.tensor is not None]
    inputs = torch.stack(tensors) if tensors else torch.empty(0)
    return Batch([dataclasses.replace(r, tensor=None) for r in records], inputs)


def make_loader(items: Iterable[Item], dataset: ScoringDataset, *, batch_size: int, workers: int,
                prefetch: int = 2, pin_memory: bool = False, niceness: int = 0) -> DataLoader[Record]:
    """A loader over the streamed ``items``: ``workers`` processes decode, each keeping
    ``prefetch`` batches ready (``workers=0`` decodes in this process).

    ``niceness`` lowers the workers' CPU priority (19: the lowest). With the model on the
    CPU, decoding at normal priority preempts the model's threads, and each preemption
    stalls the others at their next synchronisation; at the lowest priority the workers
    decode while the model waits for its next batch instead (``benchmarks/bench_score.py``
    measures it).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=items,
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=prefetch if workers > 0 else None,
        pin_memory=pin_memory,
        worker_init_fn=functools.partial(_lower_priority, niceness) if niceness and workers > 0 else None,
    )


def _lower_priority(niceness: int, worker: int) -> None:
    os.nice(niceness)
