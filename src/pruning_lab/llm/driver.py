"""The layer-wise driver: prune every linear layer of a decoder-only LM, block by block (Chapter 4).

This is the model-level half of SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2024); the per-matrix
rules live in :mod:`pruning_lab.sparsegpt`, :mod:`pruning_lab.wanda` and :mod:`pruning_lab.magnitude`.
The data flow, as in both reference implementations::

    calibration tokens [nsamples, seqlen]
      -> run the model up to decoder block 0 and record its inputs X_0 [nsamples, seqlen, hidden]
         (plus the keyword arguments the block needs: attention mask, position ids, rotary cos/sin)
      -> for each block b:
           1. statistics pass: run X_b through block b; forward hooks on its nn.Linear layers accumulate
              H = 2/n sum x x^T (SparseGPT) or ||x_j||^2 (Wanda) over all calibration tokens
           2. prune every linear of the block from those statistics (all from the same pass, as the references do)
           3. propagate pass: run X_b through the *pruned* block: X_{b+1} = block_b'(X_b)
      -> the next block sees the outputs of the already-pruned blocks, so it compensates their error.

Magnitude and random pruning need no data: the driver skips the forward passes for them.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .._validate import check_sparsity as _check_sparsity_value

__all__ = ["METHODS", "find_decoder_blocks", "prunable_linears", "prune_model", "check_sparsity"]

METHODS = ("magnitude", "magnitude_global", "random", "wanda", "sparsegpt")
_NEEDS_DATA = {"wanda", "sparsegpt"}
_BLOCK_PATHS = ("model.layers", "model.decoder.layers", "layers", "decoder.layers")


def find_decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(path, blocks)``: the decoder blocks of a causal LM, e.g. ``("model.layers", ModuleList)`` (Chapter 4).

    Looks for ``model.model.layers`` (Llama, Mistral, Qwen, SmolLM, ...) and ``model.model.decoder.layers``
    (OPT), and the same paths without the leading ``model`` for base models. Raises ``ValueError`` naming
    ``model`` if there are none.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module (a Hugging Face causal LM); got {type(model).__name__}")
    for path in _BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return path, obj
    raise ValueError(
        f"`model` ({type(model).__name__}) has no decoder blocks: looked for "
        + ", ".join(f"model.{p}" for p in _BLOCK_PATHS)
        + " (Llama-family and OPT layouts)"
    )


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """``{full name: nn.Linear}`` of every linear layer inside the decoder blocks (Chapter 4).

    These are the layers the papers prune: attention projections and MLP matrices. The embeddings and the
    ``lm_head`` are outside the blocks and are never pruned.
    """
    path, blocks = find_decoder_blocks(model)
    return {
        f"{path}.{i}.{name}": mod
        for i, block in enumerate(blocks)
        for name, mod in block.named_modules()
        if isinstance(mod, nn.Linear)
    }


def _block_device(block: nn.Module) -> torch.device:
    """The device of a block's weights; ``ValueError`` if any of them is offloaded (a meta tensor)."""
    device = None
    for p in block.parameters():
        if p.device.type == "meta":
            raise ValueError(
                "`model` has weights offloaded to disk or CPU by accelerate (meta tensors); the driver prunes "
                "weights in memory. Load the model with a device_map that keeps every block on a GPU or the CPU."
            )
        device = device or p.device
    return device or torch.device("cpu")


