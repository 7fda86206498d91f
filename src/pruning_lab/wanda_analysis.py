"""The experiments of Chapter 5 (Wanda): input statistics of real layers, output errors, one driver step.

Wanda (Sun et al. 2024) scores weight ``W_ij`` of a linear layer by ``|W_ij| * ||X_j||_2``, where ``X_j`` is the
``j``-th input channel over all calibration tokens. This module gathers what the chapter needs around the
per-matrix rule of :mod:`pruning_lab.wanda`:

* :func:`collect_input_stats`: forward pre-hooks on chosen linears of a (dense) model record, over the
  calibration windows, ``sum_t x_tj^2`` per input channel (Wanda's statistic) and, on request, SparseGPT's
  ``H = 2/n X X^T``. With the norms one sees the *outlier features* of an LLM.
* :func:`reconstruction_error`: the layer-wise objective ``||W X - W' X||_F^2 / ||W X||_F^2``.
* :func:`prune_layer_methods`: one layer pruned by several methods from the same statistics (masks, weights,
  errors), for the chapter's widget.
* :func:`block_inputs`, :func:`block_outputs`, :func:`wanda_prune_block`, :func:`wanda_block_step`: ONE step of
  the layer-wise driver of :func:`pruning_lab.llm.prune_model`, written as small pure functions: statistics
  pass with hooks, prune every linear of a *copy* of the block, propagate the calibration inputs through the
  pruned copy. Chaining the step over all blocks reproduces ``prune_model(model, "wanda", ...)``.
* :func:`wanda_weights_from_stats`: Wanda with a comparison group of one row, one matrix, or the whole model
  (one global threshold), from statistics gathered once on the dense model (Chapter 5's ablation).

Everything is deterministic and leaves its inputs untouched (the model, a block, tensors).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._validate import as_tensor, check_choice, check_sparsity
from .magnitude import global_magnitude_masks
from .masks import mask_lowest
from .nm import check_nm_args, nm_mask
from .sparsegpt import HessianAccumulator, sparsegpt_prune
from .wanda import InputNormAccumulator, wanda_prune, wanda_scores

__all__ = [
    "InputStats",
    "collect_input_stats",
    "reconstruction_error",
    "LayerPruning",
    "LAYER_METHODS",
    "prune_layer_methods",
    "block_inputs",
    "block_outputs",
    "wanda_prune_block",
    "wanda_block_step",
    "WANDA_GROUPS",
    "wanda_weights_from_stats",
]

LAYER_METHODS = ("magnitude", "wanda", "wanda_layer", "sparsegpt")
WANDA_GROUPS = ("row", "layer", "global")


# ------------------------------------------------------------------------------------------ input statistics
@dataclass
class InputStats:
    """What one linear layer saw on the calibration data (Chapter 5).

    ``sq_norms[j] = sum_t x_tj^2`` over all ``ntokens`` tokens (``[d_in]``, float32); ``hessian`` is SparseGPT's
    ``H = 2/n X X^T`` (``[d_in, d_in]``) when it was requested, else None.
    """

    sq_norms: Tensor
    ntokens: int
    hessian: Tensor | None = None

    @property
    def norms(self) -> Tensor:
        """``||X_j||_2`` per input channel, ``[d_in]``: the factor in Wanda's score."""
        return self.sq_norms.sqrt()


def _calibration(calibration, model) -> Tensor:
    from .llm.driver import _check_calibration

    return _check_calibration(calibration, model)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    return batch_size


