"""Snapshot text written for this book in 2026 into ``src/pruning_lab/data/fresh_text.json`` (Chapter 1).

SmolLM2 was released in November 2024, so text written for this book cannot be in its pretraining data. The
snapshot holds two kinds, each next to an old, public counterpart of the embedded held-out texts:

* ``code``: modules of ``pruning_lab`` (Python, like the standard-library source of the ``code`` text);
* ``prose``: the book's errata appendix with its MyST markup removed (English prose about Python and pruning,
  like the documentation of the ``prose`` text).

A snapshot, not a live read, so that the numbers it gives do not change when the package does. Run it again only
on purpose (then re-run ``make studies``); it records the commit it was taken from.

    .venv/bin/python scripts/fresh_text.py
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "pruning_lab" / "data" / "fresh_text.json"
CODE = ("src/pruning_lab/paired.py", "src/pruning_lab/studies.py", "src/pruning_lab/owl.py",
        "src/pruning_lab/llm/protocol.py", "src/pruning_lab/gauss_newton.py")
PROSE = ("book/errata.md",)


def plain(markdown: str) -> str:
    """MyST markdown -> plain prose: labels, roles, link targets and emphasis marks removed."""
    text = re.sub(r"^\(.*\)=\s*$", "", markdown, flags=re.M)  # (label)=
    text = re.sub(r"\{[a-z:]+\}`([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # {ref}`text <target>`, {cite}`key`
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](target)
    text = re.sub(r"^#+\s*", "", text, flags=re.M)
    text = text.replace("**", "").replace("`", "")
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    texts = {"code": "\n\n".join((ROOT / p).read_text() for p in CODE),
             "prose": "\n\n".join(plain((ROOT / p).read_text()) for p in PROSE)}
    data = {"texts": texts, "sources": {"code": list(CODE), "prose": list(PROSE)}, "commit": commit,
            "date": datetime.date.today().isoformat(),
            "sha256": {k: hashlib.sha256(t.encode()).hexdigest() for k, t in texts.items()},
            "why": "written for this book in 2026, after SmolLM2's release (November 2024): not in its "
                   "pretraining data", "script": "scripts/fresh_text.py"}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print({k: len(t) for k, t in texts.items()}, "->", OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()
