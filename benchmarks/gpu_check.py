"""Every GPU measurement of Chapter 7 (2:4 semi-structured sparsity) in one script, one JSON file.

1. environment: device, compute capability, torch, CUDA, cuSPARSELt, date, the backends available and chosen;
2. correctness: for each shape, a random fp16 weight 2:4-pruned by magnitude (``nm_mask`` on ``|W|``), converted
   with ``pruning_lab.semistructured.to_semistructured`` (with a bias), and compared with the dense masked layer
   at a few token counts (max abs / relative error); plus what PyTorch does with a weight that is NOT 2:4 (it
   drops the extra non-zeros silently);
3. timings, dense vs 2:4, ``torch.utils.benchmark`` (``benchmark_linear``), for every shape x token count in fp16,
   one shape in bf16, with each available backend (cuSPARSELt; CUTLASS only on 8.x GPUs);
4. end to end (Chapter 7): a randomly initialised ``LlamaForCausalLM`` of SmolLM2-135M's shape (no download), its attention
   and MLP linears 2:4-pruned and converted with ``convert_model``; a forward of 8 x 512 tokens timed dense vs
   2:4, logits compared (skipped with a message when ``transformers`` is missing);
5. Amdahl (Chapter 8): for SmolLM2-135M's and a 1B Llama's shape (random fp16 weights, decoder linears 2:4),
   prefill (512, 2048 tokens) and decode (one token at a time after 128): the share f of the linears (no-op
   linears, wall clock; and the profiler), the speedup s of the linears alone, Amdahl's prediction, the measured
   end-to-end speedup;
6. last, each backend this GPU cannot use (CUTLASS on Hopper) is forced on one small weight, to record PyTorch's
   own error message.

Run:  python benchmarks/gpu_check.py [--out benchmarks/results] [--min-run-time 0.2] [--budget-s 300]
About 3-4 minutes on an A100 / H100; ``--budget-s`` stops the timings early (and says so) to stay under 6 min.
``--dry-run``, or a machine without a suitable GPU, writes the environment and the reason it skipped, exit 0.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pruning_lab import __version__
from pruning_lab import semistructured as sem
from pruning_lab.nm import nm_mask

SCHEMA = 1
DEVICE = "cuda"
#: (d_out, d_in): SmolLM2-135M's MLP (576 x 1536, 1536 x 576), Llama-2-7B's attention and MLP, the tutorial's.
SHAPES = [(576, 1536), (1536, 576), (4096, 4096), (11008, 4096), (4096, 11008), (10240, 3072)]
TOKENS = [1, 16, 64, 256, 1024, 3072, 8192]
BF16_SHAPE = (4096, 4096)
CHECK_TOKENS = [1, 17, 256]  # one token (decoding), a count PyTorch pads to 24, a large-ish batch
#: SmolLM2-135M's shape (HuggingFaceTB/SmolLM2-135M config.json), randomly initialised here.
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                    tie_word_embeddings=True)
E2E_BATCH, E2E_SEQ = 8, 512
#: A 1B-class Llama shape (meta-llama/Llama-3.2-1B's config.json), randomly initialised here.
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=True)
#: Chapter 8 (Amdahl on the GPU): models, prefill prompt lengths, and (prompt, new tokens) of the decoding run.
AMDAHL_MODELS = {"smollm2-135m": "SMOLLM2_135M", "llama-1b": "LLAMA_1B"}
AMDAHL_PREFILL = [512, 2048]
AMDAHL_DECODE = (128, 32)
AMDAHL_REPEATS = 7


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """What ran the measurements (no GPU allocation)."""
    cuda = torch.cuda.is_available()
    cc = torch.cuda.get_device_capability(0) if cuda else None
    cslt = getattr(torch.backends, "cusparselt", None)
    backends = {}
    for b in ("auto",) + sem.BACKENDS:
        ok, reason = sem.semistructured_available(b)
        backends[b] = {"available": ok, "reason": reason}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "pruning_lab": __version__,
        "transformers": _dist_version("transformers"),
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else None,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "cusparselt_available": bool(cslt is not None and cslt.is_available()),
        "cusparselt_version": sem.cusparselt_version(),
        "cusparselt_version_int": cslt.version() if cslt is not None and cslt.is_available() else None,
        "force_cutlass_default": bool(torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS),
        "backends": backends,
        "backend_chosen": sem.choose_backend("auto") if backends["auto"]["available"] else None,
    }


def _pruned_weight(d_out: int, d_in: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    w = torch.randn(d_out, d_in, generator=gen, device=DEVICE) / math.sqrt(d_in)  # (d_out, d_in)
    return (w * nm_mask(w.abs(), 2, 4)).to(dtype)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def correctness(backends: list[str]) -> dict:
    """Converted layers vs the dense masked ones, and a weight that is not 2:4."""
    rows = []
    cases = [(shape, torch.float16) for shape in SHAPES] + [(BF16_SHAPE, torch.bfloat16)]
    for backend in backends:
        for (d_out, d_in), dtype in cases:
            row = {"backend": backend, "d_out": d_out, "d_in": d_in, "dtype": str(dtype).removeprefix("torch.")}
            try:
                lin = nn.Linear(d_in, d_out, device=DEVICE, dtype=dtype)
                with torch.no_grad():
                    lin.weight.copy_(_pruned_weight(d_out, d_in, dtype, seed=d_out + d_in))
                sparse = sem.to_semistructured(lin, backend, check=False)  # compared below, numbers recorded
                row["by_tokens"] = []
                for tokens in CHECK_TOKENS:
                    x = torch.randn(tokens, d_in, device=DEVICE, dtype=dtype)  # (tokens, d_in)
                    with torch.no_grad():
                        res = sem.compare_outputs(sparse(x), lin(x))
                    row["by_tokens"].append({"tokens": tokens, **{k: res[k] for k in
                                                                  ("ok", "max_abs_err", "max_rel_err")}})
                x = torch.randn(2, 9, d_in, device=DEVICE, dtype=dtype)  # (batch, seq, d_in): 3-D input
                with torch.no_grad():
                    res = sem.compare_outputs(sparse(x), lin(x))
                row["batch_2x9"] = {k: res[k] for k in ("ok", "max_abs_err", "max_rel_err")}
                row["ok"] = all(r["ok"] for r in row["by_tokens"]) and res["ok"]
            except Exception as exc:  # noqa: BLE001 - record and go on
                row.update(ok=False, error=_error(exc))
            rows.append(row)
    return {"layers": rows, "not_2_4": [_not_2_4(b) for b in backends]}


def _not_2_4(backend: str, d_out: int = 576, d_in: int = 1536) -> dict:
    """A dense (unpruned) fp16 weight given straight to PyTorch: it converts without complaint."""
    out = {"backend": backend, "d_out": d_out, "d_in": d_in}
    try:
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        w = (torch.randn(d_out, d_in, generator=gen, device=DEVICE) / math.sqrt(d_in)).half()  # (d_out, d_in)
        try:
            sem.check_convertible(w, backend)
        except ValueError as exc:
            out["check_convertible"] = str(exc)[:200]
        with sem.forced_backend(backend):
            w_sparse = torch.sparse.to_sparse_semi_structured(w)
        out["pytorch_raised"] = False
        x = torch.randn(64, d_in, device=DEVICE, dtype=torch.float16)
        with torch.no_grad():
            res = sem.compare_outputs(F.linear(x, w_sparse), F.linear(x, w))
        out.update(max_abs_err=res["max_abs_err"], max_rel_err=res["max_rel_err"],
                   kept_fraction=float((w_sparse.to_dense() != 0).float().mean()))
    except Exception as exc:  # noqa: BLE001
        out.update(pytorch_raised=True, error=_error(exc))
    return out


def probe_unavailable(env: dict) -> list[dict]:
    """On a usable GPU, force each backend this module calls unavailable (CUTLASS on Hopper) on one small 2:4
    weight, and record what PyTorch says (run last: a failing backend must not disturb the measurements)."""
    out = []
    for backend in sem.BACKENDS:
        if env["backends"][backend]["available"]:
            continue
        row = {"backend": backend, "reason": env["backends"][backend]["reason"]}
        try:
            w = _pruned_weight(64, 128, torch.float16, seed=2)
            with sem.forced_backend(backend):
                w_sparse = torch.sparse.to_sparse_semi_structured(w)
            x = torch.randn(16, 128, device=DEVICE, dtype=torch.float16)
            with torch.no_grad():
                res = sem.compare_outputs(F.linear(x, w_sparse), F.linear(x, w))
            row.update(pytorch_raised=False, ok=res["ok"], max_rel_err=res["max_rel_err"])
        except Exception as exc:  # noqa: BLE001
            row.update(pytorch_raised=True, error=_error(exc))
        out.append(row)
    return out


def timings(backends: list[str], min_run_time: float, deadline: float) -> tuple[list[dict], bool]:
    """``benchmark_linear`` over the sweep; stops (truncated=True) once ``deadline`` (monotonic) has passed."""
    cases = [(shape, t, torch.float16) for shape in SHAPES for t in TOKENS]
    cases += [(BF16_SHAPE, t, torch.bfloat16) for t in TOKENS]
    rows = []
    for backend in backends:
        for (d_out, d_in), tokens, dtype in cases:
            if time.monotonic() > deadline:
                return rows, True
            try:
                rows.append(sem.benchmark_linear(d_out, d_in, tokens, dtype, backend, min_run_time=min_run_time))
            except Exception as exc:  # noqa: BLE001
                rows.append({"d_out": d_out, "d_in": d_in, "tokens": tokens, "backend": backend,
                             "dtype": str(dtype).removeprefix("torch."), "error": _error(exc)})
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
    return rows, False


def build_llama(device: str = "cpu", **overrides) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` of SmolLM2-135M's shape (``overrides`` change it), built
    directly on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(LlamaConfig(**{**SMOLLM2_135M, **overrides})).eval()


@torch.no_grad()
def prune_decoder_linears_24(model: nn.Module) -> list[str]:
    """2:4-prune (magnitude) every ``nn.Linear`` of the decoder blocks (attention and MLP), in place; the
    ``lm_head`` (tied to the embedding) is left dense. Returns the names pruned."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".layers." in f".{name}":
            module.weight.mul_(nm_mask(module.weight.float().abs(), 2, 4))
            names.append(name)
    return names