def _to(obj, device: torch.device):
    """Move tensors (also inside tuples, lists and dicts) to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _first(out):
    """A decoder block returns a tensor (transformers >= 4.54) or a tuple whose first item is the hidden states."""
    return out[0] if isinstance(out, (tuple, list)) else out


class _StopForward(Exception):
    """Raised by the capture hook once block 0 has received its inputs: the rest of the model is not run."""


def _input_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and emb.weight.device.type != "meta":
        return emb.weight.device
    return next(model.parameters()).device


@torch.no_grad()
def _capture_inputs(model, blocks, calibration: Tensor, batch_size: int):
    """Inputs of block 0: ``X`` ``[nsamples, seqlen, hidden]`` on block 0's device, and the keyword arguments
    the block received, one dict per batch size (they depend only on the batch shape: no padding here)."""
    block0 = blocks[0]
    dev0 = _block_device(block0)
    nsamples = calibration.shape[0]
    store: dict[str, Any] = {"x": None, "kwargs": {}}

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (b, seqlen, hidden)
        if store["x"] is None:
            store["x"] = torch.empty((nsamples, *hidden.shape[1:]), dtype=hidden.dtype, device=dev0)
        store["batch"] = hidden
        b = hidden.shape[0]
        if b not in store["kwargs"]:
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            kw.update(use_cache=False)
            for cache_key in ("past_key_values", "past_key_value", "layer_past"):
                if cache_key in kw:
                    kw[cache_key] = None
            store["kwargs"][b] = _to(kw, dev0)
        raise _StopForward

    in_dev = _input_device(model)
    handle = block0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, nsamples, batch_size):
            batch = calibration[i : i + batch_size].to(in_dev)  # (b, seqlen)
            try:
                model(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
            else:  # pragma: no cover - the hook always fires if block 0 is used
                raise ValueError("`model`: its forward never reached decoder block 0")
            store["x"][i : i + batch.shape[0]] = store.pop("batch").to(dev0)
    finally:
        handle.remove()
    return store["x"], store["kwargs"]


class _StatsCollector:
    """Forward pre-hooks on a block's linears that feed each layer's input to its accumulator.

    Two economies, both exact:

    - layers that receive the very same input tensor in a forward pass (q/k/v share the normed hidden states;
      gate/up share the MLP input) share ONE accumulator: their statistics are identical, so they are computed
      once. Sharing is decided on the first batch and checked on every later one.
    - the statistics pass needs only the *inputs* of the linears: once the last linear of the block (in call
      order, e.g. ``down_proj``) has been recorded, the rest of the forward is useless, so from the second batch
      on the hook stops the forward there (by raising ``_StopForward``), skipping that layer's matmul.
    """

    def __init__(self, linears: dict[str, nn.Linear], make_acc) -> None:
        self.linears = linears
        self.make_acc = make_acc
        self.leader: dict[str, str] = {}  # layer -> the layer whose accumulator it uses
        self.acc: dict[str, Any] = {}
        self.seen: dict[int, tuple[Tensor, str]] = {}  # id(input) -> (input, first layer) within one forward
        self.calls: list[str] = []  # call order on the first batch
        self.first_batch = True
        self.stop_after: str | None = None
        self.handles = [lin.register_forward_pre_hook(self._hook(name)) for name, lin in linears.items()]

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0]  # (..., in_features)
            hit = self.seen.get(id(x))
            if self.first_batch:
                self.calls.append(name)
                if name in self.leader:  # called twice in one forward: no early stop, keep accumulating
                    pass
                elif hit is not None and hit[0] is x:
                    self.leader[name] = hit[1]
                    return
                else:
                    self.leader[name] = name
                    self.acc[name] = self.make_acc(module.in_features)
            leader = self.leader[name]
            if leader != name:
                if hit is None or hit[0] is not x or hit[1] != leader:
                    raise RuntimeError(f"internal: layer {name} no longer shares its input with {leader}")
            else:
                self.seen[id(x)] = (x, name)  # keeps x alive, so its id cannot be reused in this forward
                self.acc[name].add_batch(x.detach())
            if name == self.stop_after:
                raise _StopForward

        return hook

    def run(self, block: nn.Module, x: Tensor, kwargs: dict) -> None:
        """One statistics forward of ``block`` on ``x``."""
        try:
            block(x, **kwargs)
        except _StopForward:
            pass
        self.seen.clear()
        if self.first_batch:
            self.first_batch = False
            if len(self.calls) == len(set(self.calls)) == len(self.linears):  # each linear exactly once
                self.stop_after = self.calls[-1]

    def stats(self, name: str):
        """The accumulator holding ``name``'s statistics, or None if the layer was never called."""
        leader = self.leader.get(name)
        return None if leader is None else self.acc[leader]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.seen.clear()


