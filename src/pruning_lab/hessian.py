"""Exact Hessians and measured loss changes for small models (Chapters 2 and 3).

A small model is written as a function of ONE flat parameter vector ``theta`` (``[d]``), so that its
Hessian is a plain ``[d, d]`` matrix computed exactly with :mod:`torch.func`. This is only feasible for a
few thousand parameters (``d^2`` entries), which is exactly why OBD and OBS approximate it at scale.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, hessian, vmap

from ._validate import as_tensor

__all__ = ["exact_gradient", "exact_hessian", "zeroing_deltas", "set_delta"]

LossFn = Callable[[Tensor], Tensor]


def _theta(theta) -> Tensor:
    t = as_tensor(theta, "theta")
    if t.dim() != 1:
        raise ValueError(f"`theta` must be a flat parameter vector [d]; got shape {tuple(t.shape)}")
    return t


def exact_gradient(loss_fn: LossFn, theta) -> Tensor:
    """``grad L(theta)``, shape ``[d]`` (Chapter 2)."""
    return grad(loss_fn)(_theta(theta))


def exact_hessian(loss_fn: LossFn, theta) -> Tensor:
    """The full Hessian ``H_ij = d^2 L / d theta_i d theta_j``, shape ``[d, d]``, symmetrised (Chapter 2)."""
    t = _theta(theta)
    H = hessian(loss_fn)(t)  # (d, d)
    return 0.5 * (H + H.T)


def zeroing_deltas(loss_fn: LossFn, theta, indices=None, *, chunk_size: int = 256) -> Tensor:
    """Measured ``L(theta with theta_i = 0) - L(theta)`` for each ``i`` in ``indices`` (Chapter 2).

    ``indices``: 1-D integer tensor (default: every coordinate). Returns ``[len(indices)]``. This is the
    "actual" loss change that the Taylor saliencies try to predict; it costs one loss evaluation per weight.
    """
    t = _theta(theta)
    idx = torch.arange(t.numel()) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    if idx.dim() != 1 or (idx.numel() and (idx.min() < 0 or idx.max() >= t.numel())):
        raise ValueError(f"`indices` must be a 1-D list of positions in [0, {t.numel()}); got {idx.tolist()[:8]}")
    base = loss_fn(t)

    def zeroed(i: Tensor) -> Tensor:
        keep = torch.ones_like(t).scatter(0, i.reshape(1), 0.0)
        return loss_fn(t * keep)

    with torch.no_grad():
        losses = vmap(zeroed, chunk_size=chunk_size)(idx)
    return losses - base


def set_delta(loss_fn: LossFn, theta, prune) -> Tensor:
    """Measured ``L(theta with the set zeroed) - L(theta)``; ``prune`` is a ``[d]`` boolean mask (True = zeroed)."""
    t = _theta(theta)
    p = torch.as_tensor(prune)
    if p.dtype != torch.bool or p.shape != t.shape:
        raise ValueError(f"`prune` must be a boolean mask of shape {tuple(t.shape)}; got {p.dtype} {tuple(p.shape)}")
    with torch.no_grad():
        return loss_fn(t.masked_fill(p, 0.0)) - loss_fn(t)
