"""The allocator setting of :mod:`medcam.runtime`, checked in fresh processes by its effect."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocate and free a 64 MiB tensor, then count the page faults of allocating it again.
_PROBE = """
import resource
import torch
from medcam.runtime import retain_freed_memory
applied = retain_freed_memory()
torch.ones(1 << 24).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(1 << 24).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is for glibc's allocator")


def _probe(**env: str) -> tuple[bool, int]:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@glibc_only
def test_freed_buffers_are_reused_without_page_faults() -> None:
    applied, faults = _probe()
    assert applied
    assert faults < 1000  # 64 MiB is 16,384 pages of 4 KiB


@glibc_only
def test_medcam_malloc_system_leaves_the_allocator_alone() -> None:
    applied, faults = _probe(MEDCAM_MALLOC="system")
    assert not applied
    assert faults > 10_000  # glibc maps the buffer afresh, page by page
