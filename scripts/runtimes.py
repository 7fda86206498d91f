"""Execution time of every notebook, from the timestamps that `jupyter execute` stores in each code cell.

nbclient records, in every executed cell's metadata, when the kernel started and finished it
(``execution.iopub.execute_input`` and ``execution.shell.execute_reply``); the sum over a notebook's cells is
its execution time on the machine that last executed it (``make execute``). This script writes the table of the
book's runtime page (``book/generated/runtimes.md``), with the budget: every notebook must run in at most
``BUDGET_S`` seconds on a 2-core CPU; ``tests/test_runtimes.py`` fails when one does not.

    python scripts/runtimes.py            # write book/generated/runtimes.md
    python scripts/runtimes.py --check    # exit 1 if the page is out of date or a notebook is over budget
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "generated" / "runtimes.md"
BUDGET_S = 240.0  # 4 minutes per notebook on a 2-core CPU


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def notebook_time(path: Path) -> dict:
    """``{"seconds", "cells", "untimed", "executed"}``: the summed run time of the code cells, how many code
    cells there are, how many carry no timing, and when the first one ran (UTC)."""
    nb = nbformat.read(path, as_version=4)
    seconds, cells, untimed, first = 0.0, 0, 0, None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cells += 1
        ex = cell.get("metadata", {}).get("execution", {})
        start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if not (start and end):
            untimed += 1
            continue
        seconds += (_time(end) - _time(start)).total_seconds()
        first = first or start
    return {"seconds": seconds, "cells": cells, "untimed": untimed, "executed": first}


def _machine(path: Path) -> str:
    """The machine that made the notebook's record (chapters with rounding-sensitive values), else '-'."""
    record = path.parent / "expected" / f"{path.stem}.json"
    if not record.exists():
        return "-"
    p = json.loads(record.read_text()).get("provenance", {})
    return f"{p.get('processor', '?')}, {p.get('threads', '?')} threads, {p.get('cpu_capability', '?')}"


def notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def table() -> str:
    lines = [f"Budget: {BUDGET_S / 60:.0f} minutes per notebook on a 2-core CPU (checked by "
             "`tests/test_runtimes.py` in `make test`).", "",
             "| notebook | execution time | within budget | code cells | last executed (UTC) | machine of its record |",
             "|---|---|---|---|---|---|"]
    for path in notebooks():
        t = notebook_time(path)
        ok = "yes" if t["seconds"] <= BUDGET_S and not t["untimed"] else "**no**"
        when = t["executed"][:16].replace("T", " ") if t["executed"] else "-"
        lines.append(f"| `{path.parent.name}/{path.name}` | {t['seconds']:.0f} s | {ok} | {t['cells']} | {when} | "
                     f"{_machine(path)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="check the page and the budget instead of writing")
    args = p.parse_args(argv)
    text = table()
    if args.check:
        over = [path.name for path in notebooks() if notebook_time(path)["seconds"] > BUDGET_S]
        stale = not PAGE.exists() or PAGE.read_text() != text
        if over:
            print(f"over the {BUDGET_S:.0f} s budget: {', '.join(over)}")
        if stale:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python scripts/runtimes.py")
        return 1 if over or stale else 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
