"""Run several pruning configurations on one model and tabulate their perplexities (Chapters 1, 4 and 5).

The model is pruned in place by :func:`~pruning_lab.llm.prune_model`, so between runs the dense weights of the
decoder linears are put back from a snapshot (a copy of ~0.4 GB for the embedded model, much faster than
reloading). Every row is measured by the call that produces it: nothing is cached between runs.
"""
from __future__ import annotations

import time
from typing import Iterable

import torch
from torch import Tensor, nn

from .driver import check_sparsity, prunable_linears, prune_model
from .evaluate import perplexity

__all__ = ["snapshot_weights", "restore_weights", "run_grid"]

_RUN_KEYS = {"method", "pattern", "sparsity", "label", "wanda_group", "blocksize", "percdamp", "seed"}


def snapshot_weights(model: nn.Module) -> dict[str, Tensor]:
    """A copy of the weight of every prunable linear (``{name: tensor}``, same device and dtype) (Chapter 4)."""
    return {name: lin.weight.detach().clone() for name, lin in prunable_linears(model).items()}


def restore_weights(model: nn.Module, snapshot: dict[str, Tensor]) -> None:
    """Copy ``snapshot`` (from :func:`snapshot_weights`) back into ``model``'s linears, in place (Chapter 4)."""
    linears = prunable_linears(model)
    if set(linears) != set(snapshot):
        raise ValueError("`snapshot` does not match the model's prunable linears (was it taken from this model?)")
    with torch.no_grad():
        for name, lin in linears.items():
            lin.weight.copy_(snapshot[name])


def run_grid(
    model: nn.Module,
    runs: Iterable[dict],
    *,
    eval_tokens: Tensor,
    seqlen: int,
    calibration: Tensor | None = None,
    max_windows: int | None = None,
    dense: bool = True,
    progress: bool = False,
    callback=None,
) -> list[dict]:
    """Prune ``model`` once per entry of ``runs``, each time from the dense weights, and measure perplexity
    (Chapter 4).

    ``runs``: dicts with ``method`` and optionally ``pattern`` (default ``"unstructured"``), ``sparsity``
    (default 0.5), ``label`` (a name for the row), and any of ``wanda_group``, ``blocksize``, ``percdamp``,
    ``seed`` (passed to :func:`~pruning_lab.llm.prune_model`). ``dense=True`` adds a first row for the unpruned
    model. Perplexity: :func:`~pruning_lab.llm.perplexity` on ``eval_tokens`` in ``seqlen`` windows (the first
    ``max_windows``). ``callback(row)`` is called after each row (e.g. to print it).

    Returns one dict per row: ``label, method, pattern, sparsity`` (target), ``measured_sparsity``,
    ``perplexity``, ``prune_time_s`` (None for dense), ``eval_time_s``, ``report`` (prune_model's). The model is
    left DENSE (restored) at the end, also after an error.
    """
    runs = list(runs)
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or "method" not in run:
            raise ValueError(f"`runs[{i}]` must be a dict with at least a 'method' key; got {run!r}")
        unknown = set(run) - _RUN_KEYS
        if unknown:
            raise ValueError(f"`runs[{i}]` has unknown keys {sorted(unknown)}; allowed: {sorted(_RUN_KEYS)}")
    snap = snapshot_weights(model)
    rows = []

    def measure():
        t0 = time.perf_counter()
        ppl = perplexity(model, eval_tokens, seqlen, max_windows=max_windows)
        return ppl, time.perf_counter() - t0

    try:
        if dense:
            ppl, secs = measure()
            rows.append(dict(label="dense", method="dense", pattern="-", sparsity=0.0,
                             measured_sparsity=check_sparsity(model)["total"], perplexity=ppl, prune_time_s=None,
                             eval_time_s=secs, report=None))
            if callback:
                callback(rows[-1])
        for run in runs:
            restore_weights(model, snap)
            kwargs = {k: v for k, v in run.items() if k not in {"method", "pattern", "sparsity", "label"}}
            pattern = run.get("pattern", "unstructured")
            report = prune_model(model, run["method"], run.get("sparsity", 0.5), pattern, calibration,
                                 progress=progress, **kwargs)
            ppl, secs = measure()
            label = run.get("label") or f"{run['method']} {report['pattern']}"
            rows.append(dict(label=label, method=run["method"], pattern=report["pattern"],
                             sparsity=report["sparsity"], measured_sparsity=report["total_sparsity"],
                             perplexity=ppl, prune_time_s=report["time_s"], eval_time_s=secs, report=report))
            if callback:
                callback(rows[-1])
    finally:
        restore_weights(model, snap)
    return rows
