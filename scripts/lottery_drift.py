"""How far the Chapter 6 experiment drifts between compute paths, in float32 and in float64.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/lottery_drift.py run float32 _spread/drift/f32-t1.json
    OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python scripts/lottery_drift.py run float32 \
        _spread/drift/f32-avx2-t1.json
    .venv/bin/python scripts/lottery_drift.py compare A.json B.json [C.json D.json] > book/data/lottery_drift.json

``run`` trains the chapter's default configuration (``LotteryConfig``) in the given dtype and keeps every seed's
test accuracy and early-stopping iteration; ``compare`` writes the largest differences between the two runs of
each pair (float32 pair first, float64 pair second), with the runs' provenance.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from pruning_lab import lottery_experiment as lx  # noqa: E402
from pruning_lab.measured import provenance  # noqa: E402


def run(dtype: str, out: str, rounds: int | None = None) -> None:
    cfg = lx.LotteryConfig(dtype=getattr(torch, dtype), **({"rounds": rounds} if rounds else {}))
    res = lx.run(cfg)
    data = {"provenance": provenance(), "dtype": dtype, "rounds": cfg.rounds, "seconds": res.seconds}
    for arm in cfg.arms:
        data[arm] = {"acc": res.values(arm).tolist(), "es": res.values(arm, "es_iter").tolist()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(data) + "\n")


def compare(paths: list[str]) -> dict:
    out = {"script": "scripts/lottery_drift.py", "pairs": []}
    for a, b in zip(paths[::2], paths[1::2]):
        A, B = json.loads(Path(a).read_text()), json.loads(Path(b).read_text())
        arms = [k for k in A if isinstance(A[k], dict) and "acc" in A[k]]
        acc = max(abs(x - y) for k in arms for ra, rb in zip(A[k]["acc"], B[k]["acc"]) for x, y in zip(ra, rb))
        mean = max(abs(sum(ra) / len(ra) - sum(rb) / len(rb)) for k in arms
                   for ra, rb in zip(A[k]["acc"], B[k]["acc"]))
        es = max(abs(x - y) for k in arms for ra, rb in zip(A[k]["es"], B[k]["es"]) for x, y in zip(ra, rb))
        out["pairs"].append({"dtype": A["dtype"], "rounds": A["rounds"], "runs": [A["provenance"], B["provenance"]],
                             "max_seed_acc_diff": acc, "max_mean_acc_diff": mean, "max_es_diff": es})
    return out


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
    elif sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2:]), indent=1))
    else:
        raise SystemExit(__doc__)
