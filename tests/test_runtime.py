"""The allocator setting of :mod:`medcam.runtime`, checked in fresh processes by its effect."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Page faults of three DenseNet121 forward passes after a warm-up pass.
_PROBE = """
import resource
import torch
from monai.networks.nets import DenseNet121
from medcam.runtime import retain_freed_memory
applied = retain_freed_memory()
torch.manual_seed(0)
net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
x = torch.rand(8, 1, 128, 128)
with torch.inference_mode():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        net(x)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env: str) -> tuple[bool, int]:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is for glibc's allocator")
def test_forward_passes_reuse_freed_memory_unless_told_not_to() -> None:
    applied, retained = _probe()
    left_alone, system = _probe(MEDCAM_MALLOC="system")
    assert applied and not left_alone
    # glibc's defaults map each large activation afresh, page by page (~40,000 faults here);
    # kept memory is reused (~6,000)
    assert retained < system / 3, (retained, system)
