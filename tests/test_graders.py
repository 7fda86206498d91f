"""Graders must be able to fail: every checker accepts its solution and rejects plausible wrong answers
with a message that names what is wrong.

Each chapter's cases live in ``tests/grader_cases/chNN.py``: ``SOLUTIONS`` (name -> correct answer) and
``MUTANTS`` (name -> list of (wrong answer, words the failure message must contain)).
"""
import importlib.util
from pathlib import Path

import pytest
import torch

from pruning_lab import saliency as ref
from pruning_lab.exercises import ExerciseFailed, available, check, describe, grade


def _collect():
    solutions, mutants = {}, {}
    for path in sorted((Path(__file__).parent / "grader_cases").glob("ch[0-9][0-9].py")):
        spec = importlib.util.spec_from_file_location(f"grader_cases_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert not set(mod.SOLUTIONS) & set(solutions), f"{path.name} repeats a checker name"
        solutions.update(mod.SOLUTIONS)
        mutants.update(mod.MUTANTS)
    return solutions, mutants


SOLUTIONS, MUTANTS = _collect()


def test_every_checker_has_a_solution_and_at_least_three_mutants():
    names = available()
    assert names, "no checkers registered"
    assert set(SOLUTIONS) == set(names)
    for name in names:
        assert len(MUTANTS.get(name, [])) >= 3, f"{name} needs >= 3 plausible wrong answers in tests"
        assert describe(name)


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_solution_passes(name, capsys):
    assert check(name, SOLUTIONS[name]) is True
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("name, answer, words", [(n, a, w) for n, ms in MUTANTS.items() for a, w in ms],
                         ids=[f"{n}-{i}" for n, ms in MUTANTS.items() for i in range(len(ms))])
def test_mutant_fails_with_a_useful_message(name, answer, words, monkeypatch, capsys):
    verdict = grade(name, answer, time_limit=2.0) if "stopped" in words else grade(name, answer)
    assert verdict.status == "fail", f"{name} accepted a wrong answer"
    assert words in verdict.message, verdict.message
    if "stopped" in words:
        return
    monkeypatch.setenv("PRUNING_LAB_STRICT", "0")
    assert check(name, answer) is False
    assert "[FAIL]" in capsys.readouterr().out
    monkeypatch.setenv("PRUNING_LAB_STRICT", "1")
    with pytest.raises(ExerciseFailed):
        check(name, answer)


def test_failure_message_shows_inputs_expected_got_and_error():
    msg = grade("ch02.obd_saliency", lambda w, h: h * w**2).message
    for part in ("case 'worked example", "Inputs:", "weight = tensor(shape=(5,), dtype=float64)",
                 "expected:", "got:", "max |error|"):
        assert part in msg, msg


def test_not_attempted_never_raises(monkeypatch, capsys):
    monkeypatch.setenv("PRUNING_LAB_STRICT", "1")

    def stub(weight, hessian_diag):
        raise NotImplementedError

    assert check("ch02.obd_saliency", stub) is False
    assert check("ch02.w5_cost", ...) is False
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 2 and "[TODO]" in out


def test_checker_does_not_mutate_the_learners_objects_and_catches_errors():
    w = torch.tensor([1.0, 2.0])
    before = w.clone()
    grade("ch02.obd_saliency", lambda a, b: w.mul_(2))  # even a function that mutates something else
    v = grade("ch02.obd_saliency", lambda a, b: (_ for _ in ()).throw(KeyError("oops")))
    assert v.status == "fail" and "KeyError" in v.message
    assert torch.equal(w, before * 2)  # the checker itself never touched it beyond what the function did


def test_cases_are_deterministic_and_use_the_reference():
    a = grade("ch02.obd_saliency", ref.obd_saliency)
    b = grade("ch02.obd_saliency", ref.obd_saliency)
    assert a.passed and b.passed and a.message == b.message


def test_unknown_name_and_non_callable():
    with pytest.raises(ValueError, match="name"):
        check("ch02.nope", ref.obd_saliency)
    assert "expected a function" in grade("ch02.obd_saliency", 3.0).message


def test_order_can_matter_cases_agree_with_sparsegpt():
    """The truth of ch04.order_can_matter's cases, measured: some order changes SparseGPT's result exactly when
    the checker expects True."""
    from pruning_lab.exercises import ch04
    from pruning_lab.sparsegpt import sparsegpt_prune

    for case in ch04._order_cases():
        H, bs = case.args
        d = H.shape[0]
        W = torch.randn(6, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        orders = ["act", "random"] + [torch.randperm(d, generator=torch.Generator().manual_seed(k)) for k in range(6)]
        ref_ = sparsegpt_prune(W, H, 0.5, blocksize=bs)
        differs = any(not torch.allclose(ref_, sparsegpt_prune(W, H, 0.5, blocksize=bs, order=o), rtol=0, atol=1e-12)
                      for o in orders)
        assert differs == case.expected, case.label
