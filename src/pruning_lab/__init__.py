"""Pruning Lab: the companion library of the book."""
__version__ = "0.1.0"

from .device import best_device, device_report, has_sparse_tensor_cores  # noqa: E402

__all__ = ["__version__", "best_device", "device_report", "has_sparse_tensor_cores"]
