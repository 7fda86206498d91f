"""pruning_lab.studies: reading the committed studies file and pairing its runs."""
from __future__ import annotations

import json
import math

import pytest

from pruning_lab import studies
from pruning_lab.llm import PROTOCOL


def write(tmp_path, runs, seeds=(0, 1, 2)):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"runs": runs, "seeds": list(seeds), "provenance": {"torch": "x"}, "note": 1}))
    return studies.load(path)


def nll_runs(name, base, shift, seeds=(0, 1, 2), k=4):
    """Runs ``name seed s`` with window NLLs base + shift + 0.01 * window + 0.001 * seed."""
    return {f"{name} seed {s}": {"window_nll": [base + shift + 0.01 * j + 0.001 * s for j in range(k)]}
            for s in seeds}


def test_shipped_file_is_the_protocol_with_three_seeds():
    s = studies.load()
    assert s.seeds == tuple(PROTOCOL.seeds)
    assert {"torch", "date", "processor"} <= set(s.provenance)
    assert s.meta["script"] == "scripts/llm_studies.py"
    protocol_runs = [k for k in s.runs if not k.startswith("context ")]
    assert len(protocol_runs) > 40
    for key in protocol_runs:
        assert len(s.nll(key)) == PROTOCOL.eval_windows, key
    # the seed study: Wanda and SparseGPT at 50%, every seed
    assert s.seeds_of("wanda 50% calib 8 seed {seed}", "sparsegpt 50% calib 8 seed {seed}") == [0, 1, 2]


def test_ppl_is_exp_of_mean_window_nll(tmp_path):
    s = write(tmp_path, {"a": {"window_nll": [1.0, 2.0, 3.0]}})
    assert s.ppl("a") == pytest.approx(math.exp(2.0))


def test_compare_resolves_a_shift_on_every_seed_and_window(tmp_path):
    s = write(tmp_path, {**nll_runs("a", 2.0, 0.0), **nll_runs("b", 2.0, 0.1)})
    c = s.compare("a seed {seed}", "b seed {seed}")
    assert c["verdict"] == "lower"  # a < b
    assert c["seeds"] == 3 and c["windows"] == 4
    assert c["ratio"][0] == pytest.approx(math.exp(0.1))
    assert s.compare("b seed {seed}", "a seed {seed}")["verdict"] == "higher"


def test_compare_reports_no_difference_when_seeds_disagree(tmp_path):
    runs = {**nll_runs("a", 2.0, 0.0)}
    runs.update({f"b seed {s}": {"window_nll": [2.0 + d] * 4} for s, d in zip((0, 1, 2), (0.2, 0.2, -0.2))})
    assert write(tmp_path, runs).compare("a seed {seed}", "b seed {seed}")["verdict"] == "no measurable difference"


def test_compare_pairs_a_seedless_run_with_every_seed(tmp_path):
    runs = {**nll_runs("a", 2.0, 0.0), "magnitude": {"window_nll": [5.0, 5.0, 5.0, 5.0]}}
    c = write(tmp_path, runs).compare("a seed {seed}", "magnitude")
    assert c["seeds"] == 3 and c["verdict"] == "lower"
    c = write(tmp_path, runs).compare("magnitude", "magnitude")
    assert c["seeds"] == 1 and c["mean"] == 0 and c["verdict"] == "no measurable difference"


def test_compare_uses_only_the_seeds_both_runs_have(tmp_path):
    s = write(tmp_path, {**nll_runs("a", 2.0, 0.0), **nll_runs("b", 2.0, 0.1, seeds=(0, 2))})
    assert s.compare("a seed {seed}", "b seed {seed}")["seeds"] == 2
    assert s.seed_ppls("b seed {seed}") == [s.ppl("b seed 0"), s.ppl("b seed 2")]


def test_bad_keys_get_clear_errors(tmp_path):
    s = write(tmp_path, {**nll_runs("a", 2.0, 0.0)})
    with pytest.raises(ValueError, match="`key` 'nope'"):
        s.nll("nope")
    with pytest.raises(ValueError, match="no seed has both"):
        s.compare("a seed {seed}", "c seed {seed}")


def test_reading_does_not_change_the_runs(tmp_path):
    runs = {**nll_runs("a", 2.0, 0.0), **nll_runs("b", 2.0, 0.1)}
    s = write(tmp_path, runs)
    before = json.dumps(s.runs, sort_keys=True)
    s.compare("a seed {seed}", "b seed {seed}")
    s.seed_ppls("a seed {seed}")
    assert json.dumps(s.runs, sort_keys=True) == before


def test_run_key_names_the_studies_runs():
    s = studies.load()
    for method in ("wanda", "sparsegpt"):
        for pattern in ("unstructured", "1:2", "2:4", "4:8", "8:16"):
            assert s.seeds_of(studies.run_key(method, pattern)) == [0, 1, 2], (method, pattern)
    for pattern in ("unstructured", "2:4"):
        assert studies.run_key("magnitude", pattern) in s
