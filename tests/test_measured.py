"""Measured: record, check within a tolerance class, claims with margins; the classes cover the measured spread."""
import json
from pathlib import Path

import pytest

from pruning_lab.measured import TOLERANCES, Measured, relative_tolerance

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch):
    for name in ("PRUNING_LAB_RECORD", "PRUNING_LAB_RECORD_DIR", "PRUNING_LAB_STRICT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def record(tmp_path, env, values):
    env.setenv("PRUNING_LAB_RECORD", "1")
    m = Measured("nb", tmp_path)
    for key, (v, tol) in values.items():
        assert m(key, v, tol) == v
    env.delenv("PRUNING_LAB_RECORD")


def test_record_then_check_within_tolerance(tmp_path, env):
    record(tmp_path, env, {"ppl": (20.0, "sparsegpt"), "dense": (11.0, "dense")})
    data = json.loads((tmp_path / "nb.json").read_text())
    assert data["values"]["ppl"] == {"value": 20.0, "tol": "sparsegpt"}
    assert "torch" in data["provenance"] and "processor" in data["provenance"]
    env.setenv("PRUNING_LAB_STRICT", "1")
    m = Measured("nb", tmp_path)
    r = TOLERANCES["sparsegpt"]
    m("ppl", 20.0 * (1 + 0.99 * r), "sparsegpt")
    m("ppl", 20.0 * (1 - 0.99 * r), "sparsegpt")
    with pytest.raises(AssertionError, match=r"ppl = .*record has 20.*class 'sparsegpt'"):
        m("ppl", 20.0 * (1 + 1.01 * r), "sparsegpt")
    with pytest.raises(AssertionError, match="class 'dense'"):
        m("dense", 11.01, "dense")  # the record's class counts, not the caller's
    with pytest.raises(AssertionError, match="not in"):
        m("missing", 1.0, "dense")


def test_not_strict_prints_and_goes_on(tmp_path, env, capsys):
    record(tmp_path, env, {"ppl": (20.0, "wanda")})
    assert Measured("nb", tmp_path)("ppl", 30.0, "wanda") == 30.0
    assert "differ by 50.00%" in capsys.readouterr().out
    Measured("other", tmp_path)("ppl", 30.0, "wanda")  # no record (Colab): silent
    assert capsys.readouterr().out == ""
    env.setenv("PRUNING_LAB_STRICT", "1")
    with pytest.raises(AssertionError, match="make execute"):
        Measured("other", tmp_path)("ppl", 30.0, "wanda")


def test_record_dir_keeps_the_value_then_checks(tmp_path, env):
    record(tmp_path, env, {"ppl": (20.0, "wanda")})
    env.setenv("PRUNING_LAB_RECORD_DIR", str(tmp_path / "spread"))
    env.setenv("PRUNING_LAB_STRICT", "1")
    with pytest.raises(AssertionError):
        Measured("nb", tmp_path)("ppl", 99.0, "wanda")
    assert json.loads((tmp_path / "spread" / "nb.json").read_text())["values"]["ppl"]["value"] == 99.0
    assert json.loads((tmp_path / "nb.json").read_text())["values"]["ppl"]["value"] == 20.0


def test_claims_need_a_margin_wider_than_the_tolerance(tmp_path, env):
    m = Measured("nb", tmp_path)
    m.order("a < b < c", [1.0, 1.5, 3.0], 0.1)
    with pytest.raises(AssertionError, match="no difference"):
        m.order("a < b", [1.0, 1.2], 0.1)  # 1.1 > 1.08: inside the spread
    with pytest.raises(AssertionError):
        m.order("a < b", [2.0, 1.0], "dense")
    m.order("mixed", [1.0, 1.2], [0.01, 0.05])
    with pytest.raises(ValueError, match="`tol`"):
        m.order("x", [1.0, 2.0], [0.1])
    m.ratio_above("x", 3.0, 2.0, 0.1)
    with pytest.raises(AssertionError, match="worst case"):
        m.ratio_above("ratio of ratios", 1.6, 1.2, 0.1, n_values=4)  # 1.6 (0.9/1.1)^2 = 1.07
    m.ratio_above("per-value tolerances", 1.6, 1.2, [0.01, 0.1, 0.01, 0.1])  # 1.6 0.99/1.01 0.9/1.1 = 1.28
    m.same("a = b", 1.0, 1.1, 0.1)
    with pytest.raises(AssertionError, match="say which"):
        m.same("a = b", 1.0, 1.3, 0.1)
    with pytest.raises(AssertionError, match="not above"):
        m.ratio_above("x", 2.2, 2.0, 0.1)


def test_bad_input(tmp_path, env):
    with pytest.raises(ValueError, match="`tol`"):
        relative_tolerance("nope")
    with pytest.raises(ValueError, match="`tol`"):
        relative_tolerance(1.5)
    with pytest.raises(ValueError, match="`notebook`"):
        Measured("a/b", tmp_path)
    with pytest.raises(ValueError, match="`value`"):
        Measured("nb", tmp_path)("k", float("nan"), "dense")
    assert relative_tolerance(["dense", "sparsegpt"]) == TOLERANCES["sparsegpt"]


def test_every_record_uses_a_known_class_and_the_classes_cover_the_measured_spread():
    records = sorted(ROOT.glob("*/expected/*.json"))
    assert records, "no records: run make execute"
    for path in records:
        for key, item in json.loads(path.read_text())["values"].items():
            assert item["tol"] in TOLERANCES, (path, key)
    spread = json.loads((ROOT / "book" / "data" / "spread.json").read_text())
    for cls, s in spread["by_class"].items():
        assert TOLERANCES[cls] >= 2 * s["max_rel_dev"], (cls, s)


def test_the_appendix_table_is_generated_from_the_measurements():
    import spread  # scripts/spread.py

    assert (ROOT / "book" / "generated" / "tolerances.md").read_text() == spread.table(), \
        "run `.venv/bin/python scripts/spread.py table`"


def test_notebooks_that_measure_mark_their_cells_and_have_records():
    import nbformat

    for path in sorted(ROOT.glob("*/[0-9]*.ipynb")):
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        if not any("Measured(" in c.source for c in cells):
            continue
        assert (path.parent / "expected" / f"{path.stem}.json").exists(), f"{path.name}: no record; make execute"
        for c in cells:
            if "measured(" in c.source or "measured.many(" in c.source:
                # the reader sees no test markers: nbval reads the cell's tag instead of a comment
                assert "nbval-ignore-output" in c.metadata.get("tags", []), \
                    f"{path.name}: a cell that checks measured values prints them; tag it 'nbval-ignore-output'"
