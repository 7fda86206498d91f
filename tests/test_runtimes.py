"""Every notebook's recorded execution time is within the book's budget, and the runtime page is up to date."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("runtimes", ROOT / "scripts" / "runtimes.py")
runtimes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtimes)


@pytest.mark.parametrize("path", runtimes.notebooks(), ids=lambda p: p.stem)
def test_notebook_within_budget(path):
    t = runtimes.notebook_time(path)
    assert t["untimed"] == 0, f"{path.name}: {t['untimed']} code cells carry no execution time (run make execute)"
    assert t["seconds"] <= runtimes.BUDGET_S, (
        f"{path.name} took {t['seconds']:.0f} s when it was last executed, over the budget of "
        f"{runtimes.BUDGET_S:.0f} s: make it cheaper (fewer windows, smaller sweeps) or split it")


def test_runtime_page_is_generated_from_the_notebooks():
    assert runtimes.PAGE.read_text() == runtimes.table(), "run `.venv/bin/python scripts/runtimes.py`"


def test_notebook_time_sums_the_cells(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2"),
                                         nbformat.v4.new_markdown_cell("x")])
    nb.cells[0].metadata["execution"] = {"iopub.execute_input": "2026-12-01T10:00:00.000000Z",
                                         "shell.execute_reply": "2026-12-01T10:00:01.500000Z"}
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-12-01T10:00:02Z",
                                         "shell.execute_reply": "2026-12-01T10:00:04Z"}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    t = runtimes.notebook_time(path)
    assert (t["seconds"], t["cells"], t["untimed"]) == (3.5, 2, 0)
