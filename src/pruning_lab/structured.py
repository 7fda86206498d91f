"""Masks for the kinds of sparsity: unstructured, rows, columns, blocks and N:M (Chapter 1).

Every function returns a *keep-mask*: a boolean tensor of the weight's shape, True where the weight stays. The
kinds differ in what is removed together:

==============  ============================================================  ===================================
kind            removed together                                              ranked by
==============  ============================================================  ===================================
unstructured    single weights ``W[i, j]``                                    ``|W_ij|`` (or random scores)
row             whole rows ``W[i, :]`` (an output neuron of ``y = W x``)      the row's L2 norm
column          whole columns ``W[:, j]`` (an input feature)                  the column's L2 norm
block           ``bh x bw`` tiles; a block of ``head_dim`` full rows of a     the tile's Frobenius norm
                query projection is one attention head
N:M             the M - N smallest of every M consecutive inputs of a row     ``|W_ij|`` within the group
==============  ============================================================  ===================================

All of them remove EXACTLY ``int(count * sparsity)`` units (weights, rows, columns or blocks), and among units of
equal score the lower index goes first, as :func:`pruning_lab.masks.mask_lowest` does (which they reuse, like
:func:`pruning_lab.nm.nm_mask` for N:M). Inputs are never modified.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._validate import as_tensor, check_sparsity
from .masks import lowest_k, mask_lowest
from .nm import check_nm_args, nm_mask, parse_pattern

__all__ = [
    "KINDS",
    "magnitude_mask",
    "random_mask",
    "row_mask",
    "column_mask",
    "block_mask",
    "sparsity_mask",
    "mask_sparsity",
    "removal_order",
]

#: The kinds of sparsity :func:`sparsity_mask` knows ("N:M" also accepts a pattern such as "2:4" as the kind).
KINDS = ("unstructured", "row", "column", "block", "N:M")


def _k_or_sparsity(numel: int, sparsity: float | None, k: int | None) -> int:
    """The number of units to remove, from exactly one of ``sparsity`` (-> ``int(numel * sparsity)``) and ``k``."""
    if (sparsity is None) == (k is None):
        raise ValueError(f"give exactly one of `sparsity` and `k`; got sparsity={sparsity!r}, k={k!r}")
    if k is None:
        return int(numel * check_sparsity(sparsity))
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= numel:
        raise ValueError(f"`k` must be an integer in [0, {numel}] (the number of weights to remove); got {k!r}")
    return k


def _keep_lowest_k(scores: Tensor, k: int) -> Tensor:
    """Keep-mask of ``scores``' shape that removes the ``k`` lowest entries (ties: lower flat index first)."""
    return (~lowest_k(scores.reshape(1, -1), k)).reshape(scores.shape)


def magnitude_mask(weight, sparsity: float | None = None, *, k: int | None = None) -> Tensor:
    """Keep-mask removing the weights of smallest ``|W_ij|`` (Chapter 1).

    Give ``sparsity`` (remove ``int(numel * sparsity)``) or ``k`` (remove exactly ``k``). Ranks all entries of
    the tensor together (any shape); among equal ``|W_ij|`` the lower flattened index is removed first, so
    exactly that many go, never more. The weights :func:`pruning_lab.magnitude.magnitude_prune` zeroes.
    """
    w = as_tensor(weight, "weight")
    k = _k_or_sparsity(w.numel(), sparsity, k)
    return _keep_lowest_k(w.detach().abs(), k)