@torch.no_grad()
def collect_input_stats(model: nn.Module, calibration, layers=None, *, hessian=False,
                        batch_size: int = 1) -> dict[str, InputStats]:
    """Input statistics of linear layers of ``model`` on ``calibration`` windows, by forward pre-hooks
    (Chapter 5).

    ``layers``: full names as in :func:`pruning_lab.llm.prunable_linears` (e.g.
    ``"model.layers.3.mlp.down_proj"``), or None for every linear in the decoder blocks. ``calibration``: token
    ids ``[nsamples, seqlen]``, run ``batch_size`` windows at a time through the model **as it is** (dense, or
    already pruned: these are that model's activations, not the layer-wise driver's). The forward pass stops after
    the last decoder block that holds a requested layer. ``hessian=True`` also accumulates ``H = 2/n X X^T`` for
    every layer; a list of names, for those layers only. Returns ``{name: InputStats}`` on the CPU, in the order
    of ``layers``.
    """
    from .llm.driver import _StopForward, _input_device, find_decoder_blocks, prunable_linears

    linears = prunable_linears(model)
    if layers is None:
        names = list(linears)
    else:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or not layers:
            raise ValueError("`layers` must be None or a non-empty list of layer names such as "
                             f"{next(iter(linears))!r}")
        names = list(layers)
        unknown = [n for n in names if n not in linears]
        if unknown:
            raise ValueError(f"`layers` names no linear of the decoder blocks: {unknown[:3]}; valid names look like "
                             f"{next(iter(linears))!r} (see pruning_lab.llm.prunable_linears)")
    calibration = _calibration(calibration, model)
    _check_batch_size(batch_size)

    path, blocks = find_decoder_blocks(model)
    last_block = max(int(n[len(path) + 1:].split(".", 1)[0]) for n in names)
    if isinstance(hessian, bool):
        with_h = names if hessian else []
    elif isinstance(hessian, (list, tuple)) and all(n in names for n in hessian):
        with_h = list(hessian)
    else:
        raise ValueError("`hessian` must be True, False or a list of names taken from `layers`")
    norms = {n: InputNormAccumulator(linears[n].in_features) for n in names}
    hess = {n: HessianAccumulator(linears[n].in_features) for n in with_h}

    def pre_hook(name):
        def hook(module, args):
            x = args[0]  # (batch, seqlen, d_in)
            norms[name].add_batch(x)
            if name in hess:
                hess[name].add_batch(x)
        return hook

    def stop(module, args, out):
        raise _StopForward

    handles = [linears[n].register_forward_pre_hook(pre_hook(n)) for n in names]
    if last_block + 1 < len(blocks):
        handles.append(blocks[last_block].register_forward_hook(stop))
    was_training = model.training
    model.eval()
    dev = _input_device(model)
    try:
        for i in range(0, calibration.shape[0], batch_size):
            try:
                model(input_ids=calibration[i : i + batch_size].to(dev), use_cache=False)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
        if was_training:
            model.train()
    return {n: InputStats(norms[n].sq_norms.cpu(), norms[n].ntokens,
                          hess[n].hessian.cpu() if n in hess else None) for n in names}


# ------------------------------------------------------------------------------------------ output error
def reconstruction_error(weight, pruned, *, x=None, gram=None) -> float:
    """Relative output error of a pruned layer, ``||W X - W' X||_F^2 / ||W X||_F^2`` (Chapter 5).

    ``weight``, ``pruned``: ``[d_out, d_in]``. Give the inputs either as ``x`` (``[..., d_in]``, one row per
    token) or as a Gram matrix ``gram`` proportional to ``X X^T`` (``[d_in, d_in]``; SparseGPT's ``H = 2/n X X^T``
    works: the scale cancels). With ``D = W - W'``: ``tr(D G D^T) / tr(W G W^T)``. Computed in float64.
    """
    w = as_tensor(weight, "weight")
    p = as_tensor(pruned, "pruned")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    if p.shape != w.shape:
        raise ValueError(f"`pruned` must have the shape of `weight` {tuple(w.shape)}; got {tuple(p.shape)}")
    if (x is None) == (gram is None):
        raise ValueError("give exactly one of `x` (the layer's inputs [..., d_in]) and `gram` ([d_in, d_in])")
    d_in = w.shape[1]
    if x is not None:
        x = as_tensor(x, "x")
        if x.shape[-1] != d_in:
            raise ValueError(f"`x` must have last dimension d_in={d_in}; got shape {tuple(x.shape)}")
        x = x.reshape(-1, d_in).double().to(w.device)  # (tokens, d_in)
        G = x.T @ x
    else:
        G = as_tensor(gram, "gram").double().to(w.device)
        if G.shape != (d_in, d_in):
            raise ValueError(f"`gram` must have shape ({d_in}, {d_in}); got {tuple(G.shape)}")
    w64 = w.double()
    d = w64 - p.double().to(w.device)
    denom = float(((w64 @ G) * w64).sum())
    if denom <= 0:
        raise ValueError("the dense output W X is zero (all-zero `weight` or inputs): the relative error is undefined")
    return float(((d @ G) * d).sum()) / denom


