"""Chapter 5's studies on the embedded LLM, too slow for a notebook: seeds, calibration size, context length, OWL.

Everything uses the book's protocol (``pruning_lab.llm.PROTOCOL``) except the one setting a study varies:

1. **Seeds**: Wanda and SparseGPT at 50% (unstructured) for every calibration seed of the protocol; the per-window
   NLL of each, so that the chapter can pair the two methods window by window and seed by seed.
2. **Calibration size**: the same two methods with 8, 32 and 128 calibration windows of 256 tokens (2k, 8k and 32k
   tokens), every seed: does Wanda need less calibration data than SparseGPT, as its paper says?
3. **Context length**: the dense model and the seed-0 models of study 1 scored on the same 8,192 held-out tokens
   cut into windows of 256, 512 and 2,048 tokens.
4. **Sequential**: Wanda and SparseGPT with ``sequential=True`` (GPTQ's true-sequential order), seed 0; the
   chapter quotes both from here (their cost would break the chapter's budget).
5. **OWL** (Yin et al. 2024): uniform vs outlier-weighted per-block sparsity (M = 5, lambda = 0.08) for Wanda and
   SparseGPT at 50% and 70%, every seed (the outlier ratios come from each seed's calibration windows).
6. **N:M patterns** (Chapters 4 and 7): Wanda and SparseGPT at 1:2, 2:4, 4:8 and 8:16, every seed; magnitude (no
   data, one run) at each pattern and at 50% unstructured.
7. **Structured** (Chapter 8): the four channel/head surgeries of Section 8.4, every seed (the channel scores come
   from each seed's calibration windows).
8. **Fresh text** (Chapter 1): the dense model, magnitude, and Wanda and SparseGPT (every seed) at 50% scored on
   old public text (the held-out ``code`` and ``prose``) and on text written for this book in 2026, after the
   model's release (``fresh_text``), each cut into the protocol's windows.

Writes ``book/data/llm_studies.json`` (with provenance) after every run, and skips runs already in it, so an
interrupted run resumes; the slowest runs (the largest calibration sets) come last. About an hour on 2 cores:

    .venv/bin/python scripts/llm_studies.py
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from pruning_lab import owl
from pruning_lab.llm import PROTOCOL, eval_windows, fresh_text, fresh_tokens, held_out_texts, load_default
from pruning_lab.llm import nll_per_window, prune_model, surgery
from pruning_lab.llm import restore_weights, snapshot_weights
from pruning_lab.measured import provenance

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "pruning_lab" / "data" / "llm_studies.json"  # shipped with the package (Colab reads it)
METHODS = ("wanda", "sparsegpt")
CALIB_SIZES = (8, 32, 128)  # windows of PROTOCOL.calib_seqlen tokens
CONTEXTS = (256, 512, 2048)
CONTEXT_TOKENS = 8192
OWL_M, OWL_LAMBDA = 5.0, 0.08
PATTERNS = ("1:2", "2:4", "4:8", "8:16")
# Chapter 8's surgeries: name -> (criterion, FFN channels kept, heads kept), each half of the block parameters
STRUCTURED = {
    "FFN 512 (activation)": ("activation", 512, None),
    "FFN 512 (Wanda-style)": ("wanda", 512, None),
    "FFN 640 + 6 heads (activation)": ("activation", 640, 6),
    "FFN 640 + 6 heads (Wanda-style)": ("wanda", 640, 6),
}


def window_nll(model, held_out, seqlen: int, windows: int) -> list[float]:
    """Mean NLL per predicted token of each of the first ``windows`` windows of ``seqlen`` tokens."""
    w = eval_windows(held_out, seqlen, max_windows=windows)
    return (nll_per_window(model, w, batch_size=1) / (seqlen - 1)).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("runs", {})
    data.update(protocol=PROTOCOL.describe(), seeds=list(PROTOCOL.seeds), provenance=provenance(),
                threads=torch.get_num_threads(), owl={"M": OWL_M, "lambda": OWL_LAMBDA},
                script="scripts/llm_studies.py", calib_sizes=list(CALIB_SIZES), contexts=list(CONTEXTS),
                context_tokens=CONTEXT_TOKENS, patterns=list(PATTERNS), structured=list(STRUCTURED),
                fresh={k: fresh_text()[k] for k in ("commit", "date", "sha256", "sources")})
    runs = data["runs"]
    model, tok = load_default()
    held_out = PROTOCOL.held_out(tok)
    dense = snapshot_weights(model)

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")

    def record(key: str, **fields):
        runs[key] = fields
        save()
        print(f"{key}: {fields.get('ppl', '')}", flush=True)

    def score(key: str, scored=None) -> dict:
        nll = window_nll(scored or model, held_out, PROTOCOL.eval_seqlen, PROTOCOL.eval_windows)
        return {"window_nll": nll, "ppl": float(torch.tensor(nll).mean().exp())}

    if "dense" not in runs:
        record("dense", **score("dense"))
    contexts_needed = "context dense 2048" not in runs

    def calibration_size(n: int) -> None:
        for seed in PROTOCOL.seeds:
            calib = PROTOCOL.with_(calib_windows=n).calibration(tok, seed=seed)
            for method in METHODS:
                key = f"{method} 50% calib {n} seed {seed}"
                first = n == PROTOCOL.calib_windows and seed == 0
                if key in runs and not (first and contexts_needed):
                    continue
                restore_weights(model, dense)
                t0 = time.perf_counter()
                prune_model(model, method, 0.5, calibration=calib, progress=False)
                fields = score(key)
                fields["prune_s"] = time.perf_counter() - t0
                if first:  # study 3: the same model at other lengths
                    for ctx in CONTEXTS:
                        runs[f"context {method} {ctx}"] = {
                            "window_nll": window_nll(model, held_out, ctx, CONTEXT_TOKENS // ctx)}
                record(key, **fields)

    calibration_size(PROTOCOL.calib_windows)  # study 1 (and 3)
    if contexts_needed:
        restore_weights(model, dense)
        for ctx in CONTEXTS:
            runs[f"context dense {ctx}"] = {"window_nll": window_nll(model, held_out, ctx, CONTEXT_TOKENS // ctx)}
        save()
    for seed in PROTOCOL.seeds:  # study 4
        calib = PROTOCOL.calibration(tok, seed=seed)
        ratios = None
        for sparsity in (0.5, 0.7):
            for method in METHODS:
                for kind in ("uniform", "owl"):
                    key = f"{method} {sparsity:.0%} {kind} seed {seed}"
                    if key in runs or (kind == "uniform" and sparsity == 0.5):
                        continue  # uniform 50%: study 1's runs
                    restore_weights(model, dense)
                    if kind == "owl" and ratios is None:
                        ratios = owl.block_outlier_ratios(model, calib, OWL_M)
                    target = owl.owl_sparsities(ratios, sparsity, OWL_LAMBDA) if kind == "owl" else sparsity
                    t0 = time.perf_counter()
                    report = prune_model(model, method, target, calibration=calib, progress=False)
                    fields = score(key)
                    fields.update(prune_s=time.perf_counter() - t0, total_sparsity=report["total_sparsity"])
                    if kind == "owl":
                        fields.update(outlier_ratios=ratios, block_sparsities=target)
                    record(key, **fields)
    for method in METHODS:  # Chapter 5's true-sequential variant (Section 5.8), seed 0
        key = f"{method} 50% sequential seed 0"
        if key not in runs:
            restore_weights(model, dense)
            t0 = time.perf_counter()
            prune_model(model, method, 0.5, calibration=PROTOCOL.calibration(tok, seed=0), progress=False,
                        sequential=True)
            fields = score(key)
            fields["prune_s"] = time.perf_counter() - t0
            record(key, **fields)
    for pattern in ("unstructured",) + PATTERNS:  # study 6: magnitude needs no data (one run each)
        key = "magnitude 50%" if pattern == "unstructured" else f"magnitude {pattern}"
        if key not in runs:
            restore_weights(model, dense)
            prune_model(model, "magnitude", 0.5, pattern, progress=False)
            record(key, **score(key))
    for seed in PROTOCOL.seeds:  # study 6
        calib = PROTOCOL.calibration(tok, seed=seed)
        for pattern in PATTERNS:
            for method in METHODS:
                key = f"{method} {pattern} seed {seed}"
                if key in runs:
                    continue
                restore_weights(model, dense)
                t0 = time.perf_counter()
                report = prune_model(model, method, 0.5, pattern, calibration=calib, progress=False)
                fields = score(key)
                fields.update(prune_s=time.perf_counter() - t0, nm_valid=report["nm_valid"])
                record(key, **fields)
    restore_weights(model, dense)
    for seed in PROTOCOL.seeds:  # study 7: structured surgery (a new, smaller model; the dense one is kept)
        keys = {name: f"structured {name} seed {seed}" for name in STRUCTURED}
        if all(k in runs for k in keys.values()):
            continue
        stats = surgery.channel_scores(model, PROTOCOL.calibration(tok, seed=seed))
        for name, (crit, ffn_keep, heads_keep) in STRUCTURED.items():
            if keys[name] in runs:
                continue
            small, report = surgery.shrink(model, ffn_keep=ffn_keep, heads_keep=heads_keep,
                                           scores=surgery.score_units(stats, crit))
            assert report["params_after"]["blocks"] * 2 == report["params_before"]["blocks"], name
            record(keys[name], **score(keys[name], scored=small))
            del small
    texts = {f"old {k}": v for k, v in held_out_texts(tok).items() if k in ("code", "prose")}
    texts.update({f"fresh {k}": v for k, v in fresh_tokens(tok).items()})

    def score_texts(key: str) -> None:
        for name, ids in texts.items():
            runs[f"{key} on {name}"] = {"window_nll": window_nll(model, ids, PROTOCOL.eval_seqlen,
                                                                 PROTOCOL.eval_windows)}
        save()
        print(key, {n: round(math.exp(sum(runs[f"{key} on {n}"]["window_nll"]) / PROTOCOL.eval_windows), 2)
                    for n in texts}, flush=True)

    study8 = [("dense", None, None), ("magnitude 50%", "magnitude", None)]
    study8 += [(f"{m} 50% seed {s}", m, s) for s in PROTOCOL.seeds for m in METHODS]
    for key, method, seed in study8:  # study 8
        if f"{key} on fresh prose" in runs:
            continue
        restore_weights(model, dense)
        if method is not None:
            calib = PROTOCOL.calibration(tok, seed=seed) if seed is not None else None
            prune_model(model, method, 0.5, calibration=calib, progress=False)
        score_texts(key)
    restore_weights(model, dense)
    for n in CALIB_SIZES:  # study 2, the larger sizes (the slowest runs last)
        if n != PROTOCOL.calib_windows:
            calibration_size(n)
    restore_weights(model, dense)
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
