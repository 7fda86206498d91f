"""The grading engine behind :func:`pruning_lab.exercises.check`.

A *checker* has a name (``"ch02.obd_saliency"``), the chapter that poses it, and a list of *cases*: the
chapter's worked examples first, then seeded random cases. For a function exercise each case holds the
arguments and the expected output, computed by the reference implementation in ``pruning_lab``; for a value
exercise there is one case, the expected value.

The engine calls the learner's function on a private copy of each case's arguments, catches everything it
can raise, times it, notices if it changed its inputs, compares with the expected output (shape, dtype,
values) and prints a short verdict. A failing verdict names the case, its inputs, the expected and the
obtained output, the largest error and, where a pattern is recognisable (a factor 2, a sign, a transpose,
an off-by-one index), a hint. ``check`` returns True or False; with the environment variable
``PRUNING_LAB_STRICT=1`` (set by the test runner) a failure raises :class:`ExerciseFailed` instead, so a
wrong solution notebook fails CI, while "not attempted yet" never raises.
"""
from __future__ import annotations

import copy
import math
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["Case", "Checker", "ExerciseFailed", "register", "check", "available", "describe", "TIME_LIMIT_S"]

TIME_LIMIT_S = 5.0  # a learner's function that runs longer than this on one case is reported


class ExerciseFailed(AssertionError):
    """Raised by :func:`check` on a wrong answer when ``PRUNING_LAB_STRICT=1``."""


class _TooSlow(BaseException):
    """Raised inside the learner's code by the alarm; BaseException so a bare ``except Exception`` can't eat it."""


@dataclass
class Case:
    """One test of a learner's answer: ``answer(*args, **kwargs)`` should equal ``expected``."""

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expected: Any = None
    arg_names: tuple[str, ...] = ()


@dataclass
class Checker:
    """A named exercise: ``kind`` is ``"function"`` (answer is callable) or ``"value"`` (answer is a number)."""

    name: str
    chapter: int
    kind: str
    summary: str
    make_cases: Callable[[], list[Case]]
    rtol: float = 1e-6
    atol: float = 1e-9
    hint: Callable[[Case, Any], str | None] | None = None  # exercise-specific diagnosis of a wrong output


_REGISTRY: dict[str, Checker] = {}


def register(checker: Checker) -> Checker:
    if checker.name in _REGISTRY:
        raise ValueError(f"a checker named {checker.name!r} is already registered")
    if checker.kind not in {"function", "value"}:
        raise ValueError(f"`kind` must be one of ['function', 'value']; got {checker.kind!r}")
    _REGISTRY[checker.name] = checker
    return checker


def available(chapter: int | None = None) -> list[str]:
    """Sorted names of every checker (optionally only those of one chapter)."""
    _load_all()
    return sorted(n for n, c in _REGISTRY.items() if chapter is None or c.chapter == chapter)


def describe(name: str) -> str:
    """One line saying what the exercise asks."""
    return _get(name).summary


def _load_all() -> None:
    """Import every ``chNN`` module of this package (each registers its chapter's checkers on import)."""
    import importlib
    import pkgutil
    import re

    from .. import exercises

    for info in pkgutil.iter_modules(exercises.__path__):
        if re.fullmatch(r"ch\d\d", info.name):
            importlib.import_module(f"{exercises.__name__}.{info.name}")


def _get(name: str) -> Checker:
    _load_all()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"`name` must be one of {sorted(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name]


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the random cases of every chapter's checkers."""
    return torch.Generator().manual_seed(seed)


