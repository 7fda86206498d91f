"""2:4 semi-structured sparsity on NVIDIA GPUs with PyTorch (Chapter 7).

A weight that keeps 2 of every 4 consecutive inputs of each row (:func:`pruning_lab.nm.nm_mask` with N=2, M=4)
can run on the sparse tensor cores of GPUs of compute capability 8.0 and newer (Mishra et al. 2021) through
``torch.sparse.to_sparse_semi_structured``. PyTorch has two backends:

===========  =========================  ==========================================================
backend      GPUs                       fp16 / bf16 weight shape (rows, cols)
===========  =========================  ==========================================================
cuSPARSELt   8.x and 9.0 (Hopper needs  multiples of (16, 16)
             cuSPARSELt >= 0.6)
CUTLASS      8.x (Ampere) only          multiples of (32, 64)
===========  =========================  ==========================================================

The dense operand (the layer's inputs, ``tokens x d_in``) is padded by PyTorch to a multiple of 8 tokens and the
output sliced back, so any number of tokens works. The backend is chosen when a weight is converted, by the
class flag ``SparseSemiStructuredTensor._FORCE_CUTLASS`` (private, but the PyTorch tutorial sets it too; its
default changed between releases, so :func:`forced_backend` always sets it). int8 and fp8 are out of scope.

PyTorch's converter does NOT check the 2:4 pattern: extra non-zeros are dropped silently. :func:`check_convertible`
checks it, and :func:`to_semistructured` compares the converted layer with the dense one before returning it.

On a machine without such a GPU nothing here reaches PyTorch's semi-structured code: availability returns
``(False, reason)`` and the other functions raise a clear error first.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_choice
from .nm import check_nm, nm_mask

__all__ = [
    "BACKENDS",
    "DTYPES",
    "MIN_SHAPE",
    "DENSE_MULTIPLE",
    "semistructured_available",
    "choose_backend",
    "cusparselt_version",
    "check_convertible",
    "default_tolerance",
    "compare_outputs",
    "forced_backend",
    "to_semistructured",
    "convert_model",
    "benchmark_linear",
]

#: The two backends of ``torch.sparse.to_sparse_semi_structured``; functions that choose also accept "auto".
BACKENDS = ("cusparselt", "cutlass")
#: The weight dtypes this module converts.
DTYPES = (torch.float16, torch.bfloat16)
#: Both dimensions of an fp16/bf16 weight (rows = d_out, cols = d_in) must be a multiple of these (PyTorch's
#: ``sparse_min_rows``, ``sparse_min_cols``), which are also the minimum sizes.
MIN_SHAPE = {"cutlass": (32, 64), "cusparselt": (16, 16)}
#: PyTorch pads the dense operand to a multiple of this many rows and columns (fp16/bf16, both backends).
DENSE_MULTIPLE = 8
#: Random input rows used by :func:`to_semistructured`'s output check.
CHECK_TOKENS = 64

_TOLERANCE = {torch.float16: (1e-2, 1e-3), torch.bfloat16: (5e-2, 1e-2)}  # (rtol, atol), see compare_outputs


# --- availability ---------------------------------------------------------------------------------------------------


def _cusparselt():
    """``torch.backends.cusparselt``, or None in a PyTorch without it."""
    return getattr(torch.backends, "cusparselt", None)


def cusparselt_version() -> str | None:
    """cuSPARSELt's version as ``"0.6.2"`` (PyTorch reports ``602``), or None when it is not available."""
    mod = _cusparselt()
    if mod is None or not mod.is_available():
        return None
    v = mod.version()
    if v is None:
        return None
    return f"{v // 1000}.{v % 1000 // 100}.{v % 100}"


def _cusparselt_problem(cc: tuple[int, int]) -> str:
    """Why cuSPARSELt cannot serve this GPU ("" if it can)."""
    mod = _cusparselt()
    if mod is None:
        return f"this PyTorch ({torch.__version__}) has no torch.backends.cusparselt, so no cuSPARSELt backend"
    if not mod.is_available():
        return "cuSPARSELt is not available in this PyTorch build (torch.backends.cusparselt.is_available() is False)"
    v = mod.version()
    if cc[0] == 9 and v is not None and v < 600:
        return f"cuSPARSELt {cusparselt_version()} is too old for compute capability 9.0 (Hopper needs >= 0.6)"
    return ""


