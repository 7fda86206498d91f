"""Wanda: pruning by weights and activations (Chapter 5; Sun et al. 2024).

Zeroing ``W_ij`` changes output ``i`` by ``W_ij X_j`` over the calibration tokens, whose squared norm is
``W_ij^2 ||X_j||^2``. Wanda's score is its square root, ``S_ij = |W_ij| * ||X_j||_2``, and the comparison group
is each output row: every row loses its ``int(d_in * sparsity)`` lowest scores (or M-N per N:M group).
No weight update: it is OBS with a diagonal Hessian and no compensation.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._validate import all_finite, as_tensor, check_choice, check_sparsity, layer_inputs
from .masks import mask_lowest
from .nm import check_nm_args, nm_mask

__all__ = ["InputNormAccumulator", "wanda_scores", "wanda_prune"]


class InputNormAccumulator:
    """Running ``sq_norms[j] = sum over calibration tokens of X_j^2`` for a layer with ``d_in`` inputs (Chapter 5).

    ``check_each_batch=False`` skips the per-batch NaN/inf check (call :meth:`check_finite` once at the end).
    """

    def __init__(self, d_in: int, *, check_each_batch: bool = True) -> None:
        if not isinstance(d_in, int) or d_in < 1:
            raise ValueError(f"`d_in` must be a positive integer; got {d_in!r}")
        self.d_in = d_in
        self.sq_norms = torch.zeros(d_in, dtype=torch.float32)
        self.ntokens = 0
        self.check_each_batch = check_each_batch

    def add_batch(self, x: Tensor) -> None:
        """Add inputs ``x`` of shape ``[..., d_in]`` (any leading dims: batch, tokens)."""
        x = layer_inputs(x, self.d_in, check_finite=self.check_each_batch)  # (tokens, d_in), float32
        if self.sq_norms.device != x.device:
            self.sq_norms = self.sq_norms.to(x.device)
        self.sq_norms += torch.linalg.vector_norm(x, dim=0).square()
        self.ntokens += x.shape[0]

    def check_finite(self) -> None:
        """Raise ``ValueError`` if the accumulated norms hold NaN or inf (some input did)."""
        if not all_finite(self.sq_norms):
            raise ValueError("`x` (the layer's inputs) contained NaN or inf in some batch")


def wanda_scores(weight, input_sq_norms) -> Tensor:
    """``S_ij = |W_ij| * sqrt(input_sq_norms[j])``, shape ``[d_out, d_in]`` (Chapter 5)."""
    w = as_tensor(weight, "weight")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    s = as_tensor(input_sq_norms, "input_sq_norms").to(device=w.device)
    if s.shape != (w.shape[1],):
        raise ValueError(f"`input_sq_norms` must have shape ({w.shape[1]},) = (d_in,); got {tuple(s.shape)}")
    if (s < 0).any():
        raise ValueError("`input_sq_norms` must be >= 0 (sums of squares)")
    return w.abs().float() * s.float().sqrt().unsqueeze(0)  # (d_out, d_in)


def wanda_prune(weight, input_sq_norms, sparsity: float = 0.5, *, n: int | None = None,
                m: int | None = None, group: str = "row") -> Tensor:
    """Zero the lowest Wanda scores of each output row (Chapter 5).

    Unstructured: exactly ``int(d_in * sparsity)`` per row (stable sort: ties prune the lower index);
    ``group="layer"`` ranks all scores of the matrix together instead (the paper's ablation: exactly
    ``int(numel * sparsity)`` in the matrix, rows may lose different numbers). N:M (``n``, ``m`` given;
    ``sparsity`` and ``group`` ignored): the M-N lowest of each group of M consecutive inputs.
    Returns a new tensor of ``weight``'s dtype; inputs untouched.
    """
    check_sparsity(sparsity)
    check_choice(group, "group", {"row", "layer"})
    scores = wanda_scores(weight, input_sq_norms)
    w = weight if isinstance(weight, Tensor) else as_tensor(weight, "weight")
    nm = check_nm_args(n, m, w.shape[1])
    keep = nm_mask(scores, *nm) if nm else mask_lowest(scores, sparsity, group="row" if group == "row" else "tensor")
    return w.masked_fill(~keep, 0.0)
