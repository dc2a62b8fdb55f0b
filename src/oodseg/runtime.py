"""What every stage asks of the machine: the torch device a ``--device`` names, and the versions a
result or a bundle records."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from importlib.metadata import version

import lightning
import monai
import numpy as np
import torch


def torch_device(name: str) -> torch.device:
    """The device a ``--device`` value names; ``auto`` (and ``gpu``) take CUDA when there is one."""
    if name in ("auto", "gpu", "cuda"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# glibc's allocator returns every freed block above its mmap threshold (a few MB at most) to the
# system, so each new activation, patch or batch of that size is faulted in again, page by page:
# on the 2-core CPU that was up to a fifth of a training step. Blocks up to this size are kept for reuse
# (PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for the same reason; this needs neither).
REUSED_BLOCK_BYTES = 256 * 2**20


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to ``REUSED_BLOCK_BYTES`` for reuse instead of unmapping
    them (and keep as much free memory at the top of the heap). Peak memory is unchanged: what is
    kept was in use. Returns False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(
        mallopt(m_mmap_threshold, REUSED_BLOCK_BYTES)
        and mallopt(m_trim_threshold, REUSED_BLOCK_BYTES)
    )


def machine(device: torch.device) -> str:
    """One line naming the processor, the threads and the device a run used."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return f"{name}, {torch.get_num_threads()} threads, {device}"


def package_versions() -> dict[str, str]:
    """The versions a result or a bundle records."""
    return {
        "oodseg": version("oodseg"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "lightning": lightning.__version__,
        "numpy": np.__version__,
    }
