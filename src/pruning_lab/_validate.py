"""Argument checks shared by every module: clear ``ValueError``s that name the argument."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def as_tensor(x, name: str, *, dtype: torch.dtype | None = None) -> Tensor:
    """Return ``x`` as a floating tensor (never the caller's object when converting), checking it is finite."""
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(x, dtype=dtype or torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"`{name}` must be a tensor or a list of numbers; got {type(x).__name__}") from exc
    if not t.is_floating_point():
        t = t.to(dtype or torch.get_default_dtype())
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if not all_finite(t):
        raise ValueError(f"`{name}` contains NaN or inf; all entries must be finite")
    return t


def all_finite(t: Tensor) -> bool:
    """True if no entry is NaN or inf. A NaN or inf entry makes the sum non-finite, so one reduction decides
    the common case; only a non-finite sum (which may also be an overflow of large finite values) is checked
    entry by entry."""
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Sparsity must be a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or math.isnan(float(sparsity)):
        raise ValueError(f"`{name}` must be a number in [0, 1); got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1) (0 = keep everything); got {sparsity!r}")
    return float(sparsity)


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_b}` must have the same shape as `{name_a}`: {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def check_choice(value, name: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {sorted(allowed)!r}; got {value!r}")


def layer_inputs(x: Tensor, d_in: int, *, check_finite: bool = True) -> Tensor:
    """A layer's inputs ``[..., d_in]`` as a float32 ``[tokens, d_in]`` matrix, checked to be finite unless
    ``check_finite=False`` (the accumulators then check their result once, see ``check_finite``)."""
    if x.shape[-1] != d_in:
        raise ValueError(f"`x` must have last dimension d_in={d_in}; got shape {tuple(x.shape)}")
    x = x.detach().reshape(-1, d_in).float()  # (tokens, d_in)
    if check_finite and not all_finite(x):
        raise ValueError("`x` (the layer's inputs) contains NaN or inf")
    return x