def as_float(got: Any) -> float | None:
    """``got`` as a float if it is a finite number or a one-element tensor, else None (hints, all chapters)."""
    if isinstance(got, Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
        return None
    return float(got)


def _strict() -> bool:
    return os.environ.get("PRUNING_LAB_STRICT", "") not in {"", "0", "false", "False"}


# ----------------------------------------------------------------------------------------- formatting
def _fmt(x: Any, limit: int = 8) -> str:
    """Short description of a value: shape, dtype and the first few entries."""
    if isinstance(x, Tensor):
        flat = x.detach().reshape(-1)
        vals = ", ".join(_num(v) for v in flat[:limit].tolist())
        more = ", ..." if flat.numel() > limit else ""
        return f"tensor(shape={tuple(x.shape)}, dtype={str(x.dtype).replace('torch.', '')}) [{vals}{more}]"
    if isinstance(x, float):
        return _num(x)
    if isinstance(x, (list, tuple)) and len(x) > limit:
        return repr(list(x[:limit]))[:-1] + ", ...]"
    return repr(x)


def _num(v: Any) -> str:
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    return f"{v:.6g}"


def _case_inputs(case: Case) -> str:
    names = case.arg_names or tuple(f"arg{i}" for i in range(len(case.args)))
    parts = [f"    {n} = {_fmt(a)}" for n, a in zip(names, case.args)]
    parts += [f"    {k} = {_fmt(v)}" for k, v in case.kwargs.items()]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------- comparison
def compare(expected: Any, got: Any, rtol: float, atol: float) -> str | None:
    """None if ``got`` matches ``expected``; otherwise what is wrong, in one or two sentences."""
    if expected is None:  # "there is no such value" (e.g. no crossing): the answer must be None too
        return None if got is None else f"expected None, got {_fmt(got)} ({type(got).__name__})"
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return f"expected a torch.Tensor, got a {type(got).__name__}"
        if got.shape != expected.shape:
            msg = f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
            if got.dim() == 2 and got.shape == expected.shape[::-1]:
                msg += " (transposed: check which axis is rows and which is columns)"
            elif got.numel() == expected.numel():
                msg += " (same number of entries: a reshape or a wrong axis?)"
            return msg
        if got.dtype != expected.dtype:
            return (f"wrong dtype: expected {str(expected.dtype).replace('torch.', '')}, "
                    f"got {str(got.dtype).replace('torch.', '')}")
        if expected.dtype == torch.bool or not expected.is_floating_point():
            bad = got != expected
            if bad.any():
                first = tuple(int(i) for i in torch.nonzero(bad)[0])
                return (f"{int(bad.sum())} of {expected.numel()} entries differ; first at index {first}: "
                        f"expected {expected[first].item()}, got {got[first].item()}")
            return None
        if not torch.isfinite(got).all():
            return "the output contains NaN or inf"
        if torch.allclose(got, expected, rtol=rtol, atol=atol):
            return None
        err = (got - expected).abs()
        where = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
        return (f"values differ: max |error| = {err.max().item():.3g} at index {where} "
                f"(expected {expected[where].item():.6g}, got {got[where].item():.6g})")
    if isinstance(expected, bool):  # a yes/no answer: True or False (or a one-element bool tensor)
        if isinstance(got, Tensor) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got.item())
        if not isinstance(got, bool):
            return f"expected True or False (a bool), got {_fmt(got)} ({type(got).__name__})"
        if got != expected:
            return f"expected {expected}, got {got}"
        return None
    if isinstance(expected, int):
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, int) and not (isinstance(got, float) and got.is_integer()):
            return f"expected an integer, got {_fmt(got)} ({type(got).__name__})"
        if int(got) != expected:
            return f"expected {expected}, got {int(got)}"
        return None
    if isinstance(expected, float):
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"expected a number, got {_fmt(got)} ({type(got).__name__})"
        if not math.isfinite(got):
            return f"expected a finite number, got {got}"
        if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
            return None
        return f"expected {expected:.6g}, got {got:.6g} (error {abs(got - expected):.3g})"
    raise TypeError(f"no comparison for expected values of type {type(expected).__name__}")


def generic_hint(expected: Any, got: Any) -> str | None:
    """Recognise the common slips: a factor of 2, a flipped sign, an index off by one."""
    try:
        if isinstance(expected, Tensor) and isinstance(got, Tensor) and got.shape == expected.shape \
                and expected.is_floating_point() and got.dtype == expected.dtype:
            scale = expected.abs().max().clamp(min=1e-12)
            close = lambda a: torch.allclose(a, expected, rtol=1e-5, atol=1e-9 * float(scale))  # noqa: E731
            if close(-got):
                return "your output is exactly the negative of the expected one: a sign error?"
            if close(got / 2):
                return "your output is exactly 2x the expected one: a missing factor 1/2?"
            if close(got * 2):
                return "your output is exactly half the expected one: an extra factor 1/2?"
            if got.dim() == 2 and got.shape[0] == got.shape[1] and close(got.T):
                return "your output is the transpose of the expected one: wrong axis?"
        if isinstance(expected, float) and isinstance(got, (int, float)) and expected != 0:
            r = got / expected
            if math.isclose(r, 2, rel_tol=1e-6):
                return "exactly 2x the expected value: a missing factor 1/2?"
            if math.isclose(r, 0.5, rel_tol=1e-6):
                return "exactly half the expected value: an extra factor 1/2?"
            if math.isclose(r, -1, rel_tol=1e-6):
                return "the expected value with the opposite sign: a sign error?"
        if isinstance(expected, int) and not isinstance(expected, bool) and isinstance(got, int):
            if got == expected + 1:
                return "one more than expected: Python indices start at 0, not 1"
    except Exception:  # a hint must never break the verdict
        return None
    return None


# ----------------------------------------------------------------------------------------- running
def _mutated(before: Any, after: Any) -> bool:
    if isinstance(before, Tensor):
        return not (isinstance(after, Tensor) and after.shape == before.shape and after.dtype == before.dtype
                    and torch.equal(torch.nan_to_num(after), torch.nan_to_num(before)))
    if isinstance(before, (list, tuple)):
        return len(before) != len(after) or any(_mutated(b, a) for b, a in zip(before, after))
    if isinstance(before, dict):
        return before.keys() != after.keys() or any(_mutated(before[k], after[k]) for k in before)
    return False