def random_mask(shape, sparsity: float | None = None, *, k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Keep-mask removing a uniformly random set of exactly ``int(numel * sparsity)`` (or ``k``) entries
    (Chapter 1).

    The recipe: draw scores ``torch.rand(shape, generator=generator)`` (float32) and remove the lowest, as
    magnitude pruning removes the smallest ``|W_ij|``. Every set of that size is equally likely; the same seed
    gives the same mask, and a higher sparsity with the same seed removes a superset. It is the set
    :func:`pruning_lab.magnitude.random_prune` zeroes with the same generator. No weights needed: random pruning
    does not look at them.
    """
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not shape or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"`shape` must be a non-empty tuple of positive integers, e.g. (576, 1536); got {shape!r}")
    numel = 1
    for d in shape:
        numel *= d
    k = _k_or_sparsity(numel, sparsity, k)
    scores = torch.rand(tuple(shape), generator=generator, dtype=torch.float32)
    return _keep_lowest_k(scores, k)


def removal_order(scores) -> Tensor:
    """Flat indices of ``scores`` in the order a lowest-first criterion removes them: ``[numel]`` int64
    (Chapter 1).

    A stable sort: equal scores in index order. The keep-mask at any sparsity is "everything but the first
    ``k`` of this order", so the masks of one criterion are nested (a higher sparsity removes a superset) and
    a sweep over sparsities needs one sort, not one per sparsity. With ``|W|`` as scores this is magnitude
    pruning (:func:`magnitude_mask`), with ``torch.rand`` scores random pruning (:func:`random_mask`).
    """
    s = as_tensor(scores, "scores")
    return torch.sort(s.detach().reshape(-1), stable=True).indices


def _matrix(weight) -> Tensor:
    w = as_tensor(weight, "weight")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    return w.detach()


def row_mask(weight, sparsity: float) -> Tensor:
    """Keep-mask removing ``int(d_out * sparsity)`` whole rows of ``weight`` ``[d_out, d_in]``, those of smallest
    L2 norm ``||W[i, :]||`` (Chapter 1). A removed row is an output neuron that always outputs 0."""
    w = _matrix(weight)
    keep_rows = mask_lowest(w.norm(dim=1), sparsity)  # (d_out,)
    return keep_rows[:, None].expand(w.shape).clone()


def column_mask(weight, sparsity: float) -> Tensor:
    """Keep-mask removing ``int(d_in * sparsity)`` whole columns of ``weight`` ``[d_out, d_in]``, those of
    smallest L2 norm ``||W[:, j]||`` (Chapter 1). A removed column is an input feature the layer ignores."""
    w = _matrix(weight)
    keep_cols = mask_lowest(w.norm(dim=0), sparsity)  # (d_in,)
    return keep_cols[None, :].expand(w.shape).clone()


def block_mask(weight, sparsity: float, block: tuple[int, int] = (4, 4)) -> Tensor:
    """Keep-mask removing whole ``bh x bw`` tiles of ``weight`` ``[d_out, d_in]``: the ``int(n_blocks *
    sparsity)`` tiles of smallest Frobenius norm (Chapter 1).

    ``block = (bh, bw)`` must divide the shape. Tiles are numbered row-major (tile ``(I, J)`` covers rows
    ``I*bh .. I*bh+bh-1`` and columns ``J*bw .. J*bw+bw-1``); ties go to the lower tile number. ``block=(1,
    d_in)`` removes rows, ``block=(d_out, 1)`` columns, and ``block=(head_dim, d_in)`` whole attention heads of
    a query/key/value projection.
    """
    w = _matrix(weight)
    if (not isinstance(block, (tuple, list)) or len(block) != 2
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in block)):
        raise ValueError(f"`block` must be a pair of positive integers (bh, bw); got {block!r}")
    bh, bw = block
    d_out, d_in = w.shape
    if d_out % bh or d_in % bw:
        raise ValueError(f"`block` {tuple(block)} must divide the shape of `weight` {tuple(w.shape)}")
    tiles = w.reshape(d_out // bh, bh, d_in // bw, bw)  # (I, bh, J, bw)
    norms = tiles.square().sum(dim=(1, 3)).sqrt()  # (I, J): Frobenius norm of each tile
    keep_tiles = mask_lowest(norms, sparsity)  # ranked together, row-major tile order
    return keep_tiles[:, None, :, None].expand(d_out // bh, bh, d_in // bw, bw).reshape(d_out, d_in).clone()


def sparsity_mask(weight, kind: str, sparsity: float = 0.5, *, block: tuple[int, int] = (4, 4),
                  n: int = 2, m: int = 4) -> Tensor:
    """Keep-mask of one kind of magnitude-based sparsity for ``weight`` ``[d_out, d_in]`` (Chapter 1).

    ``kind``: ``"unstructured"`` (:func:`magnitude_mask`), ``"row"``, ``"column"``, ``"block"`` (tiles of
    ``block``) or ``"N:M"`` (the N largest ``|W_ij|`` of every M consecutive inputs of a row,
    :func:`pruning_lab.nm.nm_mask`, with ``n`` and ``m``); a pattern such as ``"2:4"`` is accepted as the kind.
    For N:M the sparsity is fixed at ``1 - N/M`` and the ``sparsity`` argument is ignored.
    """
    if isinstance(kind, str) and ":" in kind and kind != "N:M":
        n, m = parse_pattern(kind)
        kind = "N:M"
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)} or a pattern such as '2:4'; got {kind!r}")
    if kind == "unstructured":
        return magnitude_mask(weight, sparsity)
    if kind == "row":
        return row_mask(weight, sparsity)
    if kind == "column":
        return column_mask(weight, sparsity)
    if kind == "block":
        return block_mask(weight, sparsity, block)
    w = _matrix(weight)
    check_nm_args(n, m, w.shape[1])
    return nm_mask(w.abs(), n, m)


def mask_sparsity(keep: Tensor) -> float:
    """Fraction of ``False`` entries (removed weights) of a boolean keep-mask (Chapter 1)."""
    if not isinstance(keep, Tensor) or keep.dtype != torch.bool:
        raise ValueError("`keep` must be a boolean tensor (True = kept)")
    return float((~keep).sum()) / keep.numel() if keep.numel() else 0.0
