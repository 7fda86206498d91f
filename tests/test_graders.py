"""Graders must be able to fail: every checker accepts its solution and rejects plausible wrong answers
with a message that names what is wrong."""
import time

import pytest
import torch

from pruning_lab import saliency as ref
from pruning_lab.exercises import ExerciseFailed, available, check, describe, grade

# ---------------------------------------------------------------------------- Chapter 2 solutions
SOLUTIONS = {
    "ch02.obd_saliency": lambda w, h: 0.5 * h * w**2,
    "ch02.taylor_saliency": lambda w, g, h: -g * w + 0.5 * h * w**2,
    "ch02.least_damaging": lambda w, H: int(torch.argmin(0.5 * torch.diagonal(H) * w**2)),
    "ch02.quadratic_delta": lambda w, g, H, p: float(g @ (-w * p) + 0.5 * (-w * p) @ H @ (-w * p)),
    "ch02.w5_cost": 0.5 * 1000 * 0.3**2,
}


def _obd_inplace(w, h):
    w.pow_(2).mul_(0.5 * h)
    return w


def _taylor_loop_slow(w, g, h):
    time.sleep(10)
    return -g * w + 0.5 * h * w**2


def _quad_inplace(w, g, H, p):
    w[~p] = 0.0
    dw = -w
    return float(g @ dw + 0.5 * dw @ H @ dw)


# (wrong answer, words the failure message must contain)
MUTANTS = {
    "ch02.obd_saliency": [
        (lambda w, h: h * w**2, "factor 1/2"),
        (lambda w, h: 0.5 * h * w.abs(), "squares the weight"),
        (lambda w, h: -0.5 * h * w**2, "sign"),
        (lambda w, h: 0.5 * w**2, "curvature H_ii is missing"),
        (_obd_inplace, "modified its input `weight`"),
        (lambda w, h: (0.5 * h * w**2).float(), "dtype"),
        (lambda w, h: (0.5 * h * w**2).reshape(-1, 1), "shape"),
        (lambda w, h: (0.5 * h * w**2).tolist(), "torch.Tensor"),
    ],
    "ch02.taylor_saliency": [
        (lambda w, g, h: g * w + 0.5 * h * w**2, "sign"),
        (lambda w, g, h: 0.5 * h * w**2, "left out the gradient term"),
        (lambda w, g, h: -g * w + h * w**2, "factor 1/2"),
        (lambda w, g, h: -g * w, "only the first-order term"),
        (_taylor_loop_slow, "was stopped"),
    ],
    "ch02.least_damaging": [
        (lambda w, H: int(torch.argmin(w.abs())), "smallest |w_i|"),
        (lambda w, H: int(torch.argmax(0.5 * torch.diagonal(H) * w**2)), "MOST damaging"),
        (lambda w, H: int(torch.argmin(0.5 * torch.diagonal(H) * w**2)) + 1, "start at 0"),
        (lambda w, H: int(torch.argmin(0.5 * H.sum(1) * w**2)), "diagonal"),
        (lambda w, H: torch.argmin(0.5 * torch.diagonal(H) * w**2).float() + 0.5, "integer"),
    ],
    "ch02.quadratic_delta": [
        (lambda w, g, H, p: float(g @ (-w * p) + 0.5 * ((w * p) ** 2 * torch.diagonal(H)).sum()), "cross terms"),
        (lambda w, g, H, p: float(g @ (w * p) + 0.5 * (w * p) @ H @ (w * p)), "sign"),
        (lambda w, g, H, p: float(g @ (-w * p) + (w * p) @ H @ (w * p)), "factor 1/2"),
        (lambda w, g, H, p: float(g @ (-w) + 0.5 * w @ H @ w), "only the pruned weights move"),
        (_quad_inplace, "modified its input `weight`"),
        (lambda w, g, H, p: 1 / 0, "ZeroDivisionError"),
    ],
    "ch02.w5_cost": [
        (90.0, "factor 1/2"),
        (-45.0, "sign"),
        (0.045, "expected 45"),
        (lambda: 45.0, "function"),
    ],
}


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