def _call_with_limit(fn: Callable, args: tuple, kwargs: dict, limit: float) -> tuple[Any, float]:
    """Run ``fn``; interrupt it after ``limit`` seconds where the platform allows (main thread, Unix)."""
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if use_alarm:
        def on_alarm(signum, frame):
            raise _TooSlow()
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - start
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    if elapsed > limit:
        raise _TooSlow()
    return out, elapsed


@dataclass
class Verdict:
    name: str
    status: str  # "pass" | "not attempted" | "fail"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def grade(name: str, answer: Any, *, time_limit: float = TIME_LIMIT_S) -> Verdict:
    """Grade without printing or raising: the engine behind :func:`check` (used by the tests)."""
    checker = _get(name)
    title = f"{name} ({checker.summary})"
    if checker.kind == "function" and not callable(answer):
        return Verdict(name, "fail", f"{title}\n  expected a function, got {_fmt(answer)}; pass the function itself, "
                                     "without calling it: check(name, my_function)")
    if checker.kind == "value" and (answer is Ellipsis or answer is NotImplemented):
        return Verdict(name, "not attempted", f"{name}: not attempted yet (the answer is still `...`). "
                                              "Replace it with your number and run the check again.")
    cases = checker.make_cases()
    for case in cases:
        if checker.kind == "value":
            got, elapsed = answer, 0.0
            if callable(got):
                return Verdict(name, "fail", f"{title}\n  expected a number, got a function: pass its value")
        else:
            args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
            try:
                got, elapsed = _call_with_limit(answer, args, kwargs, time_limit)
            except NotImplementedError:
                return Verdict(name, "not attempted", f"{name}: not attempted yet (the stub still raises "
                                                      "NotImplementedError). Replace it with your code and run the check again.")
            except _TooSlow:
                return Verdict(name, "fail", f"{title}\n  case '{case.label}': your function ran for more than "
                                             f"{time_limit:g} s and was stopped. Inputs:\n{_case_inputs(case)}\n"
                                             "  Hint: avoid Python loops over every entry; use tensor operations.")
            except Exception as exc:  # the learner's bug must not crash the notebook
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                return Verdict(name, "fail", f"{title}\n  case '{case.label}': your function raised {tb}\n"
                                             f"  Inputs:\n{_case_inputs(case)}")
            mutated = [n for n, a, b in zip(case.arg_names or range(len(args)), case.args, args) if _mutated(a, b)]
            mutated += [k for k in case.kwargs if _mutated(case.kwargs[k], kwargs[k])]
            if mutated:
                names = ", ".join(f"`{m}`" for m in mutated)
                return Verdict(name, "fail", f"{title}\n  case '{case.label}': your function modified its input "
                                             f"{names} in place. Library functions must leave their inputs untouched: "
                                             "use out-of-place operations (w * m, not w.mul_(m); w.clone() before "
                                             "writing into it).")
        problem = compare(case.expected, got, checker.rtol, checker.atol)
        if problem is not None:
            hint = (checker.hint(case, got) if checker.hint else None) or generic_hint(case.expected, got)
            lines = [title, f"  case '{case.label}': {problem}"]
            if checker.kind == "function":
                lines.append(f"  Inputs:\n{_case_inputs(case)}")
            lines += [f"  expected: {_fmt(case.expected)}", f"  got:      {_fmt(got)}"]
            if hint:
                lines.append(f"  Hint: {hint}")
            return Verdict(name, "fail", "\n".join(lines))
    n = len(cases)
    what = f"all {n} cases" if n > 1 else "the expected value"
    return Verdict(name, "pass", f"{name}: correct! ({what}: {_describe_cases(cases)})")


def _describe_cases(cases: list[Case]) -> str:
    labels = [c.label for c in cases]
    return ", ".join(labels) if len(labels) <= 4 else ", ".join(labels[:3]) + f" and {len(labels) - 3} more"


def check(name: str, answer: Any) -> bool:
    """Grade ``answer`` for the exercise ``name`` and print a short verdict; True on a pass.

    ``answer`` is the learner's function (for a function exercise) or value. See :func:`available` for the
    names. Under ``PRUNING_LAB_STRICT=1`` a wrong answer raises :class:`ExerciseFailed`.
    """
    verdict = grade(name, answer)
    mark = {"pass": "PASS", "not attempted": "TODO", "fail": "FAIL"}[verdict.status]
    print(f"[{mark}] {verdict.message}")
    if verdict.status == "fail" and _strict():
        raise ExerciseFailed(verdict.message)
    return verdict.passed