def _cutlass_problem(cc: tuple[int, int]) -> str:
    """Why CUTLASS cannot serve this GPU ("" if it can)."""
    if cc[0] != 8:
        return f"PyTorch's CUTLASS 2:4 kernels run only on compute capability 8.x (Ampere); this GPU is {cc[0]}.{cc[1]}"
    return ""


def semistructured_available(backend: str = "auto") -> tuple[bool, str]:
    """Whether this machine can run 2:4 semi-structured matmuls with ``backend`` ("auto", "cusparselt" or
    "cutlass"), and a one-line reason when it cannot (``(True, "")`` when it can). Checks, in order: a CUDA GPU,
    compute capability >= 8.0, ``torch.sparse.to_sparse_semi_structured``, then the backend: CUTLASS needs 8.x,
    cuSPARSELt needs ``torch.backends.cusparselt.is_available()`` (and >= 0.6 on Hopper); "auto" accepts either.
    Nothing is allocated on the GPU (Chapter 7)."""
    check_choice(backend, "backend", ("auto",) + BACKENDS)
    if not torch.cuda.is_available():
        return False, "no CUDA GPU: 2:4 semi-structured matmuls need an NVIDIA GPU of compute capability >= 8.0"
    cc = tuple(torch.cuda.get_device_capability(0))
    if cc < (8, 0):
        return False, (f"compute capability {cc[0]}.{cc[1]} < 8.0: this GPU has no sparse tensor cores "
                       "(2:4 needs Ampere or newer)")
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return False, f"this PyTorch ({torch.__version__}) has no torch.sparse.to_sparse_semi_structured"
    cslt, cutlass = _cusparselt_problem(cc), _cutlass_problem(cc)
    problem = {"cusparselt": cslt, "cutlass": cutlass + ("" if cslt or not cutlass else ": use backend='cusparselt'"),
               "auto": f"{cslt}; and {cutlass}" if cslt and cutlass else ""}
    return (False, problem[backend]) if problem[backend] else (True, "")


def choose_backend(backend: str = "auto") -> str:
    """The backend to convert with: ``backend`` itself if it is available here, and for "auto" cuSPARSELt when
    available, else CUTLASS on an 8.x GPU. Raises ``RuntimeError`` with the reason when there is none."""
    ok, reason = semistructured_available(backend)
    if not ok:
        raise RuntimeError(f"2:4 semi-structured sparsity is not available here: {reason}")
    if backend != "auto":
        return backend
    return "cusparselt" if not _cusparselt_problem(tuple(torch.cuda.get_device_capability(0))) else "cutlass"


# --- validation -----------------------------------------------------------------------------------------------------


