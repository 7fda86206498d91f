"""Magnitude and random pruning of weight matrices: the baselines (Chapter 1).

Magnitude pruning removes the weights of smallest ``|w|`` (per matrix, or with one threshold shared by all
matrices of a model); random pruning removes a uniformly random set of the same size. Both remove EXACTLY
``int(numel * sparsity)`` weights (ties broken by index), unstructured or N:M.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._validate import as_tensor, check_sparsity
from .masks import _kth_smallest, mask_lowest, num_pruned
from .nm import check_nm_args, nm_mask

__all__ = ["magnitude_prune", "random_prune", "global_magnitude_masks", "global_magnitude_thresholds"]


def _matrix(weight, name: str = "weight") -> Tensor:
    w = as_tensor(weight, name)
    if w.dim() != 2:
        raise ValueError(f"`{name}` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    return w


def _prune_by_scores(w: Tensor, scores: Tensor, sparsity: float, n, m) -> Tensor:
    nm = check_nm_args(n, m, w.shape[1])
    keep = nm_mask(scores, *nm) if nm else mask_lowest(scores, sparsity)
    return w.masked_fill(~keep, 0.0)


def magnitude_prune(weight, sparsity: float = 0.5, *, n: int | None = None, m: int | None = None) -> Tensor:
    """Zero the ``int(numel * sparsity)`` smallest ``|W_ij|`` of the matrix, or the M-N smallest of every N:M
    group (then ``sparsity`` is ignored) (Chapter 1). Returns a new tensor; ``weight`` is untouched."""
    w = _matrix(weight)
    check_sparsity(sparsity)
    return _prune_by_scores(w, w.abs(), sparsity, n, m)


def random_prune(weight, sparsity: float = 0.5, *, n: int | None = None, m: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Zero a uniformly random set of exactly ``int(numel * sparsity)`` weights (or M-N per N:M group)
    (Chapter 1). Pass a seeded ``generator`` for reproducibility."""
    w = _matrix(weight)
    check_sparsity(sparsity)
    # drawn on the CPU (a seeded CPU generator gives the same mask on every device), then moved to the weight
    scores = torch.rand(w.shape, generator=generator, dtype=torch.float32).to(w.device)
    return _prune_by_scores(w, scores, sparsity, n, m)


def global_magnitude_masks(weights: list, sparsity: float) -> list[Tensor]:
    """Keep-masks for one magnitude threshold shared by all ``weights`` (Chapter 1).

    Exactly ``int(total * sparsity)`` weights are removed across all matrices; among weights of equal
    ``|w|`` at the threshold, the earlier matrix / lower index goes first. Memory: one float32 copy of
    all magnitudes (no full sort).
    """
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError("`weights` must be a non-empty list of tensors")
    check_sparsity(sparsity)
    tensors = [as_tensor(w, f"weights[{i}]").detach() for i, w in enumerate(weights)]
    home = tensors[0].device  # matrices may live on several devices (device_map): rank them on the first one
    mags = [t.abs().float().to(home) for t in tensors]
    flat = torch.cat([a.reshape(-1) for a in mags])
    k = num_pruned(flat.numel(), sparsity)
    if k == 0:
        return [torch.ones_like(t, dtype=torch.bool) for t in tensors]
    thresh = _kth_smallest(flat.reshape(1, -1), k).reshape(())  # the k-th smallest |w|
    below = flat < thresh
    # of the weights equal to the threshold, prune the first (k - #below) in global index order
    ties = torch.nonzero(flat == thresh).squeeze(1)
    prune = below
    prune[ties[: k - int(below.sum())]] = True
    masks, start = [], 0
    for t in tensors:
        masks.append(~prune[start : start + t.numel()].reshape(t.shape).to(t.device))
        start += t.numel()
    return masks


# The name used by the model-level driver; same function.
global_magnitude_thresholds = global_magnitude_masks
