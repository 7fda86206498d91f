"""Where the time of a causal LM goes: prefill and decode timing, and the share ``f`` of the linear layers (Chapter 8).

Amdahl's law needs ``f``, the fraction of the run time spent in the part that pruning accelerates: here the
``nn.Linear`` layers of the decoder blocks (``lm_head`` and the embeddings stay dense). Two independent measurements:

- **profiler**: ``torch.profiler`` with a named range (``record_function``) around every prunable linear, opened by a
  forward pre-hook and closed by a forward hook. The share is the ranges' total time over the profiled step's
  total. Counting ranges, not operators, avoids a classic error: ``aten::linear`` is the parent of
  ``aten::addmm`` / ``aten::mm``, so adding the time of both counts every product twice.
- **no-op**: the same step, timed by the wall clock with every prunable linear replaced by a module that returns
  zeros of the right shape: ``f = 1 - T_noop / T``. (Allocating the zeros costs a little, so this ``f`` is a
  slight underestimate.)

Two workloads: **prefill** (one forward over a prompt of ``T`` tokens, logits of the last token only, as
``generate`` does) and **decode** (one token at a time against a KV cache, after a prefilled prompt).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import sys
import time
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..speedup import summarize
from .driver import prunable_linears

__all__ = ["prefill_step", "decode_steps", "sampler", "interleaved", "compare", "time_prefill", "time_decode",
           "linear_share", "noop_linears", "linears_time", "predict_and_measure"]

RANGE = "pruning_lab::prunable_linear"
HEAD_RANGE = "pruning_lab::lm_head"
STEP_RANGE = "pruning_lab::step"


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def _check_tokens(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer (a number of tokens); got {value!r}")
    return value


def _forward_kwargs(model: nn.Module) -> dict:
    """Keyword arguments that keep only the last position's logits, under the name this transformers uses."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def _cache_kwarg(model: nn.Module) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (4.x): the name of the KV-cache argument."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prompt(model: nn.Module, tokens: int, seed: int) -> Tensor:
    vocab = int(getattr(model.config, "vocab_size", 1000))
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, tokens), generator=gen).to(_device(model))  # (1, T)


def prefill_step(model: nn.Module, tokens: int, *, seed: int = 0) -> Callable[[], None]:
    """A callable that runs one prefill: a forward over a random prompt ``[1, tokens]`` without a cache, keeping
    the last position's logits only (Chapter 8)."""
    ids = _prompt(model, _check_tokens(tokens, "tokens"), seed)
    kw = _forward_kwargs(model)

    def step() -> None:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False, **kw)

    return step


def _new_cache(model: nn.Module):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


def decode_steps(model: nn.Module, prompt: int, new_tokens: int, *, seed: int = 0) -> Callable[[], Callable]:
    """A factory for decoding: each call prefills a fresh KV cache with a random prompt ``[1, prompt]`` and
    returns a callable that then decodes ``new_tokens`` tokens, one forward of ``[1, 1]`` each (greedy).
    Only that callable is meant to be timed (Chapter 8)."""
    ids = _prompt(model, _check_tokens(prompt, "prompt"), seed)
    new_tokens = _check_tokens(new_tokens, "new_tokens")
    cache_name, kw = _cache_kwarg(model), _forward_kwargs(model)

    def prepare() -> Callable[[], None]:
        cache = _new_cache(model)
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True, **{cache_name: cache}, **kw)
        nxt = out.logits[:, -1:].argmax(-1)  # (1, 1)

        def run() -> None:
            tok = nxt
            with torch.no_grad():
                for _ in range(new_tokens):
                    out = model(input_ids=tok, use_cache=True, **{cache_name: cache}, **kw)
                    tok = out.logits[:, -1:].argmax(-1)

        return run

    return prepare


