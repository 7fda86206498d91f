"""How much the book's pruned-LLM perplexities move with the calibration sample (the appendix quotes it).

Chapter 4's setup (8 x 256 calibration tokens drawn with ``seed``, the first 8 x 512 held-out tokens), Wanda and
SparseGPT at 50% unstructured and 2:4, for calibration seeds 0..N-1. Writes ``book/data/seed_spread.json``:
per configuration the perplexity of every seed, their mean, min and max, and the per-seed ratio Wanda /
SparseGPT (a paired comparison: both methods see the same calibration windows).

    .venv/bin/python scripts/spread_seeds.py --seeds 5      # about 8 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from pruning_lab.llm import calibration_windows, eval_tokens, load_default, run_grid
from pruning_lab.measured import provenance

ROOT = Path(__file__).resolve().parents[1]
CALIB, CALIB_LEN, EVAL, EVAL_LEN = 8, 256, 8, 512  # Chapter 4, Section 4.9
RUNS = [dict(method=m, pattern=p, sparsity=0.5) for p in ["unstructured", "2:4"] for m in ["wanda", "sparsegpt"]]


def summary(values: list[float]) -> dict:
    return {"values": values, "mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "rel_range": (max(values) - min(values)) / statistics.fmean(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "seed_spread.json")
    args = ap.parse_args()
    model, tok = load_default()
    held_out = eval_tokens(tok)
    ppl: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        calib = calibration_windows(tok, CALIB, CALIB_LEN, seed=seed)
        grid = run_grid(model, RUNS, eval_tokens=held_out, seqlen=EVAL_LEN, calibration=calib, max_windows=EVAL,
                        dense=False)
        for row in grid:
            ppl.setdefault(f"{row['method']} {row['pattern']}", []).append(row["perplexity"])
            print(f"seed {seed}: {row['method']:>9} {row['pattern']:<12} {row['perplexity']:.3f}", flush=True)
    out = {"setup": f"Chapter 4: {CALIB} x {CALIB_LEN} calibration tokens (seeded), {EVAL} x {EVAL_LEN} held-out",
           "seeds": list(range(args.seeds)), "provenance": provenance(), "threads": torch.get_num_threads(),
           "perplexity": {k: summary(v) for k, v in ppl.items()},
           "wanda_over_sparsegpt": {p: summary([w / s for w, s in zip(ppl[f"wanda {p}"], ppl[f"sparsegpt {p}"])])
                                    for p in ["unstructured", "2:4"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