# ------------------------------------------------------------------------------------------ one layer, several methods
@dataclass
class LayerPruning:
    """One layer pruned by one method (Chapter 5): the new ``weight``, the ``keep`` mask (True = kept) and the
    relative output ``error`` ``||W X - W' X||^2 / ||W X||^2`` on the calibration inputs."""

    weight: Tensor
    keep: Tensor
    error: float


def prune_layer_methods(weight, stats: InputStats, sparsity: float = 0.5, methods=("magnitude", "wanda", "sparsegpt"),
                        *, n: int | None = None, m: int | None = None) -> dict[str, LayerPruning]:
    """Prune one layer with several methods from the same calibration statistics (Chapter 5).

    ``weight``: ``[d_out, d_in]``; ``stats``: its :class:`InputStats` with ``hessian`` (collect them with
    ``hessian=True``). ``methods`` from :data:`LAYER_METHODS`: ``"magnitude"`` (smallest ``|W_ij|`` of the
    matrix), ``"wanda"`` (per output row), ``"wanda_layer"`` (Wanda scores ranked over the whole matrix),
    ``"sparsegpt"`` (with its weight update; the mask is where the result is non-zero). N:M when ``n``, ``m``
    are given (``sparsity`` ignored). Returns ``{method: LayerPruning}``; ``weight`` is untouched.
    """
    w = as_tensor(weight, "weight")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    if not isinstance(stats, InputStats) or stats.hessian is None:
        raise ValueError("`stats` must be an InputStats with a hessian (collect_input_stats(..., hessian=True))")
    if stats.sq_norms.shape != (w.shape[1],):
        raise ValueError(f"`stats` is for a layer with {stats.sq_norms.shape[0]} inputs; `weight` has {w.shape[1]}")
    check_sparsity(sparsity)
    nm = check_nm_args(n, m, w.shape[1])
    if isinstance(methods, str) or not methods:
        raise ValueError(f"`methods` must be a non-empty list of names from {list(LAYER_METHODS)}; got {methods!r}")
    for meth in methods:
        check_choice(meth, "methods", set(LAYER_METHODS))
    out = {}
    for meth in methods:
        if meth == "sparsegpt":
            new = sparsegpt_prune(w, stats.hessian.to(w.device), sparsity, n=n, m=m)
            keep = new != 0
        else:
            scores = w.abs() if meth == "magnitude" else wanda_scores(w, stats.sq_norms)
            if nm is not None:
                keep = nm_mask(scores, *nm)
            else:
                keep = mask_lowest(scores, sparsity, group="row" if meth == "wanda" else "tensor")
            new = w.masked_fill(~keep, 0.0)
        out[meth] = LayerPruning(new, keep, reconstruction_error(w, new, gram=stats.hessian))
    return out