def _check_backend(backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {sorted(BACKENDS)!r} (resolve 'auto' with choose_backend() "
                         f"first); got {backend!r}")


def check_convertible(weight, backend: str, *, require_cuda: bool = True) -> None:
    """Raise ``ValueError`` unless ``torch.sparse.to_sparse_semi_structured`` with ``backend`` ("cusparselt" or
    "cutlass") can convert ``weight`` exactly. Checked in this order, so that all but the last can be tried on
    CPU tensors: 2-D; dtype float16 or bfloat16; shape (multiples of :data:`MIN_SHAPE`); contiguous; at most 2
    non-zeros in every group of 4 consecutive inputs (PyTorch would silently drop the extras); and last, unless
    ``require_cuda=False``, on a CUDA device (Chapter 7)."""
    _check_backend(backend)
    if not isinstance(weight, Tensor):
        raise ValueError(f"`weight` must be a torch.Tensor; got {type(weight).__name__}")
    if isinstance(weight, getattr(torch.sparse, "SparseSemiStructuredTensor", ())):
        raise ValueError("`weight` is already a SparseSemiStructuredTensor (converted); give the dense weight")
    if weight.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(weight.shape)}")
    if weight.dtype not in DTYPES:
        why = {torch.int8: ": int8 2:4 (with int8 activations) is out of scope for this book",
               torch.float32: " (fp32 semi-structured sparsity is 1:2, not 2:4); convert with .half() or .bfloat16()"}
        raise ValueError(f"`weight` must be torch.float16 or torch.bfloat16; got {weight.dtype}"
                         f"{why.get(weight.dtype, '')}")
    rows, cols = MIN_SHAPE[backend]
    shape = tuple(weight.shape)
    if shape[0] < rows or shape[0] % rows or shape[1] < cols or shape[1] % cols:
        raise ValueError(f"`weight` cannot use the {backend} backend: for {weight.dtype} both of its dimensions "
                         f"(rows, cols) must be multiples of ({rows}, {cols}) (and at least that); got {shape}")
    if not weight.is_contiguous():
        raise ValueError("`weight` must be contiguous (PyTorch converts only contiguous tensors); "
                         "use weight.contiguous()")
    if not check_nm(weight, 2, 4):
        bad = (weight.reshape(shape[0], -1, 4) != 0).sum(-1) > 2  # (d_out, d_in / 4)
        r, g = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"`weight` is not 2:4: {int(bad.sum())} of {bad.numel()} groups of 4 consecutive inputs have more than "
            f"2 non-zeros (first: row {r}, columns {4 * g}:{4 * g + 4}); torch.sparse.to_sparse_semi_structured "
            "would silently drop the extra non-zeros. Prune it first, e.g. W * nm_mask(W.abs(), 2, 4)")
    if require_cuda and not weight.is_cuda:
        raise ValueError(f"`weight` must be on a CUDA device; got {weight.device}: the CPU cannot run 2:4 "
                         "semi-structured kernels (move it with .cuda())")


# --- comparing outputs ----------------------------------------------------------------------------------------------


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing a 2:4 layer's output with the dense one in ``dtype``: both accumulate in
    fp32 and round once, so they differ by about one unit in the last place of the output (fp16 ~5e-4 of it,
    bf16 ~4e-3); these leave a wide margin and still catch a wrong conversion, which is off by O(1)."""
    if dtype not in _TOLERANCE:
        raise ValueError(f"`dtype` must be torch.float16 or torch.bfloat16; got {dtype}")
    return _TOLERANCE[dtype]


def compare_outputs(out: Tensor, ref: Tensor, *, rtol: float | None = None, atol: float | None = None) -> dict:
    """Compare ``out`` with the reference ``ref``: ``max_abs_err = max |out - ref|``, ``max_rel_err =
    max_abs_err / max |ref|``, and ``ok`` when all of ``out`` is finite and ``max_abs_err <= atol + rtol *
    max |ref|`` (one scale for the whole output, so near-zero entries do not dominate). Tolerances default
    to :func:`default_tolerance` of ``ref``'s dtype."""
    if out.shape != ref.shape:
        raise ValueError(f"`out` must have the same shape as `ref`: {tuple(ref.shape)}; got {tuple(out.shape)}")
    d_rtol, d_atol = default_tolerance(ref.dtype) if rtol is None or atol is None else (rtol, atol)
    rtol, atol = (d_rtol if rtol is None else rtol), (d_atol if atol is None else atol)
    diff = (out.float() - ref.float()).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref.float().abs().max()) if ref.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    ok = bool(torch.isfinite(out).all()) and max_abs <= atol + rtol * scale
    return {"ok": ok, "max_abs_err": max_abs, "max_rel_err": max_rel, "ref_max_abs": scale,
            "rtol": rtol, "atol": atol}


# --- conversion -----------------------------------------------------------------------------------------------------


@contextmanager
def forced_backend(backend: str):
    """Inside the block, ``torch.sparse.to_sparse_semi_structured`` converts with ``backend`` ("cutlass" or
    "cusparselt"): sets ``SparseSemiStructuredTensor._FORCE_CUTLASS`` and restores it afterwards."""
    _check_backend(backend)
    cls = torch.sparse.SparseSemiStructuredTensor
    before = cls._FORCE_CUTLASS
    cls._FORCE_CUTLASS = backend == "cutlass"
    try:
        yield
    finally:
        cls._FORCE_CUTLASS = before