def end_to_end(backend: str, min_run_time: float) -> dict:
    from torch.utils import benchmark

    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"transformers is not importable ({exc}); pip install transformers"}
    out: dict = {"backend": backend, "config": SMOLLM2_135M, "batch": E2E_BATCH, "seq": E2E_SEQ,
                 "dtype": "float16"}
    try:
        model = build_llama().to(DEVICE, torch.float16)
        out["pruned"] = len(prune_decoder_linears_24(model))
        sparse_model, report = sem.convert_model(model, backend)
        out["converted"] = len(report["converted"])
        out["skipped"] = {name: reason[:120] for name, reason in report["skipped"].items()}
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        ids = torch.randint(SMOLLM2_135M["vocab_size"], (E2E_BATCH, E2E_SEQ), generator=gen, device=DEVICE)
        with torch.no_grad():
            dense_logits = model(input_ids=ids, use_cache=False).logits  # (batch, seq, vocab)
            sparse_logits = sparse_model(input_ids=ids, use_cache=False).logits
            res = sem.compare_outputs(sparse_logits, dense_logits)
            out.update(max_abs_err=res["max_abs_err"], max_rel_err=res["max_rel_err"], ok=res["ok"],
                       top1_agreement=float((sparse_logits.argmax(-1) == dense_logits.argmax(-1)).float().mean()))
            del dense_logits, sparse_logits
            for kind, m in [("dense", model), ("sparse", sparse_model)]:
                timer = benchmark.Timer(stmt="m(input_ids=ids, use_cache=False)", globals={"m": m, "ids": ids})
                t = timer.blocked_autorange(min_run_time=min_run_time)
                out[f"{kind}_ms"], out[f"{kind}_iqr_ms"] = t.median * 1e3, t.iqr * 1e3
        out["speedup"] = out["dense_ms"] / out["sparse_ms"]
    except Exception as exc:  # noqa: BLE001
        out["error"] = _error(exc)
    return out


