"""OWL: outlier-weighted layerwise sparsity (Yin et al. 2024), a non-uniform sparsity per decoder block (Chapter 5).

Wanda and SparseGPT prune every block to the same sparsity ``S``. OWL observes that blocks differ in how many
*outlier* scores they hold, and that outliers matter: it keeps more weights in blocks with more of them.

1. **Layerwise outlier distribution (LOD).** For block ``l``, take Wanda's score of every weight of every linear
   of the block, ``A_ij = |W_ij| ||X_j||_2`` (on the DENSE model's activations), and count the fraction of scores
   larger than ``M`` times their mean over the block: ``D_l = #{A_ij > M mean(A)} / #A``. (OWL's default
   ``M = 5``.)
2. **Sparsity from the LOD.** Map the ``D_l`` linearly onto kept fractions spanning ``2 lambda``, centred on the
   target: ``k_l = 2 lambda (D_l - min D) / (max D - min D)``, then ``k_l <- k_l - mean(k) + (1 - S)``, and
   ``S_l = 1 - k_l``. So ``mean(S_l) = S`` (with blocks of equal size, the model's sparsity is exactly ``S``),
   every ``S_l`` lies in ``[S - lambda, S + lambda]``, and the block with the most outliers is pruned least.
   (OWL's default ``lambda = 0.08``.)

The per-block sparsities then go to the usual layer-wise driver (:func:`pruning_lab.llm.prune_model` with a
sequence of sparsities, one per block).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["outlier_ratio", "owl_sparsities", "block_outlier_ratios"]


def _positive(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"`{name}` must be a positive number; got {x!r}")
    return float(x)


def outlier_ratio(scores: Sequence[Tensor], m: float = 5.0) -> float:
    """``D = #{a > m mean(a)} / #a`` over all entries ``a`` of the score tensors ``scores`` taken together (e.g.
    Wanda's ``|W_ij| ||X_j||`` of every linear of one block), the fraction of outliers (Chapter 5)."""
    m = _positive(m, "m")
    if isinstance(scores, Tensor):
        scores = [scores]
    if not scores or any(not isinstance(s, Tensor) or s.numel() == 0 for s in scores):
        raise ValueError("`scores` must be a non-empty list of non-empty tensors")
    flat = torch.cat([s.detach().reshape(-1).double() for s in scores])  # [sum of numels]
    if not torch.isfinite(flat).all():
        raise ValueError("`scores` contain NaN or inf")
    return float((flat > m * flat.mean()).double().mean())


def owl_sparsities(ratios: Sequence[float], sparsity: float, lam: float = 0.08) -> list[float]:
    """Per-block sparsities from the outlier ratios ``ratios`` (one per block): kept fractions spread linearly
    over ``2 lam`` around ``1 - sparsity``, the most outliers keeping the most (Chapter 5). Equal ratios give the
    uniform ``sparsity`` everywhere."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ValueError(f"`sparsity` must be a number in (0, 1); got {sparsity!r}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam:
        raise ValueError(f"`lam` must be a number >= 0; got {lam!r}")
    if sparsity - lam < 0 or sparsity + lam >= 1:
        raise ValueError(f"`lam` {lam!r} is too large for `sparsity` {sparsity!r}: the block sparsities "
                         f"[{sparsity - lam:g}, {sparsity + lam:g}] must lie in [0, 1)")
    d = torch.as_tensor(list(ratios), dtype=torch.float64)  # [blocks]
    if d.numel() == 0 or not torch.isfinite(d).all() or (d < 0).any():
        raise ValueError("`ratios` must be a non-empty sequence of fractions >= 0, one per block")
    spread = d.max() - d.min()
    kept = torch.zeros_like(d) if spread == 0 else (d - d.min()) / spread * (2 * lam)  # in [0, 2 lam]
    kept = kept - kept.mean() + (1 - sparsity)
    return [float(1 - k) for k in kept]


def block_outlier_ratios(model, calibration: Tensor, m: float = 5.0, *, batch_size: int = 1) -> list[float]:
    """``D_l`` of every decoder block of ``model`` (Chapter 5): Wanda's scores ``|W_ij| ||X_j||`` of all the
    block's linears, with ``||X_j||`` from the DENSE model's activations on ``calibration`` (token ids
    ``[nsamples, seqlen]``), and :func:`outlier_ratio` over them."""
    from .llm.driver import find_decoder_blocks, prunable_linears
    from .wanda_analysis import collect_input_stats

    m = _positive(m, "m")
    path, blocks = find_decoder_blocks(model)
    stats = collect_input_stats(model, calibration, batch_size=batch_size)
    linears = prunable_linears(model)
    by_block: list[list[Tensor]] = [[] for _ in blocks]
    for name, lin in linears.items():
        b = int(name[len(path) + 1:].split(".")[0])  # "<path>.<b>.<rest>"
        w = lin.weight.detach().float().cpu()  # [d_out, d_in]
        by_block[b].append(w.abs() * stats[name].norms[None, :])  # Wanda's score
    return [outlier_ratio(scores, m) for scores in by_block]
