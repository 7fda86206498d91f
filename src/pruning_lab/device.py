"""Which device the book's code runs on, and whether it has 2:4 sparse tensor cores (every chapter's setup cell)."""
from __future__ import annotations

import torch

__all__ = ["best_device", "has_sparse_tensor_cores", "device_report"]


def best_device() -> torch.device:
    """``cuda`` when a CUDA GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def has_sparse_tensor_cores() -> bool:
    """True on an NVIDIA GPU of compute capability >= 8.0 (Ampere or newer), which runs 2:4 sparse matmuls
    (Mishra et al. 2021) through ``torch.sparse.to_sparse_semi_structured`` (Chapter 7)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0)


def device_report() -> str:
    """One line for the top of every notebook: library and torch versions, device, 2:4 support."""
    from . import __version__

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        cc = ".".join(map(str, torch.cuda.get_device_capability(0)))
        sparse = "yes" if has_sparse_tensor_cores() else "no (needs compute capability >= 8.0)"
        dev = f"CUDA GPU: {name} (compute capability {cc}); 2:4 sparse tensor cores: {sparse}"
    else:
        dev = "CPU only (no CUDA GPU); 2:4 sparse tensor cores: no, GPU-only cells will say so and skip"
    return f"pruning_lab {__version__} | torch {torch.__version__} | {dev}"