@contextlib.contextmanager
def _tf32_off():
    """Exact fp32 matmuls on Ampere GPUs, as the reference code sets; restored afterwards."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _check_finite_weights(linears: dict[str, nn.Linear]) -> None:
    for name, lin in linears.items():
        if not torch.isfinite(lin.weight).all():
            raise ValueError(f"`model`: the weight of {name} contains NaN or inf; nothing was pruned")


def _check_calibration(calibration, model) -> Tensor:
    if calibration is None:
        raise ValueError("`calibration` is required for wanda and sparsegpt: a LongTensor [nsamples, seqlen]")
    if not isinstance(calibration, Tensor):
        try:
            calibration = torch.as_tensor(calibration)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError("`calibration` must be a LongTensor [nsamples, seqlen] of token ids") from exc
    if calibration.is_floating_point() or calibration.is_complex() or calibration.dtype == torch.bool:
        raise ValueError(f"`calibration` must hold integer token ids; got dtype {calibration.dtype}")
    if calibration.dim() != 2:
        raise ValueError(f"`calibration` must be 2-D [nsamples, seqlen]; got shape {tuple(calibration.shape)}")
    if calibration.numel() == 0:
        raise ValueError(f"`calibration` is empty (shape {tuple(calibration.shape)}): give at least one window")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and (int(calibration.min()) < 0 or int(calibration.max()) >= vocab):
        raise ValueError(f"`calibration` has token ids outside [0, {vocab}) (the model's vocabulary)")
    return calibration.long()


def _parse_pattern(pattern) -> tuple[int, int] | None:
    from ..nm import parse_pattern

    try:
        return parse_pattern(pattern)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("`pattern`") else f"`pattern` {pattern!r} is impossible: {msg}") from None


def prune_model(
    model: nn.Module,
    method: str,
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    calibration: Tensor | None = None,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    seed: int = 0,
    batch_size: int = 1,
    progress: bool = True,
    wanda_group: str = "row",
) -> dict:
    """Prune every linear layer in the decoder blocks of ``model`` **in place**; return a report (Chapter 4).

    ``method``: ``"magnitude"`` (smallest |W_ij| per matrix), ``"magnitude_global"`` (one |W| threshold for all
    matrices together), ``"random"`` (seeded), ``"wanda"`` (score |W_ij| ||X_j||_2, per output row; Chapter 5)
    or ``"sparsegpt"`` (OBS with H = 2/n X X^T, blocks of ``blocksize`` columns, ``percdamp`` dampening;
    Chapter 4). ``pattern``: ``"unstructured"`` (exactly ``int(numel * sparsity)`` per matrix, or per row for
    Wanda) or ``"N:M"`` such as ``"2:4"`` (N kept of every M consecutive inputs; ``sparsity`` is then fixed at
    1 - N/M and the argument is ignored). ``wanda_group``: Wanda's comparison group, ``"row"`` (the paper's
    choice) or ``"layer"`` (the whole matrix; Chapter 5's ablation). ``calibration``: LongTensor ``[nsamples, seqlen]`` of token ids,
    needed by wanda and sparsegpt (ignored by the others, which run no forward pass).

    Layer-wise (wanda, sparsegpt): record the inputs of block 0 on the calibration set; then for each block one
    statistics pass (hooks on its linears, ``batch_size`` windows at a time), prune all its linears, and one
    propagate pass through the PRUNED block, whose outputs feed the next block. Blocks dispatched with
    ``accelerate`` (``device_map``) are handled one by one on their own device. No gradients; TF32 off during
    the call. Bad arguments raise ``ValueError`` before anything is pruned.

    Returns ``{"method", "pattern", "sparsity" (target), "total_sparsity" (measured), "layers": {name:
    sparsity}, "time_s", "times_s": {"capture", "stats", "prune", "propagate"}, "nsamples", "seqlen", ...}``.
    """
    from tqdm.auto import tqdm

    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}; got {method!r}")
    if wanda_group not in ("row", "layer"):
        raise ValueError(f"`wanda_group` must be one of ['layer', 'row']; got {wanda_group!r}")
    nm = _parse_pattern(pattern)
    if nm is None:
        sparsity = _check_sparsity_value(sparsity)
    else:
        sparsity = 1.0 - nm[0] / nm[1]
        if method == "magnitude_global":
            raise ValueError(
                "`pattern`: magnitude_global is unstructured only (an N:M pattern is a per-group rule, the same "
                "for global and per-matrix magnitude); use method='magnitude' with an N:M pattern"
            )
    for name, value, ok in (
        ("blocksize", blocksize, isinstance(blocksize, int) and not isinstance(blocksize, bool) and blocksize > 0),
        ("batch_size", batch_size, isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0),
        ("percdamp", percdamp, isinstance(percdamp, (int, float)) and not isinstance(percdamp, bool)
         and 0 <= percdamp < 1),
    ):
        if not ok:
            raise ValueError(f"`{name}` is invalid: got {value!r}")
    if nm is not None and method == "sparsegpt" and blocksize % nm[1]:
        raise ValueError(f"`blocksize` ({blocksize}) must be a multiple of M={nm[1]} for the pattern {pattern!r}")

    path, blocks = find_decoder_blocks(model)
    block_linears = [
        {name: mod for name, mod in block.named_modules() if isinstance(mod, nn.Linear)} for block in blocks
    ]
    full_name = {id(mod): f"{path}.{i}.{name}" for i, lins in enumerate(block_linears) for name, mod in lins.items()}
    if not any(block_linears):
        raise ValueError("`model`: its decoder blocks contain no nn.Linear layers to prune")
    if nm is not None:
        for lins in block_linears:
            for name, lin in lins.items():
                if lin.in_features % nm[1]:
                    raise ValueError(
                        f"`pattern` {pattern!r}: M={nm[1]} does not divide the input dimension {lin.in_features} "
                        f"of {full_name[id(lin)]}"
                    )
    for block in blocks:
        _block_device(block)  # raises if weights are offloaded to disk (meta tensors)
    _check_finite_weights({full_name[id(m)]: m for lins in block_linears for m in lins.values()})
    if method in _NEEDS_DATA:
        calibration = _check_calibration(calibration, model)

    from ..magnitude import global_magnitude_thresholds, magnitude_prune, random_prune
    from ..sparsegpt import HessianAccumulator, sparsegpt_prune_shared
    from ..wanda import InputNormAccumulator, wanda_prune

    n_, m_ = nm if nm is not None else (None, None)
    times = {"capture": 0.0, "stats": 0.0, "prune": 0.0, "propagate": 0.0}
    was_training = model.training
    model.eval()
    t_start = time.perf_counter()

    def set_weight(lin: nn.Linear, new: Tensor) -> None:
        lin.weight.copy_(new.to(device=lin.weight.device, dtype=lin.weight.dtype))

    desc = f"{method} {pattern if nm is None else f'{n_}:{m_}'}"
    bar = tqdm(range(len(blocks)), desc=desc, unit="block", disable=not progress)
    try:
        with torch.no_grad(), _tf32_off():
            if method in ("magnitude", "random"):
                gen = torch.Generator().manual_seed(int(seed))
                for b in bar:
                    t0 = time.perf_counter()
                    for lin in block_linears[b].values():
                        w = lin.weight.detach()
                        if method == "magnitude":
                            new = magnitude_prune(w, sparsity, n=n_, m=m_)
                        else:  # the CPU generator draws the scores: move the matrix there and back
                            new = random_prune(w.cpu(), sparsity, n=n_, m=m_, generator=gen)
                        set_weight(lin, new)
                    times["prune"] += time.perf_counter() - t0
            elif method == "magnitude_global":
                t0 = time.perf_counter()
                all_lins = [lin for lins in block_linears for lin in lins.values()]
                keeps = global_magnitude_thresholds([lin.weight.detach() for lin in all_lins], sparsity)
                k = 0
                for b in bar:
                    for lin in block_linears[b].values():
                        lin.weight.masked_fill_(~keeps[k].to(lin.weight.device), 0.0)
                        k += 1
                times["prune"] += time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                inps, kwargs_by_b = _capture_inputs(model, blocks, calibration, batch_size)
                if not torch.isfinite(inps).all():
                    raise ValueError(
                        "`model`: the inputs of decoder block 0 on the `calibration` data contain NaN or inf "
                        "(check the model's embeddings); nothing was pruned"
                    )
                outs = torch.empty_like(inps)
                times["capture"] += time.perf_counter() - t0
                nsamples = inps.shape[0]
                acc_class = HessianAccumulator if method == "sparsegpt" else InputNormAccumulator

                def make_acc(d_in: int):  # NaN/inf inputs are caught once per layer, after the pass
                    return acc_class(d_in, check_each_batch=False)
                for b in bar:
                    block, lins = blocks[b], block_linears[b]
                    dev = _block_device(block)
                    kw = {bs: _to(k_, dev) for bs, k_ in kwargs_by_b.items()}

                    # 1. statistics pass: hooks on the block's linears see every calibration token
                    t0 = time.perf_counter()
                    collector = _StatsCollector(lins, make_acc)
                    try:
                        for i in range(0, nsamples, batch_size):
                            x = inps[i : i + batch_size].to(dev)  # (b, seqlen, hidden)
                            collector.run(block, x, kw[x.shape[0]])
                        for acc in collector.acc.values():
                            acc.check_finite()
                    except ValueError as exc:  # an accumulator saw NaN/inf inputs inside block b
                        done = "nothing was pruned" if b == 0 else \
                            f"blocks 0..{b - 1} are ALREADY PRUNED, reload the model before retrying"
                        raise ValueError(
                            f"`model`: inside decoder block {b}, a linear layer received NaN or inf activations on "
                            f"the `calibration` data ({exc}); {done}"
                        ) from exc
                    finally:
                        collector.remove()
                    times["stats"] += time.perf_counter() - t0

                    # 2. prune every linear of the block from those statistics
                    t0 = time.perf_counter()
                    shared: dict[int, list[str]] = {}  # layers that share one accumulator (q/k/v; gate/up)
                    for name, lin in lins.items():
                        acc = collector.stats(name)
                        if acc is None:  # the block's forward never used this layer: no statistics
                            warnings.warn(f"{full_name[id(lin)]} was not called by its block's forward; left dense",
                                          RuntimeWarning, stacklevel=2)
                            continue
                        if method == "sparsegpt":
                            shared.setdefault(id(acc), []).append(name)
                        else:
                            new = wanda_prune(lin.weight.detach(), acc.sq_norms, sparsity, n=n_, m=m_,
                                              group=wanda_group)
                            set_weight(lin, new)
                    for names in shared.values():  # one H^-1 factor and one column loop per shared Hessian
                        news = sparsegpt_prune_shared([lins[nm_].weight.detach() for nm_ in names],
                                                      collector.stats(names[0]).hessian, sparsity, n=n_, m=m_,
                                                      blocksize=blocksize, percdamp=percdamp)
                        for nm_, new in zip(names, news):
                            set_weight(lins[nm_], new)
                    del collector
                    times["prune"] += time.perf_counter() - t0

                    # 3. propagate: the PRUNED block's outputs are the next block's inputs (not needed after
                    # the last block)
                    if b + 1 < len(blocks):
                        t0 = time.perf_counter()
                        for i in range(0, nsamples, batch_size):
                            x = inps[i : i + batch_size].to(dev)
                            outs[i : i + x.shape[0]] = _first(block(x, **kw[x.shape[0]])).to(outs.device)
                        if not torch.isfinite(outs).all():
                            raise ValueError(
                                f"`model`: decoder block {b} produced NaN or inf activations on the `calibration` "
                                "data after pruning; "
                                f"blocks 0..{b} are ALREADY PRUNED, reload the model before retrying "
                                "(try a lower sparsity or more calibration data)"
                            )
                        inps, outs = outs, inps
                        times["propagate"] += time.perf_counter() - t0
    finally:
        bar.close()
        if was_training:
            model.train()
    elapsed = time.perf_counter() - t_start

    measured = check_sparsity(model, pattern if nm is not None else None)
    report = {
        "method": method,
        "pattern": "unstructured" if nm is None else f"{n_}:{m_}",
        "sparsity": sparsity,
        "total_sparsity": measured["total"],
        "layers": measured["layers"],
        "time_s": elapsed,
        "times_s": times,
        "seed": seed,
    }
    if method in _NEEDS_DATA:
        report.update(nsamples=int(calibration.shape[0]), seqlen=int(calibration.shape[1]), batch_size=batch_size)
    if method == "sparsegpt":
        report.update(blocksize=blocksize, percdamp=percdamp)
    if method == "wanda":
        report["wanda_group"] = wanda_group
    if nm is not None:
        report["nm_valid"] = measured["nm_valid"]
    return report


def check_sparsity(model: nn.Module, pattern: str | None = None) -> dict:
    """Measured sparsity of the linear layers in the decoder blocks (Chapter 1).

    Returns ``{"layers": {name: fraction of zeros}, "total": zeros / weights over all of them, "params": count}``
    and, when ``pattern`` is an N:M pattern such as ``"2:4"``, ``"nm_valid"`` (every group of M consecutive
    inputs of every row has at most N non-zeros) and ``"nm_invalid"`` (names of the layers that break it).
    Embeddings and ``lm_head`` are excluded: the pruning methods leave them dense. Zeros already present before
    pruning count too (the embedded Q4_1 model has about 0.03% exact zeros, so its measured sparsity after
    pruning can exceed the target by that much).
    """
    nm = _parse_pattern(pattern) if pattern is not None else None
    layers: dict[str, float] = {}
    zeros = total = 0
    invalid: list[str] = []
    with torch.no_grad():
        for name, lin in prunable_linears(model).items():
            w = lin.weight
            z = int((w == 0).sum())
            layers[name] = z / w.numel()
            zeros += z
            total += w.numel()
            if nm is not None:
                from ..nm import check_nm

                if w.shape[1] % nm[1] or not check_nm(w.detach(), *nm):
                    invalid.append(name)
    out: dict[str, Any] = {"layers": layers, "total": zeros / total if total else 0.0, "params": total}
    if nm is not None:
        out.update(nm_valid=not invalid, nm_invalid=invalid)
    return out
