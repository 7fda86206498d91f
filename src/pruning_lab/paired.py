"""Paired comparisons of two pruned language models: calibration seeds and evaluation windows (Chapter 5).

Two methods pruned with the same calibration windows (seed ``s``) and scored on the same evaluation windows
(``k``) give paired differences ``d[s, k] = NLL_b[s, k] - NLL_a[s, k]`` (mean NLL per token of window ``k``). Their
mean is the difference of the two methods' mean NLLs; its uncertainty has two sources, the calibration sample
(seeds) and the evaluation text (windows). A **two-level paired bootstrap** resamples both: ``S`` seeds with
replacement, then ``K`` windows with replacement, and takes the mean of the resampled ``d``. The verdict is
"lower" (a < b) or "higher" only when the percentile interval excludes 0 *and* every seed's own mean difference
has the same sign; otherwise "no measurable difference".
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["paired_differences", "paired_bootstrap", "verdict", "ppl_ratio"]


def paired_differences(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Tensor:
    """``d = b - a`` as float64 ``[S, K]`` from per-seed lists of per-window NLLs of methods a and b (Chapter 5)."""
    ta, tb = (torch.as_tensor(x, dtype=torch.float64) for x in (a, b))
    for name, t in (("a", ta), ("b", tb)):
        if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
            raise ValueError(f"`{name}` must be [seeds, windows] (one list of window NLLs per seed); got shape "
                             f"{tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"`{name}` must be finite")
    if ta.shape != tb.shape:
        raise ValueError(f"`a` and `b` must have the same [seeds, windows] shape; got {tuple(ta.shape)} and "
                         f"{tuple(tb.shape)}")
    return tb - ta


def paired_bootstrap(d: Tensor, n_boot: int = 4000, ci: float = 0.95, seed: int = 0) -> dict:
    """Two-level bootstrap of the mean of ``d`` ``[S, K]`` (seeds, windows) (Chapter 5).

    Returns ``mean`` (of all ``d``), ``low``/``high`` (the ``ci`` percentile interval), ``per_seed`` (each
    seed's mean over windows) and the sizes. Deterministic for a given ``seed``."""
    d = torch.as_tensor(d, dtype=torch.float64)
    if d.dim() != 2 or d.numel() == 0:
        raise ValueError(f"`d` must be a non-empty [seeds, windows] tensor; got shape {tuple(d.shape)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"`n_boot` must be an integer >= 100; got {n_boot!r}")
    if not isinstance(ci, float) or not 0 < ci < 1:
        raise ValueError(f"`ci` must be a float in (0, 1); got {ci!r}")
    S, K = d.shape
    g = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, S, (n_boot, S), generator=g)  # [B, S]
    windows = torch.randint(0, K, (n_boot, S, K), generator=g)  # [B, S, K]
    rows = d[seeds]  # [B, S, K]: the resampled seeds' rows
    means = torch.gather(rows, 2, windows).mean(dim=(1, 2))  # [B]
    alpha = (1 - ci) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return {"mean": float(d.mean()), "low": low, "high": high, "per_seed": d.mean(dim=1).tolist(),
            "seeds": S, "windows": K, "ci": ci}


def verdict(boot: dict) -> str:
    """``"lower"`` (a < b: ``d`` > 0), ``"higher"``, or ``"no measurable difference"`` from :func:`paired_bootstrap`'s
    result: resolved only when the interval excludes 0 and every seed agrees in sign (Chapter 5)."""
    per_seed = boot["per_seed"]
    if boot["low"] > 0 and all(x > 0 for x in per_seed):
        return "lower"
    if boot["high"] < 0 and all(x < 0 for x in per_seed):
        return "higher"
    return "no measurable difference"


def ppl_ratio(boot: dict) -> tuple[float, float, float]:
    """The bootstrap interval of the NLL difference as a perplexity ratio ``exp(d)``: (mean, low, high)
    (Chapter 5)."""
    return math.exp(boot["mean"]), math.exp(boot["low"]), math.exp(boot["high"])

