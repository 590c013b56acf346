"""Fixtures of the node tests: a private network namespace and an Orthanc PACS inside it.

Both skip, with the reason, where a test PACS cannot run (no ``unshare -n`` permission, Orthanc,
its DICOMweb plugin or dcmtk missing) - unless ``MEDCAM_REQUIRE_PACS=1`` is set, as CI does,
where they fail with that reason instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pacs import Netns, Orthanc, pacs_unavailable

REQUIRE_PACS = "MEDCAM_REQUIRE_PACS"


@functools.cache
def _unavailable() -> str | None:
    return pacs_unavailable()


def require_pacs() -> None:
    """Skip the calling test when no test PACS can run here; fail instead under ``MEDCAM_REQUIRE_PACS=1``."""
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_PACS) == "1":
        pytest.fail(f"{REQUIRE_PACS}=1 but the test PACS cannot run: {reason}", pytrace=False)
    pytest.skip(f"no test PACS: {reason} (set {REQUIRE_PACS}=1 to fail instead)")


@pytest.fixture
def pacs_namespace() -> Iterator[Netns]:
    """A private network namespace (loopback only); everything started in it ends with the test."""
    require_pacs()
    with Netns() as netns:
        yield netns


@pytest.fixture
def orthanc(pacs_namespace: Netns, tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc with DICOMweb at ``Orthanc.dicomweb`` in ``pacs_namespace``; knows the peer MEDCAM:11112."""
    with Orthanc(tmp_path / "orthanc", pacs_namespace) as pacs:
        yield pacs