def _workload_row(dense: nn.Module, sparse: nn.Module, kind: str, tokens: int, repeats: int) -> dict:
    """Chapter 8 on one workload: :func:`pruning_lab.llm.latency.predict_and_measure` (f by no-op linears and by
    the profiler's device time, s of the 2:4 linears alone, Amdahl's prediction, the measured speedup)."""
    from pruning_lab.llm import latency as lat

    return lat.predict_and_measure(dense, sparse, kind, tokens, new_tokens=AMDAHL_DECODE[1], repeats=repeats)


def amdahl_gpu(backend: str, deadline: float, repeats: int = AMDAHL_REPEATS) -> list[dict]:
    """Chapter 8: for each model shape of ``AMDAHL_MODELS`` (random fp16 weights, decoder linears 2:4-pruned and
    converted), prefill and decode rows of :func:`_workload_row`. Stops starting models after ``deadline``."""
    rows = []
    for name, const in AMDAHL_MODELS.items():
        if time.monotonic() > deadline:
            rows.append({"model": name, "skipped": "--budget-s reached"})
            continue
        cfg = globals()[const]
        row: dict = {"model": name, "config": cfg, "dtype": "float16", "backend": backend, "workloads": []}
        try:
            dense = build_llama(DEVICE, **cfg).to(torch.float16)
            prune_decoder_linears_24(dense)
            sparse, report = sem.convert_model(dense, backend)
            row["converted"] = len(report["converted"])
            for kind, tokens in [("prefill", t) for t in AMDAHL_PREFILL] + [("decode", AMDAHL_DECODE[0])]:
                row["workloads"].append(_workload_row(dense, sparse, kind, tokens, repeats))
        except Exception as exc:  # noqa: BLE001
            row["error"] = _error(exc)
        finally:
            dense = sparse = None
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def _finite(obj):
    """JSON-safe: NaN and inf become None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def print_table(result: dict) -> None:
    env = result["environment"]
    print(f"{env['device'] or 'no GPU'} (cc {env['compute_capability']}), torch {env['torch']}, CUDA {env['cuda']}, "
          f"cuSPARSELt {env['cusparselt_version']}, backend {env['backend_chosen']}")
    if result["skipped"]:
        print(f"skipped: {result['skip_reason']}")
        return
    for row in result["correctness"]["layers"]:
        err = max((r["max_rel_err"] for r in row.get("by_tokens", [])), default=float("nan"))
        print(f"check {row['backend']:10s} {row['d_out']:>5}x{row['d_in']:<5} {row['dtype']:8s} "
              f"ok={row['ok']} max rel err {err:.2e} {row.get('error', '')}")
    print("speedup dense / 2:4 (median times; '-' not measured, 'err' failed):")
    print(f"{'backend':10s} {'dtype':8s} {'shape':>11s} " + " ".join(f"{t:>6d}" for t in TOKENS) + "  tokens")
    cells: dict = {}
    for r in result["timings"]:
        key = (r["backend"], r["dtype"], f"{r['d_out']}x{r['d_in']}")
        cells.setdefault(key, {})[r["tokens"]] = "   err" if "error" in r else f"{r['speedup']:5.2f}x"
    for (backend, dtype, shape), by_tokens in cells.items():
        print(f"{backend:10s} {dtype:8s} {shape:>11s} " + " ".join(by_tokens.get(t, "     -") for t in TOKENS))
    if result["timings_truncated"]:
        print("timings stopped early: --budget-s reached")
    e2e = result["end_to_end"]
    if "dense_ms" in e2e and "sparse_ms" in e2e:
        print(f"end to end ({e2e['batch']}x{e2e['seq']}): dense {e2e['dense_ms']:.2f} ms, "
              f"2:4 {e2e['sparse_ms']:.2f} ms, "
              f"{e2e['speedup']:.2f}x; top-1 agreement {e2e['top1_agreement']:.3f}")
    else:
        print(f"end to end: {e2e.get('skipped') or e2e.get('error')}")
    for row in result.get("amdahl", []):
        if "workloads" not in row or "error" in row:
            print(f"amdahl {row['model']}: {row.get('skipped') or row.get('error')}")
        for w in row.get("workloads", []):
            print(f"amdahl {row['model']:13s} {w['workload']:7s} {w['tokens']:>5d} tokens: f = {w['f_noop']:.2f}, "
                  f"s = {w['s_linears']['median']:.2f}, predicted {w['predicted']:.2f}x, "
                  f"measured {w['measured']['median']:.2f}x ({w['unit']}: {w['dense_ms']:.2f} -> {w['sparse_ms']:.2f})")
    for row in result.get("unavailable_backends", []):
        print(f"{row['backend']} (unavailable here), forced anyway: {row.get('error') or 'ran, ok=' + str(row['ok'])}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks") / "results", help="folder for the JSON file")
    p.add_argument("--dry-run", action="store_true", help="write the environment only and exit")
    p.add_argument("--min-run-time", type=float, default=0.2, help="seconds per timing (blocked_autorange)")
    p.add_argument("--budget-s", type=float, default=300.0, help="stop starting new timings after this long")
    p.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end model")
    p.add_argument("--skip-amdahl", action="store_true", help="skip Chapter 8's prefill / decode section")
    args = p.parse_args(argv)
    t0 = time.monotonic()

    env = environment()
    ok, reason = sem.semistructured_available("auto")
    skip_reason = "--dry-run" if args.dry_run else (None if ok else reason)
    result = {"schema": SCHEMA, "script": "benchmarks/gpu_check.py", "environment": env,
              "skipped": skip_reason is not None, "skip_reason": skip_reason,
              "correctness": {"layers": [], "not_2_4": []}, "timings": [], "timings_truncated": False,
              "end_to_end": {"skipped": skip_reason} if skip_reason else {}}
    if skip_reason is None:
        backends = [b for b in sem.BACKENDS if env["backends"][b]["available"]]
        result["backends_measured"] = backends
        result["correctness"] = correctness(backends)
        e2e_reserve = (0.0 if args.skip_e2e else 60.0) + (0.0 if args.skip_amdahl else 120.0)
        result["timings"], result["timings_truncated"] = timings(
            backends, args.min_run_time, t0 + args.budget_s - e2e_reserve)
        result["end_to_end"] = ({"skipped": "--skip-e2e"} if args.skip_e2e
                                else end_to_end(env["backend_chosen"], max(args.min_run_time, 1.0)))
        result["amdahl"] = ([] if args.skip_amdahl
                            else amdahl_gpu(env["backend_chosen"], t0 + args.budget_s - 30.0))
        result["unavailable_backends"] = probe_unavailable(env)
    result["elapsed_s"] = round(time.monotonic() - t0, 2)

    args.out.mkdir(parents=True, exist_ok=True)
    device = (env["device"] or "cpu").lower()
    slug = "".join(c if c.isalnum() else "-" for c in device).strip("-")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"gpu_check_{slug}_{stamp}.json"
    path.write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
    print_table(result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
