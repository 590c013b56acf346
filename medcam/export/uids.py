"""Deterministic UIDs for every derived DICOM object, so that exporting twice replaces.

A PACS keys an instance by its SOP Instance UID: a second export of the same result with
fresh UIDs would show up as a duplicate next to the first. Here every UID is a hash of what
the object is about, through :func:`pydicom.uid.generate_uid` with ``entropy_srcs`` (a
SHA-512 of the parts under pydicom's root ``1.2.826.0.1.3680043.8.498.``; with
``prefix=None`` pydicom would ignore the entropy and return a random ``2.25`` UID):

- :func:`series_uid`: one series per study, model and object type (``seg``, ``sc``, ``sr``,
  ``gsps``), whatever the image, and a series of its own for what else a qualifier names
  (the SEG of the lung fields);
- :func:`instance_uid`: one instance per source image, model, object type and class (and,
  for a reviewed report, reviewer);
- :func:`device_uid`: the Device UID of a model (IHE AI Results), the same for every object
  it made;
- :func:`tracking_uid`: the Tracking Unique Identifier of one finding or region in a report.

The parts are joined as a JSON list, so that ``("ab", "c")`` and ``("a", "bc")`` differ.
"""

from __future__ import annotations

import json
from typing import Literal

from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid

__all__ = ["ObjectKind", "derived_uid", "device_uid", "instance_uid", "series_uid", "tracking_uid"]

ObjectKind = Literal["seg", "sc", "sr", "gsps"]


def derived_uid(*parts: str) -> UID:
    """A UID that depends on ``parts`` only (the same parts always give the same UID)."""
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[json.dumps(["medcam", *parts])])


def series_uid(study_uid: str, model_id: str, kind: ObjectKind, *qualifiers: str) -> UID:
    """The Series Instance UID of ``model_id``'s objects of ``kind`` in the study ``study_uid``;
    ``qualifiers`` (e.g. ``"lungs"``) name a series of its own."""
    return derived_uid("series", study_uid, model_id, kind, *qualifiers)


def instance_uid(source_uid: str, model_id: str, kind: ObjectKind, *qualifiers: str) -> UID:
    """The SOP Instance UID of ``model_id``'s object of ``kind`` derived from ``source_uid``.

    Args:
        source_uid: the source image's SOP Instance UID.
        model_id: the model's id.
        kind: the object type.
        qualifiers: what else tells two such objects apart (the class; the reviewer).
    """
    return derived_uid("instance", source_uid, model_id, kind, *qualifiers)


def device_uid(model_id: str) -> UID:
    """The Device UID of ``model_id``."""
    return derived_uid("device", model_id)


def tracking_uid(source_uid: str, model_id: str, *what: str) -> UID:
    """The Tracking Unique Identifier of one finding (``what``) on ``source_uid``."""
    return derived_uid("tracking", source_uid, model_id, *what)