def _clocked(fn: Callable[[], None], sync: Callable[[], None] | None) -> float:
    sync = sync or (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def sampler(model: nn.Module, kind: str, tokens: int, *, new_tokens: int = 16) -> Callable[[], float]:
    """A callable returning ONE timing sample, in seconds (Chapter 8): ``"prefill"`` (one prefill of ``tokens``
    tokens), ``"decode"`` (per token, over ``new_tokens`` tokens after a fresh prompt of ``tokens``; only the
    decoding is timed) or ``"linears"`` (every prunable linear once on ``[tokens, d_in]``, see
    :func:`linears_time`)."""
    sync = _sync(_device(model))
    if kind == "prefill":
        step = prefill_step(model, tokens)
        return lambda: _clocked(step, sync)
    if kind == "decode":
        prepare = decode_steps(model, tokens, new_tokens)
        return lambda: _clocked(prepare(), sync) / new_tokens
    if kind == "linears":
        return lambda: _clocked(_linears_step(model, tokens), sync)
    raise ValueError(f"`kind` must be one of ['decode', 'linears', 'prefill']; got {kind!r}")


def interleaved(samplers: list[Callable[[], float]], *, repeats: int = 5, warmup: int = 1) -> list[dict]:
    """Time several candidates fairly: after ``warmup`` rounds, ``repeats`` rounds that each take one sample of
    every candidate in turn (A B A B ...), so that a slow drift of the machine (another job, the clock) affects
    all of them alike. One :func:`pruning_lab.speedup.summarize` result per candidate (Chapter 8)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 3:
        raise ValueError(f"`repeats` must be an integer >= 3 (a spread needs several runs); got {repeats!r}")
    for _ in range(warmup):
        for sample in samplers:
            sample()
    times: list[list[float]] = [[] for _ in samplers]
    for _ in range(repeats):
        for i, sample in enumerate(samplers):
            times[i].append(sample())
    return [summarize(t) for t in times]


def compare(model_a: nn.Module, model_b: nn.Module, kind: str, tokens: int, *, new_tokens: int = 16,
            repeats: int = 5) -> tuple[dict, dict]:
    """Interleaved timings of two models on the same workload (see :func:`sampler`): ``(a, b)``, each a
    median-and-spread dict in seconds; :func:`pruning_lab.speedup.ratio_spread` (a, b) is b's speedup
    (Chapter 8)."""
    a, b = interleaved([sampler(m, kind, tokens, new_tokens=new_tokens) for m in (model_a, model_b)],
                       repeats=repeats)
    return a, b


def time_prefill(model: nn.Module, tokens: int, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Wall-clock time of one prefill of ``tokens`` tokens: median and spread over ``repeats``, in seconds
    (Chapter 8)."""
    return interleaved([sampler(model, "prefill", tokens)], repeats=repeats, warmup=warmup)[0]


def time_decode(model: nn.Module, prompt: int = 32, new_tokens: int = 16, *, repeats: int = 5,
                warmup: int = 1) -> dict:
    """Wall-clock time PER DECODED TOKEN after a prompt of ``prompt`` tokens, over ``new_tokens`` tokens;
    median and spread over ``repeats`` fresh caches, in seconds (Chapter 8)."""
    return interleaved([sampler(model, "decode", prompt, new_tokens=new_tokens)], repeats=repeats,
                       warmup=warmup)[0]


@contextlib.contextmanager
def _ranges(modules: dict[str, nn.Module], label: str) -> Iterator[None]:
    """Open a profiler range named ``label`` around every forward of ``modules``."""
    open_ranges: list = []

    def pre(module, args):
        r = torch.profiler.record_function(label)
        r.__enter__()
        open_ranges.append(r)

    def post(module, args, out):
        open_ranges.pop().__exit__(None, None, None)

    handles = [h for m in modules.values() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (torch 2.13's profiler prints a ``USDT: ...
    profiler_start`` line there on every run); Python's own ``sys.stderr`` and exceptions are unaffected."""
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real descriptor (some hosted notebooks): change nothing
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def linear_share(model: nn.Module, step: Callable[[], None], *, top: int = 8) -> dict:
    """Profile one call of ``step`` (e.g. :func:`prefill_step`) and return the share of its time spent in the
    prunable linears, ``f``, and in ``lm_head`` (Chapter 8).

    Times are the profiler's totals of the named ranges (CPU time; on a GPU the device time of the kernels
    launched inside them). Returns ``{"f", "lm_head", "other", "total_s", "ops"}`` where ``ops`` lists the
    ``top`` operators by SELF time (each microsecond counted once) with their share of the step.
    """
    from torch.profiler import ProfilerActivity, profile

    dev = _device(model)
    cuda = dev.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    head = {"lm_head": model.lm_head} if isinstance(getattr(model, "lm_head", None), nn.Linear) else {}
    with _quiet_native_stderr(), _ranges(prunable_linears(model), RANGE), _ranges(head, HEAD_RANGE), \
            profile(activities=acts) as prof:
        with torch.profiler.record_function(STEP_RANGE):
            step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()

    def total(name: str) -> float:
        ev = [e for e in events if e.key == name]
        if not ev:
            return 0.0
        attr = "device_time_total" if cuda else "cpu_time_total"
        return float(sum(getattr(e, attr, 0.0) or 0.0 for e in ev)) * 1e-6  # microseconds -> s

    step_s = total(STEP_RANGE) if not cuda else sum(
        float(getattr(e, "self_device_time_total", 0.0) or 0.0) for e in events) * 1e-6
    lin, hd = total(RANGE), total(HEAD_RANGE)
    self_attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    ops = sorted(((e.key, float(getattr(e, self_attr, 0.0) or 0.0) * 1e-6) for e in events
                  if not e.key.startswith("pruning_lab::")), key=lambda kv: -kv[1])[:top]
    return {"f": lin / step_s, "lm_head": hd / step_s, "other": 1.0 - (lin + hd) / step_s, "total_s": step_s,
            "ops": [(k, t / step_s) for k, t in ops]}


class _Zeros(nn.Module):
    """Stands in for an ``nn.Linear``: returns zeros of the output shape ``[..., out_features]``."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


@contextlib.contextmanager
def noop_linears(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every prunable linear of ``model`` returns zeros of its output shape (the model's
    outputs are then meaningless: for timing only); the original modules are put back afterwards (Chapter 8)."""
    lins = prunable_linears(model)
    swapped = []
    try:
        for name, lin in lins.items():
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, _Zeros(lin.out_features))
            swapped.append((parent, child, lin))
        yield model
    finally:
        for parent, child, lin in swapped:
            setattr(parent, child, lin)


def _linears_step(model: nn.Module, tokens: int) -> Callable[[], None]:
    """Every prunable linear of ``model`` once, in the model's order, on a random input ``[tokens, d_in]``."""
    tokens = _check_tokens(tokens, "tokens")
    lins = list(prunable_linears(model).values())
    dev, dtype = _device(model), lins[0].weight.dtype
    gen = torch.Generator().manual_seed(0)
    xs = {d: torch.randn(tokens, d, generator=gen).to(device=dev, dtype=dtype) for d in {m.in_features for m in lins}}

    def run() -> None:
        with torch.no_grad():
            for m in lins:
                m(xs[m.in_features])

    return run


def linears_time(model: nn.Module, tokens: int, *, repeats: int = 5) -> dict:
    """Time to run every prunable linear of ``model`` once on a random input ``[tokens, d_in]``, in the model's
    order, without the rest of the model: the part Amdahl's ``s`` speaks about. Median and spread, in seconds
    (Chapter 8)."""
    return interleaved([sampler(model, "linears", tokens)], repeats=repeats)[0]


def predict_and_measure(dense: nn.Module, fast: nn.Module, kind: str, tokens: int, *, new_tokens: int = 16,
                        repeats: int = 5) -> dict:
    """Amdahl's prediction next to the measurement, for one workload (Chapter 8).

    ``dense`` and ``fast`` (e.g. its 2:4 or structured version) run ``kind`` = ``"prefill"`` of ``tokens`` tokens,
    or ``"decode"`` after a prompt of ``tokens`` (``new_tokens`` timed). Measures, interleaved: ``f`` of the dense
    model by no-op linears (and by the profiler, ``f_profiler``, or the error text if it fails); ``s``, the speedup
    of the prunable linears alone (on ``[tokens, d_in]`` for prefill, ``[1, d_in]`` for decoding); the predicted
    ``amdahl(f, s)``; and the measured end-to-end speedup, as :func:`pruning_lab.speedup.ratio_spread` dicts.
    """
    from ..speedup import amdahl, ratio_spread

    if kind not in ("prefill", "decode"):
        raise ValueError(f"`kind` must be one of ['decode', 'prefill']; got {kind!r}")

    def noop(sample: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            with noop_linears(dense):
                return sample()
        return run

    t_dense, t_noop, t_fast = interleaved(
        [sampler(dense, kind, tokens, new_tokens=new_tokens), noop(sampler(dense, kind, tokens, new_tokens=new_tokens)),
         sampler(fast, kind, tokens, new_tokens=new_tokens)], repeats=repeats)
    f_noop = min(max(1.0 - t_noop["median"] / t_dense["median"], 0.0), 1.0)
    step = prefill_step(dense, tokens) if kind == "prefill" else decode_steps(dense, tokens, new_tokens)()
    try:
        f_prof: float | str = linear_share(dense, step)["f"]
    except Exception as exc:  # noqa: BLE001 - the profiler is a cross-check here, not a requirement
        f_prof = f"{type(exc).__name__}: {exc}"[:200]
    lin_tokens = tokens if kind == "prefill" else 1
    s_lin = ratio_spread(*interleaved([sampler(m, "linears", lin_tokens) for m in (dense, fast)], repeats=repeats))
    return {"workload": kind, "tokens": tokens, "new_tokens": new_tokens if kind == "decode" else None,
            "dense_ms": t_dense["median"] * 1e3, "sparse_ms": t_fast["median"] * 1e3, "noop_ms": t_noop["median"] * 1e3,
            "f_noop": f_noop, "f_profiler": f_prof, "s_linears": s_lin, "predicted": amdahl(f_noop, s_lin["median"]),
            "measured": ratio_spread(t_dense, t_fast),
            "unit": "ms per token" if kind == "decode" else "ms per prefill"}