def to_semistructured(linear: nn.Linear, backend: str = "auto", *, check: bool = True,
                      rtol: float | None = None, atol: float | None = None) -> nn.Linear:
    """A NEW ``nn.Linear`` whose weight is ``torch.sparse.to_sparse_semi_structured(linear.weight)`` converted
    with ``backend`` (see :func:`choose_backend`); ``linear`` is left untouched, and the new layer's parameters
    do not require gradients (inference only). The weight must pass :func:`check_convertible` (already 2:4,
    fp16/bf16, on the GPU); a bias must have the weight's dtype. With ``check=True`` the new layer's output on
    :data:`CHECK_TOKENS` random input rows is compared with ``linear``'s (:func:`compare_outputs`, tolerances
    from :func:`default_tolerance` unless given) and a mismatch raises ``RuntimeError`` (Chapter 7)."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"`linear` must be a torch.nn.Linear; got {type(linear).__name__}")
    check_choice(backend, "backend", ("auto",) + BACKENDS)
    ok, reason = semistructured_available(backend)
    if not ok:
        raise RuntimeError(f"cannot convert to 2:4 semi-structured: {reason}")
    backend = choose_backend(backend)
    w = linear.weight.detach()
    check_convertible(w, backend)
    b = None if linear.bias is None else linear.bias.detach()
    if b is not None and (b.dtype != w.dtype or b.device != w.device):
        raise ValueError(f"`bias` must have the weight's dtype {w.dtype} and device {w.device}; "
                         f"got {b.dtype} on {b.device}")
    with forced_backend(backend):
        sparse = torch.sparse.to_sparse_semi_structured(w)
    got = getattr(sparse, "BACKEND", backend)
    if got != backend:
        raise RuntimeError(f"asked PyTorch for the {backend} backend but got {got}")
    new = nn.Linear(linear.in_features, linear.out_features, bias=b is not None, device="meta")
    new.weight = nn.Parameter(sparse, requires_grad=False)
    if b is not None:
        new.bias = nn.Parameter(b.clone(), requires_grad=False)
    if check:
        gen = torch.Generator(device=w.device).manual_seed(0)
        x = torch.randn(CHECK_TOKENS, w.shape[1], generator=gen, device=w.device, dtype=w.dtype)  # (tokens, d_in)
        with torch.no_grad():
            res = compare_outputs(new(x), F.linear(x, w, b), rtol=rtol, atol=atol)
        if not res["ok"]:
            raise RuntimeError(
                f"the 2:4 layer ({backend}) differs from the dense masked layer on random inputs: max abs error "
                f"{res['max_abs_err']:.3g} > atol {res['atol']:g} + rtol {res['rtol']:g} x max |output| "
                f"{res['ref_max_abs']:.3g}")
    return new


def convert_model(model: nn.Module, backend: str = "auto", *, check: bool = True,
                  rtol: float | None = None, atol: float | None = None) -> tuple[nn.Module, dict]:
    """A copy of ``model`` (``copy.deepcopy``: twice the memory for a moment; ``model`` is untouched) in which
    every ``nn.Linear`` that passes :func:`check_convertible` is replaced by :func:`to_semistructured`'s layer.
    Returns ``(new_model, report)`` with ``report = {"backend", "converted": [names], "skipped": {name: reason}}``.
    A layer used in several places is converted once and replaced everywhere. Tied weights (an ``lm_head``
    sharing the embedding) are not 2:4 unless the embedding was pruned too, so they are normally skipped; a
    converted one would no longer be tied (Chapter 7)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    backend = choose_backend(backend)
    new_model = copy.deepcopy(model)
    report: dict = {"backend": backend, "converted": [], "skipped": {}}
    replaced: dict[int, nn.Linear] = {}  # id(old layer in new_model) -> converted layer
    for name, module in new_model.named_modules():  # each module once, even if used twice
        if not isinstance(module, nn.Linear):
            continue
        try:
            check_convertible(module.weight.detach(), backend)
        except ValueError as exc:
            report["skipped"][name] = str(exc)
            continue
        replaced[id(module)] = to_semistructured(module, backend, check=check, rtol=rtol, atol=atol)
        report["converted"].append(name)
    if id(new_model) in replaced:  # the model is itself one linear layer
        return replaced[id(new_model)], report
    for parent in list(new_model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in replaced:
                setattr(parent, child_name, replaced[id(child)])
    return new_model, report


# --- benchmark ------------------------------------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    return value


def benchmark_linear(d_out: int, d_in: int, tokens: int, dtype: torch.dtype = torch.float16,
                     backend: str = "auto", *, min_run_time: float = 0.2, seed: int = 0) -> dict:
    """Time ``F.linear(x, W)`` dense vs 2:4 for a random ``[d_out, d_in]`` weight, 2:4-pruned by magnitude, and
    ``tokens`` input rows, with ``torch.utils.benchmark.Timer.blocked_autorange`` (which warms up and
    synchronises the GPU). Returns the shape, dtype, backend, median and IQR times in ms, ``speedup = dense /
    sparse`` and the sparse output's errors against the dense masked layer (:func:`compare_outputs`).
    Arguments are checked first, then availability (``RuntimeError`` on a CPU-only machine), before any
    PyTorch semi-structured code runs (Chapter 7)."""
    from torch.utils import benchmark

    for value, name in [(d_out, "d_out"), (d_in, "d_in"), (tokens, "tokens")]:
        _positive_int(value, name)
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be torch.float16 or torch.bfloat16; got {dtype}")
    check_choice(backend, "backend", ("auto",) + BACKENDS)
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, (int, float)) or not min_run_time > 0:
        raise ValueError(f"`min_run_time` must be a positive number of seconds; got {min_run_time!r}")
    ok, reason = semistructured_available(backend)
    if not ok:
        raise RuntimeError(f"cannot benchmark 2:4 semi-structured matmuls: {reason}")
    backend = choose_backend(backend)

    gen = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(d_out, d_in, generator=gen, device="cuda") / math.sqrt(d_in)  # (d_out, d_in), fp32
    w = (w * nm_mask(w.abs(), 2, 4)).to(dtype)
    check_convertible(w, backend)
    x = torch.randn(tokens, d_in, generator=gen, device="cuda", dtype=dtype)  # (tokens, d_in)
    with forced_backend(backend):
        w_sparse = torch.sparse.to_sparse_semi_structured(w)
    with torch.no_grad():
        errors = compare_outputs(F.linear(x, w_sparse), F.linear(x, w))
        times = {}
        for kind, weight in [("dense", w), ("sparse", w_sparse)]:
            timer = benchmark.Timer(stmt="F.linear(x, weight)", globals={"F": F, "x": x, "weight": weight},
                                    label=f"{d_out}x{d_in}", sub_label=f"tokens={tokens}", description=kind)
            times[kind] = timer.blocked_autorange(min_run_time=min_run_time)
    dense_ms, sparse_ms = times["dense"].median * 1e3, times["sparse"].median * 1e3
    return {
        "d_out": d_out, "d_in": d_in, "tokens": tokens, "dtype": str(dtype).removeprefix("torch."),
        "backend": backend,
        "dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms,
        "dense_iqr_ms": times["dense"].iqr * 1e3, "sparse_iqr_ms": times["sparse"].iqr * 1e3,
        "max_abs_err": errors["max_abs_err"], "max_rel_err": errors["max_rel_err"], "ok": errors["ok"],
    }


def speedup_series(result: dict, dtype: str = "float16") -> dict[tuple[str, str], list[tuple[int, float]]]:
    """From a ``benchmarks/gpu_check.py`` result: ``{(shape "d_outxd_in", backend): [(tokens, speedup), ...]}``
    for the timings of ``dtype`` that ran without error, sorted by tokens (Chapter 7)."""
    if not isinstance(result, dict) or "timings" not in result:
        raise ValueError("`result` must be the dict that benchmarks/gpu_check.py writes (with a 'timings' list)")
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in result["timings"]:
        if row.get("dtype") != dtype or "error" in row or row.get("speedup") is None:
            continue
        series.setdefault((f"{row['d_out']}x{row['d_in']}", row["backend"]), []).append(
            (int(row["tokens"]), float(row["speedup"])))
    return {k: sorted(v) for k, v in series.items()}
