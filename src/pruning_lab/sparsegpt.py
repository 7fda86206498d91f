"""SparseGPT: one-shot OBS pruning of a weight matrix with a shared Hessian (Chapter 4; Frantar & Alistarh 2023).

The layer-wise problem: given calibration inputs ``X`` (``[d_in, tokens]``) find a sparse ``W'`` minimising
``||W X - W' X||_F^2``. Its Hessian with respect to any row of ``W`` is ``H = 2 X X^T`` (``[d_in, d_in]``), the
same for every row. Visiting the columns left to right in a FIXED order, every row needs the same sequence of
downdated inverses ``H^-1``, ``(H_{2:,2:})^-1``, ...; the row ``j`` of the upper Cholesky factor ``U`` of
``H^-1`` (``H^-1 = U^T U``) holds exactly the row of the ``j``-th downdated inverse that OBS needs, divided by
the square root of its diagonal. So, per column ``j``:

    err_j = (w_j - q_j) / U_jj            (q_j: w_j with the pruned entries zeroed; per row)
    W[:, j:] -= err_j  U[j, j:]           (the OBS update of all later columns)

done lazily in blocks of ``blocksize`` columns; the mask of each block is chosen by the OBS saliency
``w^2 / U_jj^2`` over the whole block (unstructured) or per group of M (N:M). This mirrors the reference
implementation (IST-DASLab/sparsegpt, ``fasterprune``).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ._validate import as_tensor, check_sparsity, layer_inputs
from .nm import check_nm_args

__all__ = ["HessianAccumulator", "hessian_from_inputs", "inverse_hessian_factor", "sparsegpt_prune"]


class HessianAccumulator:
    """Running ``H = (2 / n) sum_t x_t x_t^T`` over ``n`` calibration tokens, in float32 (Chapter 4).

    Rescaled as tokens arrive (as the reference does), so ``H`` is always the mean over what was seen.
    """

    def __init__(self, d_in: int) -> None:
        if not isinstance(d_in, int) or d_in < 1:
            raise ValueError(f"`d_in` must be a positive integer; got {d_in!r}")
        self.d_in = d_in
        self.hessian = torch.zeros(d_in, d_in, dtype=torch.float32)
        self.nsamples = 0

    def add_batch(self, x: Tensor) -> None:
        """Add inputs ``x`` of shape ``[..., d_in]`` (any leading dims)."""
        x = layer_inputs(x, self.d_in)  # (tokens, d_in), float32
        if self.hessian.device != x.device:
            self.hessian = self.hessian.to(x.device)
        t = x.shape[0]
        self.hessian *= self.nsamples / (self.nsamples + t)
        self.nsamples += t
        x = x * (2.0 / self.nsamples) ** 0.5
        self.hessian += x.T @ x  # (d_in, d_in)


def hessian_from_inputs(x) -> Tensor:
    """``H = (2 / n) X X^T`` from inputs ``x`` of shape ``[n, d_in]`` (one row per token) (Chapter 4)."""
    x = as_tensor(x, "x")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"`x` must be 2-D [tokens, d_in] with at least one token; got shape {tuple(x.shape)}")
    return 2.0 / x.shape[0] * (x.T @ x)


def inverse_hessian_factor(hessian, percdamp: float = 0.01) -> tuple[Tensor, Tensor]:
    """Dampen ``H`` and return ``(U, dead)``: ``U`` upper triangular with ``H_damped^-1 = U^T U`` (Chapter 4).

    ``dead[j]`` is True for inputs that never fire (``H_jj = 0``); their diagonal is set to 1. Dampening adds
    ``percdamp * mean(diag H)`` to the diagonal; if the Cholesky factorisation still fails, the dampening is
    multiplied by 10 (up to 4 times) with a warning saying so.
    """
    H = as_tensor(hessian, "hessian").detach().clone()
    H = H if H.dtype == torch.float64 else H.float()  # float32 as the reference; float64 kept for tests
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"`hessian` must be a square matrix [d_in, d_in]; got shape {tuple(H.shape)}")
    if not 0 <= percdamp < 1 or isinstance(percdamp, bool):
        raise ValueError(f"`percdamp` must be in [0, 1); got {percdamp!r}")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    mean_diag = torch.mean(torch.diag(H))
    damp = percdamp * mean_diag
    idx = torch.arange(H.shape[0], device=H.device)
    for attempt in range(5):
        Hd = H.clone()
        Hd[idx, idx] += damp
        L, info = torch.linalg.cholesky_ex(Hd)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                if attempt:
                    warnings.warn(f"SparseGPT: the Hessian was not positive definite with percdamp={percdamp}; "
                                  f"used dampening {float(damp / mean_diag):.3g} x mean(diag H) instead. "
                                  "More calibration data usually fixes this.", RuntimeWarning, stacklevel=3)
                return U, dead
        damp = (damp if damp > 0 else mean_diag * 1e-4) * 10
    raise ValueError("`hessian` is singular even after 10^4 x the dampening: check the calibration inputs")


def sparsegpt_prune(weight, hessian, sparsity: float = 0.5, *, n: int | None = None, m: int | None = None,
                    blocksize: int = 128, percdamp: float = 0.01) -> Tensor:
    """Prune ``weight`` (``[d_out, d_in]``) with SparseGPT given ``hessian`` = X X^T of its inputs (Chapter 4).

    ``hessian``: ``[d_in, d_in]`` at any positive scale. Unstructured: each block of ``blocksize`` columns
    loses exactly ``int(d_out * block_cols * sparsity)`` weights, chosen by ``w^2 / U_jj^2``. N:M (``n``, ``m``;
    ``sparsity`` ignored): in each group of M consecutive columns, each row keeps N, chosen when the group is
    reached (so with the already-updated weights). Computes in float32; returns a new tensor of ``weight``'s
    dtype with zeros where pruned (float64 in, float64 arithmetic). ``weight`` and ``hessian`` are untouched.
    """
    W0 = as_tensor(weight, "weight")
    if W0.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(W0.shape)}")
    d_out, d_in = W0.shape
    H = as_tensor(hessian, "hessian")
    if H.shape != (d_in, d_in):
        raise ValueError(f"`hessian` must have shape ({d_in}, {d_in}) to match `weight`; got {tuple(H.shape)}")
    check_sparsity(sparsity)
    nm = check_nm_args(n, m, d_in)
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"`blocksize` must be a positive integer; got {blocksize!r}")
    if nm and blocksize % nm[1]:
        raise ValueError(f"`blocksize` must be a multiple of m={nm[1]}; got {blocksize}")

    cdtype = torch.float64 if W0.dtype == torch.float64 else torch.float32  # compute dtype
    U, dead = inverse_hessian_factor(H.to(W0.device, cdtype), percdamp)  # H^-1 = U^T U, U upper
    W = W0.detach().clone().to(cdtype)
    W[:, dead] = 0.0

    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()  # (d_out, count): the block, updated column by column
        Q1 = torch.zeros_like(W1)  # its pruned values
        Err1 = torch.zeros_like(W1)  # the scaled errors err_j
        U1 = U[i1:i2, i1:i2]  # (count, count)
        d1 = torch.diag(U1)  # (count,)

        if nm is None:  # adaptive mask of the whole block: lowest w^2 / U_jj^2, exactly k of them
            k = int(W1.numel() * sparsity)
            score = (W1 / d1).square().reshape(-1)
            prune1 = torch.zeros(W1.numel(), dtype=torch.bool, device=W.device)
            prune1[torch.sort(score, stable=True).indices[:k]] = True
            prune1 = prune1.reshape(W1.shape)
        else:
            prune1 = torch.zeros_like(W1, dtype=torch.bool)

        for j in range(count):
            if nm is not None and j % nm[1] == 0:  # N:M: choose this group's mask now, per row
                n_, m_ = nm
                score = (W1[:, j : j + m_] / d1[j : j + m_]).square()  # (d_out, m)
                drop = torch.sort(score, dim=1, stable=True).indices[:, : m_ - n_]
                prune1[:, j : j + m_].scatter_(1, drop, True)
            w = W1[:, j]
            q = w.masked_fill(prune1[:, j], 0.0)
            err = (w - q) / d1[j]  # (d_out,)
            W1[:, j:] -= err.unsqueeze(1) * U1[j, j:].unsqueeze(0)  # OBS update of the block's later columns
            Q1[:, j] = q
            Err1[:, j] = err

        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # lazy batched update of every later column

    return W.to(W0.dtype)
