"""The spread of the book's rounding-sensitive values across compute paths, and the tolerance table.

Each notebook records its rounding-sensitive values with ``pruning_lab.measured.Measured``. ``make execute``
writes the committed records (``chapters/expected``, ``solutions/expected``); a run with
``PRUNING_LAB_RECORD_DIR=DIR`` writes the same values, computed on another compute path, to ``DIR``. This script
compares every such run with the committed records:

    .venv/bin/python scripts/spread.py collect NAME=DIR [NAME=DIR ...]   # -> book/data/spread.json
    .venv/bin/python scripts/spread.py table                             # -> book/generated/tolerances.md
    .venv/bin/python scripts/spread.py previous COMMIT                   # -> _spread/previous/

``collect`` stores, per value, the recorded value and the relative deviation of every run, and per tolerance
class the largest deviation; it exits 1 if a value deviates by more than its class's tolerance. ``table`` writes
the appendix's table (classes, tolerances, measured spread, calibration-seed spread) from book/data/.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "book" / "data"
TABLE = ROOT / "book" / "generated" / "tolerances.md"
sys.path.insert(0, str(ROOT / "src"))
from pruning_lab.measured import TOLERANCES  # noqa: E402

CLASS_TEXT = {
    "dense": "no data-driven choice: the dense model, magnitude and random masks",
    "layer": "one matrix pruned with real calibration data (single-layer errors)",
    "wanda": "the whole model pruned by Wanda, and numbers computed from it",
    "sparsegpt": "the whole model pruned by SparseGPT (50% unstructured, 2:4, 4:8, 30%), and numbers from it",
    "sparsegpt-high": "the whole model pruned by SparseGPT at 70%",
    "trained": "small networks trained with SGD (the digits MLP of Chapter 2)",
    "lottery": "the lottery-ticket experiment, trained in float64 (Chapter 6): accuracies, early-stopping iterations",
    "structured": "FFN channels and attention heads cut out by calibration scores (Chapter 8): perplexities",
}


def committed() -> dict[str, dict]:
    out = {}
    for path in sorted(ROOT.glob("*/expected/*.json")):
        for key, item in json.loads(path.read_text())["values"].items():
            out[f"{path.stem}: {key}"] = item
    return out


def collect(runs: dict[str, Path]) -> int:
    ref = committed()
    values = {k: {"recorded": v["value"], "tol": v["tol"], "deviation": {}} for k, v in ref.items()}
    provenance = {}
    for name, folder in runs.items():
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            provenance[name] = record["provenance"]
            for key, item in record["values"].items():
                full = f"{path.stem}: {key}"
                if full in values:  # a value printed with few digits may be off by half its last digit
                    rec = values[full]["recorded"]
                    diff = max(0.0, abs(item["value"] - rec) - item.get("resolution", 0.0))
                    values[full]["deviation"][name] = diff / abs(rec) if rec else diff
    by_class: dict[str, dict] = {}
    bad = []
    for key, v in values.items():
        dev = max(v["deviation"].values(), default=0.0)
        c = by_class.setdefault(v["tol"], {"max_rel_dev": 0.0, "worst": None, "n": 0})
        c["n"] += 1
        if dev >= c["max_rel_dev"]:
            c["max_rel_dev"], c["worst"] = dev, key
        if dev > TOLERANCES[v["tol"]]:
            bad.append(f"{key}: deviates by {dev:.2%}, tolerance {TOLERANCES[v['tol']]:.2%}")
    reference = json.loads(next(ROOT.glob("chapters/expected/*.json")).read_text())["provenance"]
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "spread.json").write_text(json.dumps(
        {"reference": reference, "runs": provenance, "by_class": by_class, "values": values}, indent=1) + "\n")
    for cls, c in sorted(by_class.items()):
        print(f"{cls:>10}: {c['n']:3d} values, largest deviation {c['max_rel_dev']:.3%} ({c['worst']})")
    print("\n".join(bad) or "every value within its tolerance")
    return 1 if bad else 0


def table() -> str:
    spread = json.loads((DATA / "spread.json").read_text())
    def where(p: dict) -> str:
        if p["threads"] == "?":
            return p["processor"]
        return f"{p['processor']}, {p['threads']} thread{'' if p['threads'] == '1' else 's'}, {p['cpu_capability']}"

    runs = ", ".join(f"{name} ({where(p)})" for name, p in spread["runs"].items())
    ref = spread["reference"]
    lines = [f"Reference: the committed records, made on {ref['processor']} with {ref['threads']} threads "
             f"({ref['cpu_capability']}), Python {ref['python']}, torch {ref['torch']}, transformers "
             f"{ref.get('transformers', '-')}, on {ref['date']}. Compared with: {runs}.", "",
             "| class | what it covers | values | largest deviation measured | tolerance |",
             "|---|---|---|---|---|"]
    for cls, tol in TOLERANCES.items():
        c = spread["by_class"].get(cls)
        measured = f"{c['max_rel_dev']:.2%}" if c else "-"
        lines.append(f"| `{cls}` | {CLASS_TEXT[cls]} | {c['n'] if c else 0} | {measured} | {tol:.2%} |")
    seeds_path = DATA / "seed_spread.json"
    if seeds_path.exists():
        seeds = json.loads(seeds_path.read_text())
        lines += ["", f"Calibration seeds {seeds['seeds'][0]}-{seeds['seeds'][-1]} ({seeds['setup']}; "
                  f"{seeds['threads']} thread{'' if seeds['threads'] == 1 else 's'}):", "",
                  "| configuration | mean perplexity | min | max | range / mean |", "|---|---|---|---|---|"]
        for k, s in seeds["perplexity"].items():
            lines.append(f"| {k} | {s['mean']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {s['rel_range']:.1%} |")
        for p, s in seeds["wanda_over_sparsegpt"].items():
            lines.append(f"| Wanda / SparseGPT, {p} (same seed) | {s['mean']:.3f} | {s['min']:.3f} | "
                         f"{s['max']:.3f} | {s['rel_range']:.1%} |")
    return "\n".join(lines) + "\n"


def previous(commit: str) -> None:
    """The perplexities that another machine printed in Chapters 4 and 5 at ``commit`` (before the records
    existed), as a record in ``_spread/previous/``: a data point from another CPU, rounded as printed (2 and 1
    decimals), so its deviations include up to 0.05 / value of rounding."""
    import re
    import subprocess

    def code_outputs(path: str) -> list[str]:
        nb = json.loads(subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True,
                                       check=True, text=True).stdout)
        return ["".join("".join(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
                        for o in c.get("outputs", [])) for c in nb["cells"] if c["cell_type"] == "code"]

    ch4 = {}
    for out in code_outputs("chapters/04_sparsegpt.ipynb"):
        for m, p, v in re.findall(r"^(dense|magnitude|wanda|sparsegpt) ?(\S*)\s+perplexity\s+([\d.]+),", out, re.M):
            ch4[f"perplexity {m} {p or '-'}"] = v
    ch5 = {}
    for out in code_outputs("chapters/05_wanda.ipynb"):
        if out.startswith("method      30%"):
            for line in out.splitlines()[2:]:
                cells = line.split()
                if cells[0] == "dense":
                    ch5["perplexity dense"] = cells[2]
                    continue
                m = {"magnitude": "magnitude", "Wanda": "wanda", "SparseGPT": "sparsegpt"}[cells[0]]
                for label, v in zip(["30%", "50%", "70%", "2:4"], cells[1:]):
                    if v != "Ch.":
                        ch5[f"perplexity {m} {label}"] = v
    def half_digit(text: str) -> float:
        return 0.5 * 10.0 ** -len(text.split(".")[1]) if "." in text else 0.5

    folder = ROOT / "_spread" / "previous"
    folder.mkdir(parents=True, exist_ok=True)
    prov = {"processor": f"not recorded (the machine that executed commit {commit[:7]})", "threads": "?",
            "cpu_capability": "?"}
    for stem, values in [("04_sparsegpt", ch4), ("05_wanda", ch5)]:
        (folder / f"{stem}.json").write_text(json.dumps(
            {"provenance": prov, "values": {k: {"value": float(v.replace(",", "")), "resolution": half_digit(v)}
                                            for k, v in values.items()}}, indent=1))
        print(f"{stem}: {len(values)} values from commit {commit[:7]}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["previous"] and len(argv) == 2:
        previous(argv[1])
        return 0
    if argv[:1] == ["collect"] and len(argv) > 1:
        return collect({a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in argv[1:]})
    if argv == ["table"]:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(table())
        print(f"wrote {TABLE.relative_to(ROOT)}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
