"""N:M sparsity: keep N of every M consecutive weights along the input dimension (Chapters 1 and 7).

For a weight ``W`` of shape ``[d_out, d_in]`` the groups are ``W[r, g*M:(g+1)*M]``: M consecutive *input*
columns of one output row, which is the layout NVIDIA's 2:4 sparse tensor cores accelerate (Mishra et al. 2021).
"N:M" always means N weights KEPT out of M (2:4 keeps half).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

from ._validate import as_tensor

__all__ = ["parse_pattern", "check_nm_args", "nm_mask", "check_nm"]


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"unstructured"`` (or None) -> None; ``"2:4"`` -> ``(2, 4)`` (Chapter 7)."""
    if pattern is None or pattern == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if not match:
        raise ValueError(f"`pattern` must be 'unstructured' or 'N:M' such as '2:4' or '4:8'; got {pattern!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n <= m:
        raise ValueError(f"`pattern` {pattern!r}: N:M keeps N of every M weights, so it needs 0 < N <= M")
    return n, m


def check_nm_args(n: int | None, m: int | None, d_in: int | None = None) -> tuple[int, int] | None:
    """Validate an N:M pair (both None means unstructured); ``d_in`` must be divisible by M."""
    if n is None and m is None:
        return None
    if n is None or m is None:
        raise ValueError(f"`n` and `m` must be given together (N kept of every M); got n={n!r}, m={m!r}")
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
        raise ValueError(f"`n` and `m` must be integers; got n={n!r}, m={m!r}")
    if not 0 < n <= m:
        raise ValueError(f"`n` must satisfy 0 < n <= m (N kept of every M); got n={n}, m={m}")
    if d_in is not None and d_in % m:
        raise ValueError(f"`m` must divide the input dimension d_in={d_in}; got m={m}")
    return n, m


def nm_mask(scores, n: int, m: int) -> Tensor:
    """Keep-mask with the N highest ``scores`` of every M consecutive inputs in each row (Chapter 7).

    ``scores``: ``[d_out, d_in]``; returns bool ``[d_out, d_in]``. Ties: among equal scores the lower index is
    pruned first (a stable sort), so every group keeps exactly N.
    """
    s = as_tensor(scores, "scores")
    if s.dim() != 2:
        raise ValueError(f"`scores` must be 2-D [d_out, d_in]; got shape {tuple(s.shape)}")
    check_nm_args(n, m, s.shape[1])
    groups = s.reshape(s.shape[0], -1, m)  # (d_out, d_in / m, m)
    drop = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]  # (d_out, groups, m - n)
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
    return keep.reshape(s.shape)


def check_nm(weight, n: int, m: int) -> bool:
    """True if every group of M consecutive inputs of every row has at most N non-zeros (Chapter 7)."""
    w = weight if isinstance(weight, Tensor) else as_tensor(weight, "weight")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    check_nm_args(n, m, w.shape[1])
    return bool(((w.reshape(w.shape[0], -1, m) != 0).sum(-1) <= n).all())
