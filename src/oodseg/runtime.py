"""What every stage asks of the machine: the torch device a ``--device`` names, and the versions a
result or a bundle records."""

from __future__ import annotations

import platform

import numpy as np
import torch


def torch_device(name: str) -> torch.device:
    """The device a ``--device`` value names; ``auto`` (and ``gpu``) take CUDA when there is one."""
    if name in ("auto", "gpu", "cuda"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine(device: torch.device) -> str:
    """One line naming the processor, the threads and the device a run used."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return f"{name}, {torch.get_num_threads()} threads, {device}"


def package_versions() -> dict[str, str]:
    """The versions a result or a bundle records."""
    import lightning
    import monai

    from oodseg import __version__

    return {
        "oodseg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "lightning": lightning.__version__,
        "numpy": np.__version__,
    }
