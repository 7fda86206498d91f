"""What speedup pruning can buy: Amdahl's law, the memory-bandwidth bound, and timing with a spread (Chapter 8).

Amdahl (1967): if a fraction ``f`` of the run time is spent in the part that pruning accelerates, and that part
becomes ``s`` times faster, the whole becomes ``1 / ((1 - f) + f / s)`` times faster, and never more than
``1 / (1 - f)``. When decoding one token at a time the matrix products are limited by the bytes of weights read
from memory, not by arithmetic; then the speedup of a sparse format is bounded by how many fewer bytes it reads.
"""
from __future__ import annotations

import math
import statistics
import time
import warnings
from typing import Callable, Sequence

import torch

__all__ = ["amdahl", "amdahl_limit", "fraction_needed", "bytes_per_weight", "bandwidth_speedup", "crossover",
           "decode_time_bound", "summarize", "time_call", "memory_bandwidth", "csr_sweep", "ratio_spread", "describe_ratio"]


def _fraction(f, name: str = "f") -> float:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or math.isnan(float(f)) or not 0.0 <= f <= 1.0:
        raise ValueError(f"`{name}` must be a fraction of the run time in [0, 1]; got {f!r}")
    return float(f)


def _positive(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(float(x)) or not x > 0:
        raise ValueError(f"`{name}` must be a positive number; got {x!r}")
    return float(x)


def amdahl(f: float, s: float) -> float:
    """End-to-end speedup ``1 / ((1 - f) + f / s)`` when the fraction ``f`` of the time gets ``s`` times faster
    (``s < 1`` is a slowdown) (Chapter 8)."""
    f, s = _fraction(f), _positive(s, "s")
    return 1.0 / ((1.0 - f) + f / s)


def amdahl_limit(f: float) -> float:
    """The speedup as ``s`` grows without bound, ``1 / (1 - f)`` (``inf`` for ``f = 1``) (Chapter 8)."""
    f = _fraction(f)
    return math.inf if f == 1.0 else 1.0 / (1.0 - f)


def fraction_needed(target: float, s: float) -> float:
    """The fraction ``f`` of the time that must get ``s`` times faster for an end-to-end ``target`` speedup:
    ``f = (1 - 1/target) / (1 - 1/s)``. ``ValueError`` if ``target`` cannot be reached with this ``s``
    (Chapter 8)."""
    target, s = _positive(target, "target"), _positive(s, "s")
    if target == 1.0:
        return 0.0
    if s == 1.0 or (target > 1.0) != (s > 1.0) or (target > 1.0 and target > s) or (target < 1.0 and target < s):
        raise ValueError(f"`target` {target:g} cannot be reached with s = {s:g}: the end-to-end speedup lies "
                         f"between 1 and s")
    return (1.0 - 1.0 / target) / (1.0 - 1.0 / s)


def bytes_per_weight(fmt: str, value_bytes: int = 2, *, density: float = 0.5, index_bytes: int = 4) -> float:
    """Bytes read per *dense* weight position for a weight format (Chapter 8): ``"dense"`` (``value_bytes``),
    ``"2:4"`` (half the values plus 1 bit of metadata per weight), ``"structured"`` (a dense matrix with a
    fraction ``density`` of the weights left), ``"csr"`` (``density`` of the values, each with a column index of
    ``index_bytes``; row pointers ignored)."""
    value_bytes = _positive(value_bytes, "value_bytes")
    density = _fraction(density, "density")
    if fmt == "dense":
        return value_bytes
    if fmt == "2:4":
        return value_bytes / 2 + 1 / 8
    if fmt == "structured":
        return value_bytes * density
    if fmt == "csr":
        return density * (value_bytes + _positive(index_bytes, "index_bytes"))
    raise ValueError(f"`fmt` must be one of ['2:4', 'csr', 'dense', 'structured']; got {fmt!r}")


def bandwidth_speedup(fmt: str, value_bytes: int = 2, **kw) -> float:
    """The speedup bound of a memory-bound matrix product (decoding one token): dense bytes over the format's
    bytes, from :func:`bytes_per_weight` (Chapter 8). 2:4 in fp16: 2 / 1.125 = 1.78x, not 2x."""
    return bytes_per_weight("dense", value_bytes) / bytes_per_weight(fmt, value_bytes, **kw)


def decode_time_bound(n_weights: float, bytes_per_weight: float, bandwidth_gb_s: float) -> float:
    """The roofline of decoding: milliseconds per token when each of ``n_weights`` weights (``bytes_per_weight``
    bytes each) must be read once from memory per token at ``bandwidth_gb_s`` GB/s (1 GB = 1e9 bytes, as
    :func:`memory_bandwidth` reports it): ``n_weights * bytes_per_weight / (bandwidth_gb_s * 1e9) * 1e3``.
    A lower bound: compute, the KV cache and overheads only add to it (Chapter 8)."""
    n_weights = _positive(n_weights, "n_weights")
    bytes_per_weight = _positive(bytes_per_weight, "bytes_per_weight")
    bandwidth_gb_s = _positive(bandwidth_gb_s, "bandwidth_gb_s")
    return n_weights * bytes_per_weight / (bandwidth_gb_s * 1e9) * 1e3


def crossover(xs: Sequence[float], dense: Sequence[float], sparse: Sequence[float]) -> float | None:
    """The first ``x`` (e.g. a sparsity) at which ``sparse`` time drops below ``dense`` time, by linear
    interpolation between the two measured points around the crossing; ``None`` if it never does, ``xs[0]``
    if it already does at the first point. ``xs`` increasing (Chapter 8)."""
    if not (len(xs) == len(dense) == len(sparse)) or len(xs) < 2:
        raise ValueError("`xs`, `dense` and `sparse` must be sequences of the same length >= 2")
    if any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError("`xs` must be strictly increasing")
    diff = [s - d for s, d in zip(sparse, dense)]  # > 0: sparse slower
    if diff[0] < 0:
        return float(xs[0])
    for (x0, d0), (x1, d1) in zip(zip(xs, diff), zip(xs[1:], diff[1:])):
        if d1 < 0 <= d0:
            return float(x0 + (x1 - x0) * d0 / (d0 - d1))
    return None


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median and spread of repeated timings (seconds): ``median``, ``min``, ``max``, ``iqr`` (inter-quartile
    range) and ``repeats`` (Chapter 8)."""
    times = [float(t) for t in times]
    if len(times) < 3:
        raise ValueError(f"`times` must hold at least 3 timings (a spread needs several runs); got {len(times)}")
    q1, _, q3 = statistics.quantiles(times, n=4)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "iqr": q3 - q1,
            "repeats": len(times)}


def time_call(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 1,
              sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Wall-clock time of ``fn()`` over ``repeats`` runs after ``warmup`` runs: median, the spread (min, max and
    the inter-quartile range), in seconds. ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock
    reading (Chapter 8)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 3:
        raise ValueError(f"`repeats` must be an integer >= 3 (a spread needs several runs); got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an integer >= 0; got {warmup!r}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def ratio_spread(a: dict, b: dict) -> dict[str, float]:
    """The speedup ``a / b`` of two :func:`time_call` results (``a`` the baseline): the ratio of medians, and
    its range from the most pessimistic to the most optimistic pairing of the repeats
    (``a.min / b.max`` .. ``a.max / b.min``) (Chapter 8)."""
    return {"median": a["median"] / b["median"], "low": a["min"] / b["max"], "high": a["max"] / b["min"]}


def describe_ratio(r: dict, what: str = "faster") -> str:
    """A speedup from :func:`ratio_spread` in words, honest about its spread: ``"1.52x faster (1.41x to
    1.60x)"``, or ``"no measurable difference (0.97x to 1.04x)"`` when the range contains 1 (Chapter 8)."""
    rng = f"{r['low']:.2f}x to {r['high']:.2f}x"
    if r["low"] <= 1.0 <= r["high"]:
        return f"no measurable difference ({rng})"
    if r["median"] < 1.0:
        return f"{1 / r['median']:.2f}x slower (a speedup of {rng})"
    return f"{r['median']:.2f}x {what} ({rng})"


