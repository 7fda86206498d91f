"""Layer-wise OBS, the slow way: the teaching references behind SparseGPT (Chapter 4).

SparseGPT (Frantar & Alistarh 2023; fast implementation in :mod:`pruning_lab.sparsegpt`) solves the layer-wise
problem: given a weight ``W`` (``[d_out, d_in]``) and calibration inputs ``X`` (here ``[tokens, d_in]``, one
row per token; the paper writes the transpose), find ``W'`` with the required zeros that keeps
``||W X^T - W' X^T||_F^2`` small. For every row ``w`` of ``W`` this error is ``(w - w') X^T X (w - w')^T``: a
quadratic whose Hessian ``H = 2 X^T X`` does not depend on the row. So Optimal Brain Surgeon (Chapter 3) applies
row by row with one shared ``H``.

This module spells out what the fast algorithm compresses, one step at a time, so that the chapter can check
every step against it:

- :func:`obs_row`, :func:`sequential_obs`: OBS on each row, columns visited LEFT TO RIGHT in a fixed order, with
  a given mask: prune (and compensate on the not-yet-visited columns), then freeze the column by downdating the
  inverse Hessian. ``O(d_out d_in^3)``.
- :func:`downdated_inverses`, :func:`upper_factor_by_downdating`: the sequence of downdated inverses that every
  row needs, and the fact that their scaled rows are the rows of the upper Cholesky factor ``U`` of ``H^-1``.
- :func:`sequential_obs_cholesky`: the same computation driven by ``U``, column by column, with no lazy batching.
- :func:`select_block_mask`: SparseGPT's adaptive mask for one block of columns (OBS saliency ``w^2 / U_jj^2``).
- :func:`dampen_hessian`: dead inputs and dampening, exactly as the fast path does them.
- :func:`layer_reconstruction_error`, :func:`random_layer`, :func:`fit_power_law`, :func:`best_time`: the
  measuring tools of the chapter.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from torch import Tensor

from ._validate import as_tensor, check_sparsity
from .masks import mask_lowest
from .nm import check_nm_args, nm_mask
from .sparsegpt import inverse_hessian_factor

__all__ = [
    "random_layer",
    "layer_reconstruction_error",
    "dampen_hessian",
    "obs_row",
    "sequential_obs",
    "downdated_inverses",
    "upper_factor_by_downdating",
    "sequential_obs_cholesky",
    "select_block_mask",
    "fit_power_law",
    "best_time",
]


# ----------------------------------------------------------------------------------------------- helpers
def _matrix(x, name: str) -> Tensor:
    t = as_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"`{name}` must be 2-D; got shape {tuple(t.shape)}")
    return t


def _square(x, name: str) -> Tensor:
    t = _matrix(x, name)
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"`{name}` must be a square matrix [d_in, d_in]; got shape {tuple(t.shape)}")
    return t


def _bool_mask(prune, name: str, shape: tuple) -> Tensor:
    if not isinstance(prune, Tensor) or prune.dtype != torch.bool:
        raise ValueError(f"`{name}` must be a boolean tensor (True = pruned); got "
                         f"{getattr(prune, 'dtype', type(prune).__name__)}")
    if tuple(prune.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}; got {tuple(prune.shape)}")
    return prune


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64 (tests, worked examples), else float32 (as the fast path)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- a layer
def random_layer(d_out: int, d_in: int, tokens: int, *, seed: int, dtype: torch.dtype = torch.float64,
                 outliers: bool = False) -> tuple[Tensor, Tensor]:
    """A seeded random layer ``(W [d_out, d_in], X [tokens, d_in])`` whose inputs look like activations
    (Chapter 4).

    ``X = (Z B + 0.3 N) diag(s)``: ``k = max(1, d_in // 4)`` Gaussian factors ``Z`` (``[tokens, k]``) mixed by a
    Gaussian ``B`` (``[k, d_in]``, scaled by ``1/sqrt(k)``) make the inputs strongly correlated (effective rank
    about ``d_in / 4``); Gaussian noise ``N`` keeps ``X^T X`` invertible once ``tokens >= d_in``; per-feature
    scales ``s = exp(0.5 g)`` (``g`` Gaussian) make some inputs larger than others. ``outliers=True`` also
    multiplies ``max(1, d_in // 16)`` randomly chosen features by 20, like the outlier features of LLM
    activations (Chapter 5). ``W`` is Gaussian. Same ``seed``, same layer.
    """
    for name, v in (("d_out", d_out), ("d_in", d_in), ("tokens", tokens)):
        _check_positive_int(v, name)
    g = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    W = torch.randn(d_out, d_in, generator=g, dtype=f64)
    k = max(1, d_in // 4)
    B = torch.randn(k, d_in, generator=g, dtype=f64) / math.sqrt(k)  # (k, d_in)
    X = torch.randn(tokens, k, generator=g, dtype=f64) @ B  # (tokens, d_in): correlated
    X = X + 0.3 * torch.randn(tokens, d_in, generator=g, dtype=f64)
    X = X * torch.exp(0.5 * torch.randn(d_in, generator=g, dtype=f64))  # per-feature scales
    if outliers:
        cols = torch.randperm(d_in, generator=g)[: max(1, d_in // 16)]
        X[:, cols] *= 20.0
    return W.to(dtype), X.to(dtype)


def layer_reconstruction_error(weight, pruned, x) -> float:
    """``||W X^T - W' X^T||_F^2`` for inputs ``x`` of shape ``[tokens, d_in]`` (Chapter 4).

    The layer-wise objective SparseGPT minimises: the squared change of the layer's outputs on the calibration
    tokens. Equals ``sum_r (w_r - w'_r) (X^T X) (w_r - w'_r)^T = (n/2) sum_r dw_r H dw_r^T`` with
    ``H = (2/n) X^T X``. Computed in float64; returns a Python float.
    """
    W = _matrix(weight, "weight")
    Wp = _matrix(pruned, "pruned")
    if Wp.shape != W.shape:
        raise ValueError(f"`pruned` must have the shape of `weight` {tuple(W.shape)}; got {tuple(Wp.shape)}")
    X = _matrix(x, "x")
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"`x` must be [tokens, d_in] with d_in = {W.shape[1]}; got shape {tuple(X.shape)}")
    dW = (W.double() - Wp.double()).to(X.device)  # (d_out, d_in)
    return float((dW @ X.double().T).square().sum())  # (d_out, tokens) -> scalar


# ----------------------------------------------------------------------------------------------- dampening
def dampen_hessian(hessian, percdamp: float = 0.01) -> tuple[Tensor, Tensor]:
    """``(H_damped, dead)``: dead inputs repaired and ``percdamp * mean(diag H)`` added to the diagonal (Chapter 4).

    ``dead[j]`` is True where ``H_jj = 0`` (input ``j`` was zero on every calibration token: its weights cannot
    matter, and ``H`` is singular); those diagonal entries are set to 1 first, as in the reference code, and the
    fast path then zeroes their weights. The mean diagonal is taken after that repair, also as the reference
    (and :func:`pruning_lab.sparsegpt.inverse_hessian_factor`) does. ``hessian`` is untouched.
    """
    H = _square(hessian, "hessian").detach().clone()
    if isinstance(percdamp, bool) or not isinstance(percdamp, (int, float)) or not 0 <= percdamp < 1:
        raise ValueError(f"`percdamp` must be in [0, 1); got {percdamp!r}")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += percdamp * torch.diag(H).mean()
    return H, dead


# ----------------------------------------------------------------------------------------------- naive OBS
def obs_row(w, hessian_inv, prune) -> Tensor:
    """OBS on one row with a FIXED left-to-right column order and a given mask (Chapter 4).

    ``w``: ``[d]``; ``hessian_inv``: ``H^-1`` ``[d, d]`` (already dampened); ``prune``: bool ``[d]``. For
    ``j = 0, 1, ..., d-1`` with the current inverse ``G`` (``G = H^-1`` at the start):

        if prune[j]:  w <- w - (w_j / G_jj) G[:, j]   (OBS: w_j becomes 0, the free weights compensate)
        G <- G - G[:, j] G[j, :] / G_jj                (column j is frozen: downdate, as in Chapter 3)

    After the downdates ``G`` is zero in every frozen row and column, so the compensation reaches only the
    columns ``j, j+1, ...`` (the code updates just those, so frozen weights stay exactly as they were).
    Returns a new row (exact zeros where pruned); inputs untouched.
    """
    w0 = as_tensor(w, "w")
    if w0.dim() != 1:
        raise ValueError(f"`w` must be 1-D [d]; got shape {tuple(w0.shape)}")
    d = w0.shape[0]
    G0 = _square(hessian_inv, "hessian_inv")
    if G0.shape[0] != d:
        raise ValueError(f"`hessian_inv` must have shape ({d}, {d}) to match `w`; got {tuple(G0.shape)}")
    _bool_mask(prune, "prune", (d,))
    cdtype = _compute_dtype(w0, G0)
    row = w0.detach().clone().to(cdtype)
    G = G0.detach().clone().to(device=row.device, dtype=cdtype)
    for j in range(d):
        if prune[j]:
            row[j:] = row[j:] - (row[j] / G[j, j]) * G[j:, j]  # OBS update (G is 0 on frozen columns)
            row[j] = 0.0  # exactly zero (the update makes it zero up to rounding)
        if j + 1 < d:
            G = G - torch.outer(G[:, j], G[j, :]) / G[j, j]  # freeze column j
    return row.to(w0.dtype)


def sequential_obs(weight, hessian, prune, *, percdamp: float = 0.01) -> Tensor:
    """Naive SparseGPT: :func:`obs_row` on every row of ``weight`` with the same ``H`` (Chapter 4).

    ``weight``: ``[d_out, d_in]``; ``hessian``: ``H`` ``[d_in, d_in]`` (any positive scale); ``prune``: bool
    ``[d_out, d_in]`` (True = pruned). ``H`` is dampened and its dead inputs repaired by :func:`dampen_hessian`,
    dead columns of ``weight`` are zeroed, ``H^-1`` is computed once and each row runs its own
    ``d_in`` downdates: ``O(d_out d_in^3)`` operations. With the mask that
    :func:`pruning_lab.sparsegpt.sparsegpt_prune` chose, this reproduces its output to rounding error.
    float64 in -> float64 arithmetic, else float32. Returns a new tensor; inputs untouched.
    """
    W0 = _matrix(weight, "weight")
    d_out, d_in = W0.shape
    H0 = _square(hessian, "hessian")
    if H0.shape[0] != d_in:
        raise ValueError(f"`hessian` must have shape ({d_in}, {d_in}) to match `weight`; got {tuple(H0.shape)}")
    _bool_mask(prune, "prune", (d_out, d_in))
    cdtype = _compute_dtype(W0)
    Hd, dead = dampen_hessian(H0.to(device=W0.device, dtype=cdtype), percdamp)
    Hinv = torch.linalg.inv(Hd)
    W = W0.detach().clone().to(cdtype)
    W[:, dead] = 0.0
    out = torch.empty_like(W)
    for r in range(d_out):
        out[r] = obs_row(W[r], Hinv, prune[r])  # every row: the same H^-1, the same downdates
    return out.to(W0.dtype)


# ----------------------------------------------------------------------------------------------- the identity
def downdated_inverses(hessian_inv) -> Tensor:
    """The sequence of downdated inverses ``G_0 = H^-1, G_1, ..., G_{d-1}``, stacked as ``[d, d, d]`` (Chapter 4).

    ``G_{j+1} = G_j - G_j[:, j] G_j[j, :] / (G_j)_jj`` freezes column ``j``. ``G_j`` is zero outside its
    trailing ``[j:, j:]`` block, and that block is ``(H[j:, j:])^-1``: the inverse Hessian of the weights that
    are still free when the fixed order reaches column ``j``. Every row of the layer needs exactly this sequence.
    """
    G = _square(hessian_inv, "hessian_inv").detach().clone()
    d = G.shape[0]
    seq = torch.zeros(d, d, d, dtype=G.dtype, device=G.device)
    for j in range(d):
        seq[j] = G
        G = G - torch.outer(G[:, j], G[j, :]) / G[j, j]
    return seq


def upper_factor_by_downdating(hessian_inv) -> Tensor:
    """The upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), built row by row from the downdated
    inverses: ``U[j, j:] = G_j[j, j:] / sqrt((G_j)_jj)`` (Chapter 4).

    This is the Cholesky algorithm itself: its first row is ``A[0, :] / sqrt(A_00)``, and what remains to be
    factorised, ``A - U[0]^T U[0]``, is the OBS downdate of ``A`` that freezes column 0. Raises ``ValueError`` if
    a pivot is not positive (``hessian_inv`` is not positive definite).
    """
    G = _square(hessian_inv, "hessian_inv").detach().clone()
    d = G.shape[0]
    U = torch.zeros_like(G)
    for j in range(d):
        pivot = G[j, j]
        if not pivot > 0:
            raise ValueError(f"`hessian_inv` must be positive definite: pivot {j} is {float(pivot):.3g}")
        U[j, j:] = G[j, j:] / pivot.sqrt()
        G = G - torch.outer(U[j], U[j])  # = G - G[:, j] G[j, :] / G_jj: the downdate
    return U


def sequential_obs_cholesky(weight, hessian, prune, *, percdamp: float = 0.01) -> Tensor:
    """The same result as :func:`sequential_obs`, driven by the rows of ``U`` and done for all rows at once
    (Chapter 4).

    ``U`` from :func:`pruning_lab.sparsegpt.inverse_hessian_factor`. Column by column, for all rows together::

        q = W[:, j] with the pruned entries zeroed
        err = (W[:, j] - q) / U_jj                  # (d_out,)
        W[:, j:] -= err U[j, j:]                    # eager: every later column, at every step

    ``O(d_in^3 + d_out d_in^2)``. SparseGPT does exactly this, but applies the updates lazily in blocks of
    columns (one matrix product per block), which is what makes it fast.
    """
    W0 = _matrix(weight, "weight")
    d_out, d_in = W0.shape
    H0 = _square(hessian, "hessian")
    if H0.shape[0] != d_in:
        raise ValueError(f"`hessian` must have shape ({d_in}, {d_in}) to match `weight`; got {tuple(H0.shape)}")
    _bool_mask(prune, "prune", (d_out, d_in))
    cdtype = _compute_dtype(W0)
    U, dead = inverse_hessian_factor(H0.to(device=W0.device, dtype=cdtype), percdamp)
    W = W0.detach().clone().to(cdtype)
    W[:, dead] = 0.0
    for j in range(d_in):
        q = W[:, j].masked_fill(prune[:, j], 0.0)
        err = (W[:, j] - q) / U[j, j]  # (d_out,)
        W[:, j:] -= err.unsqueeze(1) * U[j, j:].unsqueeze(0)  # (d_out, d_in - j)
        W[:, j] = q
    return W.to(W0.dtype)


# ----------------------------------------------------------------------------------------------- the mask
def select_block_mask(w_block, u_diag, sparsity: float = 0.5, *, n: int | None = None,
                      m: int | None = None) -> Tensor:
    """SparseGPT's adaptive mask for one block of columns: prune-mask (True = pruned), ``[d_out, count]``
    (Chapter 4).

    Scores are the OBS saliencies ``w_ij^2 / U_jj^2`` (``U_jj^2`` is the diagonal entry of the downdated
    inverse when column ``j`` is reached). Unstructured: the ``int(d_out * count * sparsity)`` lowest scores of
    the WHOLE block (rows may lose different numbers; ties: lower flat index first). N:M (``n``, ``m``;
    ``sparsity`` ignored): in each group of ``m`` consecutive columns, each row loses its ``m - n`` lowest. In
    the algorithm ``w_block`` holds the weights already updated by the previous blocks, and an N:M group's mask
    is chosen when the group is reached.
    """
    w = _matrix(w_block, "w_block")
    d = as_tensor(u_diag, "u_diag")
    if d.shape != (w.shape[1],):
        raise ValueError(f"`u_diag` must have shape ({w.shape[1]},), one entry per column; got {tuple(d.shape)}")
    check_sparsity(sparsity)
    nm = check_nm_args(n, m, w.shape[1])
    score = (w / d.to(w.device)).square()  # (d_out, count): w^2 / U_jj^2
    if nm is not None:
        return ~nm_mask(score, *nm)
    return ~mask_lowest(score, sparsity)  # the whole block is one comparison group


# ----------------------------------------------------------------------------------------------- measuring
def fit_power_law(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """``(k, c)`` of the least-squares fit ``time = c * size^k`` on log-log axes (Chapter 4)."""
    if len(sizes) != len(times) or len(sizes) < 2:
        raise ValueError(f"`times` must have one entry per size (at least 2); got {len(times)} for {len(sizes)}")
    if any(not s > 0 for s in sizes):
        raise ValueError("`sizes` must be positive")
    if any(not t > 0 for t in times):
        raise ValueError("`times` must be positive")
    x = torch.tensor([math.log(s) for s in sizes], dtype=torch.float64)
    y = torch.tensor([math.log(t) for t in times], dtype=torch.float64)
    A = torch.stack([x, torch.ones_like(x)], dim=1)  # (points, 2)
    k, logc = torch.linalg.lstsq(A, y.unsqueeze(1)).solution.squeeze(1).tolist()
    return k, math.exp(logc)


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Wall-clock seconds of the fastest of ``repeat`` calls of ``fn()`` (Chapter 4)."""
    _check_positive_int(repeat, "repeat")
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
