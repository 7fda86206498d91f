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

``sequential=True`` (GPTQ's "true-sequential" order, Frantar et al. 2023; Chapter 5) splits steps 1 and 2 of each
block into its groups of linears in call order, layers that share an input forming one group (Llama: q/k/v, o,
gate/up, down): a fresh statistics pass over all calibration windows before each group, so that every group is
calibrated on the outputs of the groups already pruned; then step 3 as usual. Every pass still sees all the
windows before anything it measures is pruned.

Magnitude and random pruning need no data: the driver skips the forward passes for them.

Each method is one small :class:`PruneMethod` subclass, registered by name in :data:`METHOD_CLASSES`; the one
loop of :func:`prune_model` calls its hooks: ``prepare`` (a whole-model step such as magnitude_global's
threshold), ``make_accumulator`` (the statistics, data methods only) and ``prune_block`` (step 2).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from .._validate import check_sparsity as _check_sparsity_value
from ..magnitude import global_magnitude_thresholds, magnitude_prune, random_prune
from ..sparsegpt import HessianAccumulator, sparsegpt_prune_shared
from ..wanda import InputNormAccumulator, wanda_prune

__all__ = [
    "METHODS", "METHOD_CLASSES", "PruneConfig", "PruneMethod", "Magnitude", "MagnitudeGlobal", "Random", "Wanda",
    "SparseGPT", "find_decoder_blocks", "prunable_linears", "prune_model", "check_sparsity",
]

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


class _NoStats:
    """An accumulator that keeps nothing: :func:`_call_groups` needs only the call order and the sharing."""

    def add_batch(self, x: Tensor) -> None:
        pass


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


# ------------------------------------------------------------------------------------------ the methods
@dataclass(frozen=True)
class PruneConfig:
    """The validated arguments of :func:`prune_model` that the pruning rules read (Chapter 4)."""

    sparsity: float  # target fraction of zeros; 1 - N/M for an N:M pattern
    nm: tuple[int, int] | None  # (N, M): N kept of every M consecutive inputs; None: unstructured
    blocksize: int = 128  # SparseGPT: columns pruned per lazy-update block
    percdamp: float = 0.01  # SparseGPT: percdamp * mean(diag H) added to diag H
    seed: int = 0  # random: the seed of its one CPU generator
    wanda_group: str = "row"  # Wanda: comparison group, "row" or "layer"

    @property
    def n(self) -> int | None:
        return None if self.nm is None else self.nm[0]

    @property
    def m(self) -> int | None:
        return None if self.nm is None else self.nm[1]


def _set_weight(lin: nn.Linear, new: Tensor) -> None:
    lin.weight.copy_(new.to(device=lin.weight.device, dtype=lin.weight.dtype))


class PruneMethod:
    """One pruning rule, applied by :func:`prune_model` to each decoder block in turn (Chapter 4).

    A new method is a subclass that overrides :meth:`prune` (one matrix, a pure function) or :meth:`prune_block`
    (all linears of a block at once), plus :meth:`prepare` if it needs every matrix of the model first; a
    data-driven one sets ``needs_data`` and ``accumulator``. Register it with ``METHOD_CLASSES[name] = cls``.
    """

    needs_data = False  # True: run the calibration data through each block and accumulate its inputs' statistics
    accumulator: Any = None  # class(d_in, check_each_batch=False) with add_batch(x) and check_finite()
    unstructured_only: str | None = None  # not None: the ValueError's message for an N:M pattern
    column_blocks = False  # True: prunes `blocksize` columns at a time, so an N:M pattern needs blocksize % M == 0

    def __init__(self, cfg: PruneConfig) -> None:
        self.cfg = cfg

    def make_accumulator(self, d_in: int):
        """Statistics of one linear layer with ``d_in`` inputs; NaN/inf is checked once, after the pass."""
        return self.accumulator(d_in, check_each_batch=False)

    def prepare(self, linears: list[nn.Linear]) -> None:
        """A whole-model step, run once on every linear of the model before block 0 (default: nothing)."""

    def prune_block(self, lins: dict[str, nn.Linear], stats: dict[str, Any]) -> None:
        """Prune the linears of one block in place; ``stats``: ``{name: accumulator}`` (empty without data)."""
        for name, lin in lins.items():
            _set_weight(lin, self.prune(lin.weight.detach(), stats.get(name)))

    def prune(self, weight: Tensor, stats) -> Tensor:
        """The pruned copy of ``weight`` ``[d_out, d_in]``, given its layer's accumulator (None without data)."""
        raise NotImplementedError

    def report(self) -> dict:
        """The method's own entries in :func:`prune_model`'s report (default: none)."""
        return {}


class Magnitude(PruneMethod):
    """Zero the ``int(numel * sparsity)`` smallest ``|W_ij|`` of each matrix, or the M-N smallest of every N:M
    group (Chapter 1)."""

    def prune(self, weight: Tensor, stats) -> Tensor:
        return magnitude_prune(weight, self.cfg.sparsity, n=self.cfg.n, m=self.cfg.m)


class MagnitudeGlobal(PruneMethod):
    """One threshold ``t`` on ``|W_ij|`` for all matrices together: exactly ``int(total * sparsity)`` weights of
    the model below it are zeroed, so layers of smaller weights lose more (Chapter 1)."""

    unstructured_only = (
        "`pattern`: magnitude_global is unstructured only (an N:M pattern is a per-group rule, the same "
        "for global and per-matrix magnitude); use method='magnitude' with an N:M pattern"
    )

    def prepare(self, linears: list[nn.Linear]) -> None:
        keeps = global_magnitude_thresholds([lin.weight.detach() for lin in linears], self.cfg.sparsity)
        self.keep = dict(zip(linears, keeps))  # nn.Linear -> keep-mask [d_out, d_in]

    def prune_block(self, lins: dict[str, nn.Linear], stats: dict[str, Any]) -> None:
        for lin in lins.values():
            lin.weight.masked_fill_(~self.keep.pop(lin).to(lin.weight.device), 0.0)


class Random(PruneMethod):
    """Zero a uniformly random set of ``int(numel * sparsity)`` weights of each matrix (or M-N per N:M group),
    drawn by ONE CPU generator seeded once, matrix after matrix in the driver's order (Chapter 1)."""

    def prepare(self, linears: list[nn.Linear]) -> None:
        self.gen = torch.Generator().manual_seed(int(self.cfg.seed))

    def prune(self, weight: Tensor, stats) -> Tensor:  # the CPU generator draws the scores: there and back
        return random_prune(weight.cpu(), self.cfg.sparsity, n=self.cfg.n, m=self.cfg.m, generator=self.gen)


class Wanda(PruneMethod):
    """Score ``S_ij = |W_ij| ||X_j||_2`` from the squared input norms; zero the lowest ``int(d_in * sparsity)``
    of each output row (``wanda_group="layer"``: of the whole matrix), or M-N per N:M group (Chapter 5)."""

    needs_data = True
    accumulator = InputNormAccumulator

    def prune(self, weight: Tensor, stats: InputNormAccumulator) -> Tensor:
        cfg = self.cfg
        return wanda_prune(weight, stats.sq_norms, cfg.sparsity, n=cfg.n, m=cfg.m, group=cfg.wanda_group)

    def report(self) -> dict:
        return {"wanda_group": self.cfg.wanda_group}


class SparseGPT(PruneMethod):
    """OBS column by column from ``H = 2/n sum_t x_t x_t^T`` (plus ``percdamp * mean(diag H)``) with
    ``H^-1 = U^T U``: for column j, ``err_j = (w_j - q_j) / U_jj`` and ``W[:, j:] -= err_j U[j, j:]``; the mask is
    chosen per block of ``blocksize`` columns (Chapter 4). Layers that see the same input (q/k/v; gate/up) share
    one ``H``, so one ``H^-1`` factor and one column loop serve them all."""

    needs_data = True
    accumulator = HessianAccumulator
    column_blocks = True

    def prune_block(self, lins: dict[str, nn.Linear], stats: dict[str, HessianAccumulator]) -> None:
        shared: dict[int, list[str]] = {}  # id(accumulator) -> the layers that share it, in block order
        for name in lins:
            shared.setdefault(id(stats[name]), []).append(name)
        cfg = self.cfg
        for names in shared.values():
            news = sparsegpt_prune_shared([lins[k].weight.detach() for k in names], stats[names[0]].hessian,
                                          cfg.sparsity, n=cfg.n, m=cfg.m, blocksize=cfg.blocksize,
                                          percdamp=cfg.percdamp)
            for k, new in zip(names, news):
                _set_weight(lins[k], new)

    def report(self) -> dict:
        return {"blocksize": self.cfg.blocksize, "percdamp": self.cfg.percdamp}


# name -> class; add an entry to add a method. METHODS: the built-in names, in this order (the CLI's choices).
METHOD_CLASSES: dict[str, type[PruneMethod]] = {
    "magnitude": Magnitude,
    "magnitude_global": MagnitudeGlobal,
    "random": Random,
    "wanda": Wanda,
    "sparsegpt": SparseGPT,
}
METHODS = tuple(METHOD_CLASSES)


# ------------------------------------------------------------------------------------------ validation
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


def _check_args(method, sparsity, pattern, blocksize, percdamp, batch_size, wanda_group, sequential=False):
    """``(method class, sparsity, nm)`` from :func:`prune_model`'s arguments; ValueError naming the first bad one."""
    if not isinstance(method, str) or method not in METHOD_CLASSES:
        raise ValueError(f"`method` must be one of {list(METHOD_CLASSES)}; got {method!r}")
    cls = METHOD_CLASSES[method]
    if wanda_group not in ("row", "layer"):
        raise ValueError(f"`wanda_group` must be one of ['layer', 'row']; got {wanda_group!r}")
    if not isinstance(sequential, bool):
        raise ValueError(f"`sequential` must be True or False; got {sequential!r}")
    nm = _parse_pattern(pattern)
    if isinstance(sparsity, (list, tuple)):  # one per decoder block (OWL, Chapter 5); the length is checked later
        if nm is not None:
            raise ValueError(f"`pattern` must be 'unstructured' when `sparsity` gives one value per block; "
                             f"got {pattern!r}")
        if method == "magnitude_global":
            raise ValueError("`sparsity`: one value per block is impossible for 'magnitude_global' (one threshold "
                             "for the whole model); give one number")
        return cls, [_check_sparsity_value(x, f"sparsity[{i}]") for i, x in enumerate(sparsity)], nm
    if nm is None:
        sparsity = _check_sparsity_value(sparsity)
    else:
        sparsity = 1.0 - nm[0] / nm[1]
        if cls.unstructured_only is not None:
            raise ValueError(cls.unstructured_only)
    for name, value, ok in (
        ("blocksize", blocksize, isinstance(blocksize, int) and not isinstance(blocksize, bool) and blocksize > 0),
        ("batch_size", batch_size, isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0),
        ("percdamp", percdamp, isinstance(percdamp, (int, float)) and not isinstance(percdamp, bool)
         and 0 <= percdamp < 1),
    ):
        if not ok:
            raise ValueError(f"`{name}` is invalid: got {value!r}")
    if nm is not None and cls.column_blocks and blocksize % nm[1]:
        raise ValueError(f"`blocksize` ({blocksize}) must be a multiple of M={nm[1]} for the pattern {pattern!r}")
    return cls, sparsity, nm


def _check_model(model, pattern, nm):
    """``(blocks, [{name: nn.Linear} per block], {id(linear): full name})``; ValueError naming ``model`` (or
    ``pattern``) if there is nothing to prune, M does not divide an input dimension, or a weight is offloaded or
    not finite."""
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
    return blocks, block_linears, full_name


# ------------------------------------------------------------------------------------------ the loop's steps
@contextlib.contextmanager
def _timed(times: dict[str, float], key: str):
    """Add the wall time of the ``with`` body to ``times[key]``."""
    t0 = time.perf_counter()
    yield
    times[key] += time.perf_counter() - t0


def _block0_inputs(model, blocks, calibration: Tensor, batch_size: int):
    """``X_0`` ``[nsamples, seqlen, hidden]`` and block 0's keyword arguments by batch size; ValueError if ``X_0``
    holds NaN or inf."""
    inps, kwargs_by_b = _capture_inputs(model, blocks, calibration, batch_size)
    if not torch.isfinite(inps).all():
        raise ValueError(
            "`model`: the inputs of decoder block 0 on the `calibration` data contain NaN or inf "
            "(check the model's embeddings); nothing was pruned"
        )
    return inps, kwargs_by_b


def _stats_pass(rule: PruneMethod, b: int, block, lins, inps: Tensor, kw: dict, dev, batch_size: int) -> dict:
    """Step 1: run ``X_b`` through block ``b``, ``batch_size`` windows at a time, with hooks that feed each linear's
    input to ``rule``'s accumulator. Returns ``{name: accumulator}`` of the linears the block called (layers that
    share an input share one); ValueError if some input held NaN or inf."""
    collector = _StatsCollector(lins, rule.make_accumulator)
    try:
        for i in range(0, inps.shape[0], batch_size):
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
    return {name: acc for name in lins if (acc := collector.stats(name)) is not None}


def _call_groups(block, lins: dict[str, nn.Linear], inps: Tensor, kw: dict, dev, batch_size: int) -> list[dict]:
    """The linears of ``block`` in groups, in the order the block calls them: layers that receive the very same
    input tensor form one group (Llama: q/k/v, o, gate/up, down), as :class:`_StatsCollector` decides sharing.
    Found by one forward of the first batch with accumulators that keep nothing. Linears the block never calls
    join the last group, whose statistics pass then leaves them dense with a warning (:func:`_prune_block`)."""
    collector = _StatsCollector(lins, lambda d_in: _NoStats())
    try:
        x = inps[:batch_size].to(dev)  # (b, seqlen, hidden)
        collector.run(block, x, kw[x.shape[0]])
    finally:
        collector.remove()
    groups: dict[str, dict[str, nn.Linear]] = {}  # leader -> {name: linear}, in call order
    for name in collector.calls:
        groups.setdefault(collector.leader[name], {})[name] = lins[name]
    groups = list(groups.values()) or [{}]
    groups[-1].update({name: lin for name, lin in lins.items() if name not in collector.leader})
    return groups


def _prune_block(rule: PruneMethod, lins: dict[str, nn.Linear], stats: dict, full_name: dict[int, str]) -> None:
    """Step 2: prune the linears of one block. With data, a linear its block never called has no statistics: it
    is left dense, with a RuntimeWarning."""
    if rule.needs_data:
        for name, lin in lins.items():
            if name not in stats:
                warnings.warn(f"{full_name[id(lin)]} was not called by its block's forward; left dense",
                              RuntimeWarning, stacklevel=3)  # 3: prune_model's caller
        lins = {name: lin for name, lin in lins.items() if name in stats}
    rule.prune_block(lins, stats)


def _propagate(b: int, block, inps: Tensor, outs: Tensor, kw: dict, dev, batch_size: int) -> tuple[Tensor, Tensor]:
    """Step 3: ``X_{b+1} = block_b'(X_b)``, the PRUNED block's outputs, written into ``outs``. Returns
    ``(X_{b+1}, X_b)``: the next inputs, and the buffer the next block's outputs overwrite."""
    for i in range(0, inps.shape[0], batch_size):
        x = inps[i : i + batch_size].to(dev)
        outs[i : i + x.shape[0]] = _first(block(x, **kw[x.shape[0]])).to(outs.device)
    if not torch.isfinite(outs).all():
        raise ValueError(
            f"`model`: decoder block {b} produced NaN or inf activations on the `calibration` "
            "data after pruning; "
            f"blocks 0..{b} are ALREADY PRUNED, reload the model before retrying "
            "(try a lower sparsity or more calibration data)"
        )
    return outs, inps


def _report(model, method: str, pattern, rule: PruneMethod, elapsed: float, times: dict, calibration,
            batch_size: int, sequential: bool = False) -> dict:
    """:func:`prune_model`'s report: the arguments that mattered and the sparsity measured on the model."""
    nm = rule.cfg.nm
    measured = check_sparsity(model, pattern if nm is not None else None)
    report = {
        "method": method,
        "pattern": "unstructured" if nm is None else f"{nm[0]}:{nm[1]}",
        "sparsity": rule.cfg.sparsity,
        "total_sparsity": measured["total"],
        "layers": measured["layers"],
        "time_s": elapsed,
        "times_s": times,
        "seed": rule.cfg.seed,
    }
    if rule.needs_data:
        report.update(nsamples=int(calibration.shape[0]), seqlen=int(calibration.shape[1]), batch_size=batch_size,
                      sequential=sequential)
    report.update(rule.report())
    if nm is not None:
        report["nm_valid"] = measured["nm_valid"]
    return report


# ------------------------------------------------------------------------------------------ the driver
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
    sequential: bool = False,
) -> dict:
    """Prune every linear layer in the decoder blocks of ``model`` **in place**; return a report (Chapter 4).

    ``sparsity``: one number for every block, or a list with one number per decoder block (unstructured only;
    OWL's non-uniform sparsities, Chapter 5, :mod:`pruning_lab.owl`); the report then holds the list as
    ``"block_sparsities"`` and their mean as ``"sparsity"``.

    ``method``: ``"magnitude"`` (smallest |W_ij| per matrix), ``"magnitude_global"`` (one |W| threshold for all
    matrices together), ``"random"`` (seeded), ``"wanda"`` (score |W_ij| ||X_j||_2, per output row; Chapter 5)
    or ``"sparsegpt"`` (OBS with H = 2/n X X^T, blocks of ``blocksize`` columns, ``percdamp`` dampening;
    Chapter 4), or any other name registered in :data:`METHOD_CLASSES`. ``pattern``: ``"unstructured"``
    (exactly ``int(numel * sparsity)`` per matrix, or per row for Wanda) or ``"N:M"`` such as ``"2:4"`` (N kept
    of every M consecutive inputs; ``sparsity`` is then fixed at 1 - N/M and the argument is ignored).
    ``wanda_group``: Wanda's comparison group, ``"row"`` (the paper's choice) or ``"layer"`` (the whole matrix;
    Chapter 5's ablation). ``calibration``: LongTensor ``[nsamples, seqlen]`` of token ids, needed by wanda and
    sparsegpt (ignored by the others, which run no forward pass). ``sequential``: False (the references' order,
    every linear of a block calibrated on the dense block) or True (GPTQ's "true-sequential" variant, Chapter 5:
    the block's groups of linears in call order, q/k/v, o, gate/up, down for Llama, each calibrated by its own
    statistics pass over all windows through the block as pruned so far); ignored by the data-free methods.

    Layer-wise (wanda, sparsegpt): record the inputs of block 0 on the calibration set; then for each block one
    statistics pass (hooks on its linears, ``batch_size`` windows at a time), prune all its linears, and one
    propagate pass through the PRUNED block, whose outputs feed the next block (``sequential=True``: one
    statistics pass per group of linears, each followed by pruning that group). Blocks dispatched with
    ``accelerate`` (``device_map``) are handled one by one on their own device. No gradients; TF32 off during
    the call. Bad arguments raise ``ValueError`` before anything is pruned.

    Returns ``{"method", "pattern", "sparsity" (target), "total_sparsity" (measured), "layers": {name:
    sparsity}, "time_s", "times_s": {"capture", "stats", "prune", "propagate"}, "nsamples", "seqlen",
    "sequential", ...}`` (the last three for wanda and sparsegpt).
    """
    from tqdm.auto import tqdm

    cls, sparsity, nm = _check_args(method, sparsity, pattern, blocksize, percdamp, batch_size, wanda_group,
                                    sequential)
    blocks, block_linears, full_name = _check_model(model, pattern, nm)
    per_block = _check_per_block(sparsity, len(blocks))
    if cls.needs_data:
        calibration = _check_calibration(calibration, model)
    mean = sum(per_block) / len(per_block) if per_block else sparsity
    rule = cls(PruneConfig(mean, nm, blocksize=blocksize, percdamp=percdamp, seed=seed, wanda_group=wanda_group))

    times = {"capture": 0.0, "stats": 0.0, "prune": 0.0, "propagate": 0.0}
    was_training = model.training
    model.eval()
    t_start = time.perf_counter()
    desc = f"{method} {pattern if nm is None else f'{nm[0]}:{nm[1]}'}"
    bar = tqdm(range(len(blocks)), desc=desc, unit="block", disable=not progress)
    try:
        with torch.no_grad(), _tf32_off():
            with _timed(times, "prune"):
                rule.prepare([lin for lins in block_linears for lin in lins.values()])
            if rule.needs_data:
                with _timed(times, "capture"):
                    inps, kwargs_by_b = _block0_inputs(model, blocks, calibration, batch_size)  # X_0
                    outs = torch.empty_like(inps)
            for b in bar:
                block, lins = blocks[b], block_linears[b]
                if per_block:  # this block's own target
                    rule.cfg = replace(rule.cfg, sparsity=per_block[b])
                if not rule.needs_data:  # 2. prune every linear of the block; no forward pass
                    with _timed(times, "prune"):
                        _prune_block(rule, lins, {}, full_name)
                    continue
                dev = _block_device(block)  # the block's own device
                kw = {bs: _to(k, dev) for bs, k in kwargs_by_b.items()}
                groups = [lins]  # the references: the whole block at once
                if sequential:  # true-sequential: q/k/v, then o, then gate/up, then down (Llama)
                    with _timed(times, "stats"):
                        groups = _call_groups(block, lins, inps, kw, dev, batch_size)
                for group in groups:
                    with _timed(times, "stats"):  # 1. statistics of X_b through the block as pruned so far
                        stats = _stats_pass(rule, b, block, group, inps, kw, dev, batch_size)
                    with _timed(times, "prune"):  # 2. prune the group's linears
                        _prune_block(rule, group, stats, full_name)
                        del stats  # frees the statistics (SparseGPT: a d_in x d_in H per group) before step 3
                if b + 1 < len(blocks):  # 3. X_{b+1}: not needed after the last block
                    with _timed(times, "propagate"):
                        inps, outs = _propagate(b, block, inps, outs, kw, dev, batch_size)
    finally:
        bar.close()
        if was_training:
            model.train()
    elapsed = time.perf_counter() - t_start
    if per_block:
        rule.cfg = replace(rule.cfg, sparsity=mean)
    report = _report(model, method, pattern, rule, elapsed, times, calibration, batch_size, sequential)
    if per_block:
        report["block_sparsities"] = list(per_block)
    return report


def _check_per_block(sparsity, n_blocks: int) -> list[float] | None:
    """The per-block sparsities (a list with one value per decoder block), or None for one number."""
    if not isinstance(sparsity, list):
        return None
    if len(sparsity) != n_blocks:
        raise ValueError(f"`sparsity` must be one number, or one per decoder block ({n_blocks}); "
                         f"got {len(sparsity)} values")
    return sparsity


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
