"""The first code cell of every notebook, generated from ONE source of truth.

The repository URL comes from ``_config.yml`` (``repository.url``) and the pin from the package version in
``pyproject.toml`` (release tag ``v<version>``). ``--write`` puts the cell at the top of every notebook in
``chapters/`` and ``solutions/`` (replacing an existing setup cell); ``--check`` exits 1 if any notebook differs.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# Setup: the same first cell in every notebook"


def repo_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def setup_source() -> str:
    spec = f"pruning-lab @ git+{repo_url()}@v{version()}"
    return f'''# NBVAL_IGNORE_OUTPUT
{MARKER} (laptop, this book's CI, Colab). It installs
# pruning_lab if it is missing (pinned to this book's release) and says which device we run on.
import importlib.util, subprocess, sys
if importlib.util.find_spec("pruning_lab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "{spec}"])
import pruning_lab
print(pruning_lab.device_report())'''


def notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def first_code_cell(nb) -> int | None:
    return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="insert/replace the setup cell in every notebook")
    args = ap.parse_args()
    src, bad = setup_source(), []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        i = first_code_cell(nb)
        ok = i is not None and nb.cells[i].source == src
        if ok:
            continue
        if not args.write:
            bad.append(path.relative_to(ROOT))
            continue
        if i is not None and MARKER in nb.cells[i].source:
            nb.cells[i].source = src
        else:
            cell = nbformat.v4.new_code_cell(src)
            cell.pop("id", None)
            nb.cells.insert(0 if i is None else i, cell)
        nbformat.write(nb, path)
        print(f"updated {path.relative_to(ROOT)}")
    if bad:
        print("notebooks whose first code cell is not the setup cell (run `python scripts/notebook_setup.py --write`):")
        print("\n".join(f"  {b}" for b in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
