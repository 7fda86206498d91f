"""How much the book's pruned-LLM perplexities move with the calibration sample (the appendix quotes it).

Read from the LLM studies (``src/pruning_lab/data/llm_studies.json``, ``make studies``), which prune with the
book's protocol (``PROTOCOL``) for every calibration seed: Wanda and SparseGPT at 50% unstructured and at the N:M
patterns. Writes ``book/data/seed_spread.json``: per configuration the perplexity of every seed, their mean, min
and max, and the per-seed ratio Wanda / SparseGPT (a paired comparison: both methods see the same calibration
windows). No pruning here: the runs are the studies'.

    .venv/bin/python scripts/spread_seeds.py
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from pruning_lab.llm import PROTOCOL
from pruning_lab.studies import load, run_key

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ["unstructured", "8:16", "4:8", "2:4", "1:2"]


def summary(values: list[float]) -> dict:
    return {"values": values, "mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "rel_range": (max(values) - min(values)) / statistics.fmean(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "seed_spread.json")
    args = ap.parse_args()
    s = load()
    ppl = {f"{m} {p}": s.seed_ppls(run_key(m, p)) for p in PATTERNS for m in ("wanda", "sparsegpt")}
    seeds = s.seeds_of(*(run_key(m, p) for p in PATTERNS for m in ("wanda", "sparsegpt")))
    assert all(len(v) == len(seeds) for v in ppl.values()), "every configuration needs every seed"
    out = {"setup": f"the book's protocol: {PROTOCOL.describe()}; from the LLM studies",
           "seeds": seeds, "provenance": s.provenance, "threads": int(s.meta["threads"]),
           "perplexity": {k: summary(v) for k, v in ppl.items()},
           "wanda_over_sparsegpt": {p: summary([w / g for w, g in zip(ppl[f"wanda {p}"], ppl[f"sparsegpt {p}"])])
                                    for p in PATTERNS}}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
