"""Results that depend on the host's rounding, checked against a record with a measured tolerance (all
chapters; the appendix "How this book is built and checked" explains the classes and how they were measured).

Most outputs of the book are the same on every machine, and nbval compares them as text. Some are not: a
perplexity after *data-driven* pruning (SparseGPT, Wanda) depends on the order in which the host's BLAS adds
numbers, because near-tied mask choices flip with the last bit and the flips compound over 30 blocks; a small
network trained with SGD drifts the same way. The thread count and the vector instruction set change that
order, so two machines print different digits.

For those values a notebook uses :class:`Measured`::

    measured = Measured("04_sparsegpt")                     # expected/04_sparsegpt.json beside the notebook
    measured("ppl sparsegpt 50%", ppl, "sparsegpt")         # record, or check within TOLERANCES["sparsegpt"]
    measured.order("SparseGPT < Wanda < magnitude", [p_sgpt, p_wanda, p_mag], "sparsegpt")

``make execute`` sets ``PRUNING_LAB_RECORD=1``: every value is then written to the record (with its tolerance
class). Every other run recomputes the value and compares. Under ``PRUNING_LAB_STRICT=1`` (the book's tests) a
value outside its tolerance, or missing from the record, raises :class:`AssertionError`; elsewhere (Colab, a
laptop with other library versions) it prints one line and goes on. ``PRUNING_LAB_RECORD_DIR=DIR`` also writes
every value, before it is checked, to ``DIR/<notebook>.json``: that is how the spread across compute paths is
measured (``scripts/spread.py``).

A claim of the prose (an ordering, "ten times larger") is asserted with a margin wider than the tolerance
(:meth:`Measured.order`, :meth:`Measured.ratio_above`), so it holds on every host whose values pass the check.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Sequence

__all__ = ["TOLERANCES", "Measured", "relative_tolerance", "provenance"]

# Relative tolerance of each class: at least twice the largest relative deviation from the recorded value that
# was measured across compute paths (other thread counts, PyTorch's AVX2 kernels instead of AVX-512, and the
# outputs another machine printed before the records existed). The measurements are in book/data/spread.json
# (`make spread`, scripts/spread.py); tests/test_measured.py checks that every class still covers them.
TOLERANCES: dict[str, float] = {
    "dense": 1e-4,      # no data-driven choice: the dense model, magnitude and random masks (Ch. 1, 4, 5)
    "layer": 0.01,      # one matrix pruned from real calibration data (Ch. 4, 5 single-layer errors)
    "wanda": 0.04,      # whole model pruned by Wanda, and values computed from it
    "sparsegpt": 0.10,  # whole model pruned by SparseGPT up to 50% (its masks flip with the rounding and compound)
    "sparsegpt-high": 0.30,  # SparseGPT at 70%, where the flips compound most (Ch. 5)
    "trained": 0.01,    # small networks trained with SGD (the digits MLP of Ch. 2)
    "lottery": 1e-3,    # the lottery-ticket experiment in float64 (Ch. 6): one test image of one seed is 4e-4
    "structured": 0.01,  # FFN channels / heads cut out by calibration scores (Ch. 8): measured 1e-5; room for flips
}


def relative_tolerance(tol: str | float | Sequence[str | float]) -> float:
    """The relative tolerance of a class name (a key of :data:`TOLERANCES`), a number, or the largest of several
    (all chapters)."""
    if isinstance(tol, (list, tuple)):
        if not tol:
            raise ValueError("`tol` must name at least one tolerance class")
        return max(relative_tolerance(t) for t in tol)
    if isinstance(tol, str):
        if tol not in TOLERANCES:
            raise ValueError(f"`tol` must be one of {sorted(TOLERANCES)} or a number in (0, 1); got {tol!r}")
        return TOLERANCES[tol]
    if isinstance(tol, (int, float)) and 0 < tol < 1:
        return float(tol)
    raise ValueError(f"`tol` must be one of {sorted(TOLERANCES)} or a number in (0, 1); got {tol!r}")


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def provenance() -> dict[str, str]:
    """Where a record was made (all chapters): Python, torch and transformers versions, CPU, threads, vector ISA,
    date."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": _cpu_name(), "threads": str(torch.get_num_threads()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "date": datetime.date.today().isoformat()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class _Record:
    """A record file being written: provenance and ``{key: {value, tol}}``, saved after every value."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {"provenance": provenance(), "values": {}}

    def add(self, key: str, value: float, tol: str) -> None:
        self.data["values"][key] = {"value": value, "tol": tol}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")


class Measured:
    """Record or check the rounding-sensitive values of one notebook (all chapters).

    ``notebook`` names the record ``<folder>/<notebook>.json``; ``folder`` defaults to ``expected/`` in the
    working directory (the notebook's own folder when Jupyter, nbval or ``jupyter execute`` runs it).
    """

    def __init__(self, notebook: str, folder: str | Path | None = None) -> None:
        if not isinstance(notebook, str) or not notebook or "/" in notebook:
            raise ValueError(f"`notebook` must be a file stem such as '04_sparsegpt'; got {notebook!r}")
        self.notebook = notebook
        self.path = Path(folder or Path.cwd() / "expected") / f"{notebook}.json"
        self.recording = _flag("PRUNING_LAB_RECORD")
        self.strict = _flag("PRUNING_LAB_STRICT")
        record_dir = os.environ.get("PRUNING_LAB_RECORD_DIR", "")
        self.spread = _Record(Path(record_dir) / f"{notebook}.json") if record_dir else None
        if self.recording:
            self.record = _Record(self.path)
        elif self.path.exists():
            self.record = json.loads(self.path.read_text())
        else:
            self.record = None

    def __call__(self, key: str, value: float, tol: str) -> float:
        """Record ``value`` under ``key`` with tolerance class ``tol``, or check it against the record; returns it."""
        relative_tolerance(tol)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"`value` of {key!r} must be finite; got {value}")
        if self.spread is not None:  # a spread run: keep what this compute path gives, then check as usual
            self.spread.add(key, value, tol)
        if self.recording:
            self.record.add(key, value, tol)
            return value
        if self.record is None:  # Colab opens a notebook without its record: nothing to compare with
            if self.strict:
                self._fail(f"no record {self.path}: run `make execute` to make it")
            return value
        if key not in self.record["values"]:
            self._fail(f"{key!r} is not in {self.path}: run `make execute` to re-record")
            return value
        expected, cls = self.record["values"][key]["value"], self.record["values"][key]["tol"]
        rtol = relative_tolerance(cls)
        if abs(value - expected) > rtol * abs(expected):
            self._fail(f"{self.notebook}: {key} = {value:.6g}, but the record has {expected:.6g}; they differ by "
                       f"{abs(value / expected - 1):.2%}, more than the tolerance of class {cls!r} ({rtol:.2%})")
        return value

    def many(self, prefix: str, values: dict, tol: str) -> dict:
        """:meth:`__call__` for every item of ``values`` (keys ``f"{prefix} {k}"``); returns ``values``."""
        for k, v in values.items():
            self(f"{prefix} {k}", v, tol)
        return values

    def order(self, claim: str, values: Sequence[float], tol) -> None:
        """Assert ``values[0] < values[1] < ...`` with a margin: neighbours must stay in order even when both err
        by their tolerance in the worst direction, ``a (1 + r_a) < b (1 - r_b)``; otherwise the ordering is inside
        the measured spread and is no claim the book may make. ``tol``: one class (or number) for all values, or
        a list with one per value."""
        tols = list(tol) if isinstance(tol, (list, tuple)) else [tol] * len(values)
        if len(tols) != len(values) or len(values) < 2:
            raise ValueError("`values` needs at least two numbers and `tol` one class for all or one per value")
        rs = [relative_tolerance(t) for t in tols]
        for (a, ra), (b, rb) in zip(zip(values, rs), zip(values[1:], rs[1:])):
            if not a * (1 + ra) < b * (1 - rb):
                raise AssertionError(f"claim {claim!r}: {a:.6g} < {b:.6g} does not hold with the margin of the "
                                     f"tolerances ({ra:.1%}, {rb:.1%}): reword it as no difference")

    def ratio_above(self, claim: str, ratio: float, bound: float, tol, n_values: int = 2) -> None:
        """Assert that a ratio of tolerated values (a / b, or (a / b) / (c / d)) exceeds ``bound`` even when every
        value errs by its tolerance r in the worst direction: each value may move the ratio by a factor down to
        sqrt((1 - r) / (1 + r)), a symmetric bound on 1 - r (numerator) and 1 / (1 + r) (denominator).
        ``tol``: one class (or number) for ``n_values`` values, or a list with one per value."""
        tols = list(tol) if isinstance(tol, (list, tuple)) else [tol] * n_values
        rs = [relative_tolerance(t) for t in tols]
        worst = ratio * math.prod(math.sqrt((1 - r) / (1 + r)) for r in rs)
        if not worst > bound:
            raise AssertionError(f"claim {claim!r}: ratio {ratio:.4g} is not above {bound:g} with the margin of the "
                                 f"tolerances ({', '.join(f'{r:.1%}' for r in rs)}; worst case {worst:.4g})")

    def same(self, claim: str, a: float, b: float, tol) -> None:
        """Assert a claim of *no difference*: ``a`` and ``b`` differ by less than their tolerances allow,
        ``|a - b| <= r (|a| + |b|)``, so the book may not call either one better."""
        r = relative_tolerance(tol)
        if not abs(a - b) <= r * (abs(a) + abs(b)):
            raise AssertionError(f"claim {claim!r}: {a:.6g} and {b:.6g} differ by more than the tolerance "
                                 f"({r:.1%} each): the difference is resolved, say which is better")

    def _fail(self, message: str) -> None:
        if self.strict:
            raise AssertionError(message)
        print(f"note: {message} (library versions or the machine differ from the book's; not an error here)")