# ------------------------------------------------------------------------------------------ one driver step
@torch.no_grad()
def block_inputs(model: nn.Module, calibration, block: int = 0) -> tuple[Tensor, dict]:
    """The inputs of decoder block ``block`` on the calibration windows, in the DENSE model, and the keyword
    arguments the block needs (Chapter 5).

    Returns ``(inputs, block_kwargs)``: ``inputs`` ``[nsamples, seqlen, hidden]`` and the keyword arguments
    (attention mask, position ids, rotary ``position_embeddings``...) that the model passes to a block for ONE
    window, so that ``block(inputs[i:i+1], **block_kwargs)`` runs window ``i``. Blocks before ``block`` are run
    as they are (nothing is pruned); ``model`` is not modified.
    """
    from .llm.driver import _capture_inputs, find_decoder_blocks

    _, blocks = find_decoder_blocks(model)
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < len(blocks):
        raise ValueError(f"`block` must be an integer in [0, {len(blocks)}); got {block!r}")
    calibration = _calibration(calibration, model)
    was_training = model.training
    model.eval()
    try:
        x, kwargs_by_b = _capture_inputs(model, blocks, calibration, 1)
        kwargs = kwargs_by_b[1]
        for b in range(block):
            x = block_outputs(blocks[b], x, kwargs)
    finally:
        if was_training:
            model.train()
    return x, kwargs


def _check_block_args(block, inputs, block_kwargs) -> None:
    if not isinstance(block, nn.Module):
        raise ValueError(f"`block` must be a torch.nn.Module (a decoder block); got {type(block).__name__}")
    if not isinstance(inputs, Tensor) or inputs.dim() != 3:
        raise ValueError("`inputs` must be a tensor [nsamples, seqlen, hidden] (see block_inputs)")
    if not isinstance(block_kwargs, dict):
        raise ValueError(f"`block_kwargs` must be a dict of keyword arguments for the block; got "
                         f"{type(block_kwargs).__name__}")


@torch.no_grad()
def block_outputs(block: nn.Module, inputs: Tensor, block_kwargs: dict) -> Tensor:
    """``block(inputs[i:i+1], **block_kwargs)`` for every window ``i``, stacked: ``[nsamples, seqlen, hidden]``
    (Chapter 5). The propagate pass of the layer-wise driver."""
    from .llm.driver import _first

    _check_block_args(block, inputs, block_kwargs)
    outs = torch.empty_like(inputs)
    for i in range(inputs.shape[0]):
        outs[i : i + 1] = _first(block(inputs[i : i + 1], **block_kwargs))
    return outs


@torch.no_grad()
def wanda_prune_block(block: nn.Module, inputs: Tensor, block_kwargs: dict, sparsity: float = 0.5, *,
                      n: int | None = None, m: int | None = None, group: str = "row") -> nn.Module:
    """A pruned COPY of a decoder block: Wanda on every ``nn.Linear`` inside it (Chapter 5).

    1. statistics pass: forward pre-hooks on the copy's linears add ``x_j^2`` of every input token to an
       :class:`~pruning_lab.wanda.InputNormAccumulator` per layer, while the (dense) copy runs each window of
       ``inputs`` (``[nsamples, seqlen, hidden]``) with ``block_kwargs``;
    2. the hooks are removed and EVERY linear is pruned from those statistics (all gathered before any pruning,
       as the reference code does) with :func:`~pruning_lab.wanda.wanda_prune` (``group`` "row" or "layer"; N:M
       with ``n``, ``m``).

    ``block`` is not modified. A linear the forward never calls is left dense.
    """
    _check_block_args(block, inputs, block_kwargs)
    check_sparsity(sparsity)
    check_choice(group, "group", {"row", "layer"})
    pruned = copy.deepcopy(block).eval()
    linears = {name: mod for name, mod in pruned.named_modules() if isinstance(mod, nn.Linear)}
    if not linears:
        raise ValueError("`block` contains no nn.Linear layers to prune")
    for lin in linears.values():
        check_nm_args(n, m, lin.in_features)
    acc = {name: InputNormAccumulator(lin.in_features) for name, lin in linears.items()}

    def hook(name):
        def pre_hook(module, args):
            acc[name].add_batch(args[0])  # (1, seqlen, d_in) -> sum over tokens of x_j^2
        return pre_hook

    handles = [lin.register_forward_pre_hook(hook(name)) for name, lin in linears.items()]
    try:
        block_outputs(pruned, inputs, block_kwargs)  # 1. statistics pass (its outputs are not needed)
    finally:
        for h in handles:
            h.remove()
    for name, lin in linears.items():  # 2. prune every linear from the statistics of the dense block
        if acc[name].ntokens == 0:
            continue
        lin.weight.copy_(wanda_prune(lin.weight, acc[name].sq_norms, sparsity, n=n, m=m, group=group))
    return pruned