def memory_bandwidth(nbytes: int = 1 << 28, *, repeats: int = 5, device: str | torch.device = "cpu") -> dict:
    """Measured memory bandwidth, the roof of a memory-bound computation (Chapter 8).

    ``read``: GB/s of a reduction over a float32 tensor of ``nbytes`` (every byte read once, nothing written,
    like the weights of a decoding step); ``copy``: GB/s of ``dst.copy_(src)`` counting the bytes read plus the
    bytes written. Choose ``nbytes`` well above the last-level cache. GB = 1e9 bytes.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1 << 20:
        raise ValueError(f"`nbytes` must be an integer >= 2**20 (well above the caches); got {nbytes!r}")
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    read = time_call(lambda: src.sum(), repeats=repeats, sync=sync)
    copy = time_call(lambda: dst.copy_(src), repeats=repeats, sync=sync)
    n = src.numel() * 4
    return {"read_gb_s": n / read["median"] / 1e9, "copy_gb_s": 2 * n / copy["median"] / 1e9,
            "read_s": read, "copy_s": copy, "nbytes": n}


def _sparse_weight(d_out: int, d_in: int, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    """A random ``[d_out, d_in]`` float32 matrix with exactly ``int(numel * sparsity)`` zeros at random places."""
    w = torch.randn(d_out, d_in, generator=gen)
    k = int(w.numel() * sparsity)
    drop = torch.randperm(w.numel(), generator=gen)[:k]
    w.view(-1)[drop] = 0.0
    return w


def csr_sweep(d_out: int, d_in: int, tokens: int, sparsities: Sequence[float], *, repeats: int = 5,
              seed: int = 0) -> dict:
    """Dense ``W @ X`` against ``torch.sparse`` CSR ``W_csr @ X`` on the CPU, for ``W [d_out, d_in]`` at each
    sparsity and ``X [d_in, tokens]`` (``tokens = 1``: one decoding step; more: prefill) (Chapter 8).

    Both products are checked against each other before timing. Returns ``{"sparsities", "dense", "csr"}`` with
    one :func:`time_call` result per sparsity, ``"crossover"``: the sparsity at which CSR's median time drops
    below dense's (:func:`crossover`), or None, and ``"crossover_range"``: the same from the extremes of the
    repeats, ``(earliest, latest)`` (CSR's fastest vs dense's slowest run, and the reverse).
    """
    for name, v in (("d_out", d_out), ("d_in", d_in), ("tokens", tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {v!r}")
    sparsities = [_fraction(p, "sparsities") for p in sparsities]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(d_in, tokens, generator=gen)
    dense, csr = [], []
    for p in sparsities:
        w = _sparse_weight(d_out, d_in, p, gen)
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            w_csr = w.to_sparse_csr()
        if not torch.allclose(w_csr @ x, w @ x, rtol=1e-4, atol=1e-3):
            raise RuntimeError("internal: the CSR product differs from the dense one")
        dense.append(time_call(lambda: w @ x, repeats=repeats))
        csr.append(time_call(lambda: w_csr @ x, repeats=repeats))
    def cross(d_key: str, c_key: str) -> float | None:
        if len(sparsities) < 2:
            return None
        return crossover(sparsities, [t[d_key] for t in dense], [t[c_key] for t in csr])

    # the range: CSR at its fastest against dense at its slowest (earliest), and the other way round (latest)
    return {"shape": (d_out, d_in, tokens), "sparsities": sparsities, "dense": dense, "csr": csr,
            "crossover": cross("median", "median"), "crossover_range": (cross("max", "min"), cross("min", "max"))}
