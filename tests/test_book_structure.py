"""The book's conventions, checked: setup cell, exercises without drift, executed notebooks, the toc."""
import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest
import yaml

import pruning_lab
from pruning_lab.exercises import available

from notebook_setup import notebook_setup_source

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS + SOLUTIONS
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](ch\d\d\.[\w.]+)["']""")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _checks(nb) -> list[str]:
    return [m for c in _code(nb) for m in CHECK_CALL.findall(c.source)]


def test_there_are_chapters_and_each_has_solutions():
    assert CHAPTERS, "no chapter notebooks found"
    for ch in CHAPTERS:
        sol = ROOT / "solutions" / f"{ch.stem}_solutions.ipynb"
        assert sol.exists(), f"{ch.name} has no solutions notebook {sol.name}"
    assert len(SOLUTIONS) == len(CHAPTERS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_the_setup_cell(path):
    first = _code(_read(path))[0]
    assert first.source == notebook_setup_source(path), f"{path.name}: run `python scripts/notebook_setup.py --write`"
    assert "nbval-ignore-output" in first.metadata.get("tags", []), f"{path.name}: the setup cell's output names " \
        "the machine; run `python scripts/notebook_setup.py --write` (it tags the cell)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed(path):
    nb = _read(path)
    code = _code(nb)
    missing = [i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None]
    assert not missing, f"{path.name}: code cells {missing} were not executed; run `make execute`"
    assert any(c.outputs for c in code)
    assert not [c for c in code for o in c.outputs if o.get("output_type") == "error"], f"{path.name} has errors"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_exercises_have_checkers_and_solutions_with_the_same_names(chapter):
    number = int(chapter.name[:2])
    in_chapter = _checks(_read(chapter))
    in_solutions = _checks(_read(ROOT / "solutions" / f"{chapter.stem}_solutions.ipynb"))
    registered = available(chapter=number)
    assert len(in_chapter) >= 4, f"{chapter.name}: at least four graded exercises expected"
    assert len(set(in_chapter)) == len(in_chapter), "an exercise is checked twice in the chapter"
    assert set(in_chapter) == set(registered), "chapter exercises and registered checkers differ"
    assert set(in_solutions) >= set(in_chapter), "some exercises have no solution"
    assert set(in_solutions) <= set(registered)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_exercises_are_stubs_and_report_not_attempted(chapter):
    nb = _read(chapter)
    stubs = [c for c in _code(nb) if "raise NotImplementedError" in c.source or re.search(r"=\s*\.\.\.", c.source)]
    assert len(stubs) >= len(_checks(nb)), "every exercise in a chapter starts as a stub"
    outputs = "".join(o.get("text", "") for c in _code(nb) if CHECK_CALL.search(c.source) for o in c.outputs)
    assert outputs.count("[TODO]") == len(_checks(nb)), "a chapter's check cells should print 'not attempted yet'"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_pass_their_checks(path):
    nb = _read(path)
    outputs = "".join(o.get("text", "") for c in _code(nb) if CHECK_CALL.search(c.source) for o in c.outputs)
    assert outputs.count("[PASS]") >= len(set(_checks(nb))) and "[FAIL]" not in outputs


def test_toc_lists_every_notebook_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [e["file"] for part in toc.get("parts", []) for e in part.get("chapters", [])]
    listed = [f for f in files if f.startswith(("chapters/", "solutions/"))]
    expected = [f"chapters/{p.stem}" for p in CHAPTERS] + [f"solutions/{p.stem}" for p in SOLUTIONS]
    assert [f.removesuffix(".ipynb") for f in listed] == expected


def test_glue_names_are_unique_across_the_book():
    seen = {}
    for path in NOTEBOOKS:
        for c in _code(_read(path)):
            for name in re.findall(r"""\bglue\(\s*["']([\w-]+)["']""", c.source):
                assert name not in seen or seen[name] == path, f"glue name {name!r} used in {seen.get(name)} and {path}"
                seen[name] = path


def _public_functions():
    for mod_info in pkgutil.walk_packages(pruning_lab.__path__, "pruning_lab."):
        if mod_info.name.split(".")[-1].startswith("_") or ".exercises." in mod_info.name + ".":
            continue
        mod = importlib.import_module(mod_info.name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{mod_info.name}.{name}", obj


def test_every_public_function_names_its_chapter():
    missing = [n for n, obj in _public_functions()
               if not re.search(r"Chapter \d|Chapters \d|all chapters|every (chapter|notebook)",
                                (inspect.getdoc(obj) or "") + (inspect.getmodule(obj).__doc__ or ""))]
    assert not missing, f"docstrings that name no chapter: {missing}"


def test_library_never_imports_myst_nb_at_top_level():
    for path in (ROOT / "src" / "pruning_lab").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.startswith("myst_nb") for n in names), f"{path}: Colab has no myst_nb"


# --- the reading experience: nothing for the test machinery on the page, code that fits it ------------------
PAGE_WIDTH = 85  # characters a code block of the HTML book shows without scrolling
EXERCISE = re.compile(r"^#+\s*Exercise\s+(\d+)\b", re.M)


def _is_glue(stmt) -> bool:
    value = getattr(stmt, "value", None)
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) == "glue"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_page_shows_no_test_markers_and_no_glue_cells(path):
    for i, cell in enumerate(_code(_read(path))):
        assert "NBVAL_" not in cell.source, f"{path.name}, code cell {i}: put nbval markers in the cell's tags"
        body = ast.parse(cell.source).body if not cell.source.lstrip().startswith(("%", "!")) else []
        if body and any(_is_glue(s) for s in body) and all(_is_glue(s) or isinstance(s, ast.Assign) for s in body):
            assert "remove-input" in cell.metadata.get("tags", []), \
                f"{path.name}, code cell {i}: a cell that only feeds numbers to the prose is tagged remove-input"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_fits_the_page(path):
    wide = [(i, line) for i, cell in enumerate(_code(_read(path))) for line in cell.source.splitlines()
            if len(line) > PAGE_WIDTH]
    assert not wide, f"{path.name}: {len(wide)} code lines are wider than {PAGE_WIDTH} characters, e.g. " \
        f"cell {wide[0][0]}: {wide[0][1]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_show_no_library_progress_bars(path):
    for i, cell in enumerate(_code(_read(path))):
        for out in cell.outputs:
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            assert "Loading weights" not in text and "Writing model shards" not in text, \
                f"{path.name}, code cell {i}: a progress bar leaked into the output (use llm.quiet_progress)"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_exercise_links_to_its_solution_and_back(chapter):
    num = chapter.name[:2]
    solution = ROOT / "solutions" / f"{chapter.stem}_solutions.ipynb"
    ex = {k: c.source for c in _read(chapter).cells if c.cell_type == "markdown" for k in EXERCISE.findall(c.source)}
    sol = {k: c.source for c in _read(solution).cells if c.cell_type == "markdown"
           for k in EXERCISE.findall(c.source)}
    assert ex and set(ex) == set(sol), f"{chapter.name}: exercises {sorted(ex)} but solutions {sorted(sol)}"
    for k in ex:
        assert f"(ch{num}-ex{k})=" in ex[k] and f"<ch{num}-ex{k}-solution>`" in ex[k], \
            f"{chapter.name}: Exercise {k} needs the label (ch{num}-ex{k})= and a {{ref}} to its solution"
        assert f"(ch{num}-ex{k}-solution)=" in sol[k] and f"<ch{num}-ex{k}>`" in sol[k], \
            f"{solution.name}: the solution of Exercise {k} needs its label and a {{ref}} back to the exercise"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_figures_are_opaque_so_they_read_in_dark_mode(path):
    """A PNG with a transparent background shows black axes on the dark page: every figure is opaque."""
    import base64
    import io

    from PIL import Image

    for i, cell in enumerate(_code(_read(path))):
        for out in cell.outputs:
            png = out.get("data", {}).get("image/png")
            if png:
                image = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGBA")
                assert image.getchannel("A").getextrema()[0] == 255, \
                    f"{path.name}, code cell {i}: a figure with a transparent background"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_formatting_helpers_and_quiz_sources_are_not_on_the_page(path):
    """The cell of formatting helpers (``sig``, ...) sits behind a "Show code" toggle; the quiz's source (its
    answers) is removed from the page, and the quiz comes before the summary."""
    nb = _read(path)
    for i, cell in enumerate(_code(nb)):
        tags = cell.metadata.get("tags", [])
        if "def sig(" in cell.source:
            assert "hide-input" in tags, f"{path.name}, code cell {i}: tag the helpers cell hide-input"
        if "from pruning_lab.book import quiz" in cell.source:
            assert "remove-input" in tags, f"{path.name}, code cell {i}: the quiz's source shows its answers"
    heads = [c.source.split("\n", 1)[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## Check your understanding" in heads, f"{path.name}: no quiz"
    assert heads.index("## Check your understanding") < heads.index("## Summary"), path.name