def wanda_block_step(block: nn.Module, inputs: Tensor, block_kwargs: dict, sparsity: float = 0.5, *,
                     n: int | None = None, m: int | None = None, group: str = "row") -> Tensor:
    """One step of the layer-wise driver for Wanda: the outputs of the PRUNED block (Chapter 5).

    ``block_outputs(wanda_prune_block(block, inputs, block_kwargs, ...), inputs, block_kwargs)``: gather the
    statistics on the dense block, prune a copy, and run the calibration inputs through the pruned copy. The
    result, ``[nsamples, seqlen, hidden]``, is what the next block receives in
    ``pruning_lab.llm.prune_model(model, "wanda", ...)``. ``block`` is not modified.
    """
    pruned = wanda_prune_block(block, inputs, block_kwargs, sparsity, n=n, m=m, group=group)
    return block_outputs(pruned, inputs, block_kwargs)


# ------------------------------------------------------------------------------------------ comparison groups
def wanda_weights_from_stats(model: nn.Module, stats: dict[str, InputStats], sparsity: float = 0.5, *,
                             group: str = "row") -> dict[str, Tensor]:
    """Wanda-pruned weights of the layers in ``stats`` with the comparison group ``group`` (Chapter 5).

    ``stats``: ``{name: InputStats}`` from :func:`collect_input_stats` (typically every layer, on the dense
    model). ``group``: ``"row"`` (each output row loses ``int(d_in * sparsity)``: the paper's choice), ``"layer"``
    (one ranking per matrix) or ``"global"`` (ONE threshold on the scores ``|W_ij| ||X_j||`` of all the layers
    together: exactly ``int(total * sparsity)`` weights go, ties pruned in layer order then index order, so
    layers lose very different fractions). Every layer's statistics come from the same calibration tokens, so
    the scores of different layers are in the same units (the square root of a layer's output error).
    Returns ``{name: new weight}`` (the model is not modified; load them with
    :func:`pruning_lab.llm.restore_weights` when ``stats`` covers every prunable layer).
    """
    from .llm.driver import prunable_linears

    check_sparsity(sparsity)
    check_choice(group, "group", set(WANDA_GROUPS))
    if not isinstance(stats, dict) or not stats or not all(isinstance(s, InputStats) for s in stats.values()):
        raise ValueError("`stats` must be a non-empty dict {layer name: InputStats} (see collect_input_stats)")
    linears = prunable_linears(model)
    unknown = [n for n in stats if n not in linears]
    if unknown:
        raise ValueError(f"`stats` has layers that are not linears of `model`'s decoder blocks: {unknown[:3]}")
    weights = {n: linears[n].weight.detach() for n in stats}
    if group != "global":
        return {n: wanda_prune(w, stats[n].sq_norms, sparsity, group=group) for n, w in weights.items()}
    # one threshold for all: scores are >= 0, so "lowest |score|" (the global magnitude rule) = lowest score
    scores = [wanda_scores(w, stats[n].sq_norms.to(w.device)) for n, w in weights.items()]
    keeps = global_magnitude_masks(scores, sparsity)
    del scores
    return {n: w.masked_fill(~k.to(w.device), 0.0) for (n, w), k in zip(weights.items(), keeps)}
