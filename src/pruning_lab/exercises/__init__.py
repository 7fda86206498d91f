"""Self-grading exercises: ``check(name, answer)`` prints a verdict and returns True on a pass.

>>> from pruning_lab.exercises import check, available
>>> available(chapter=2)            # every checker of Chapter 2
>>> check("ch02.obd_saliency", my_obd_saliency)

Each checker runs the answer on the chapter's worked examples and on seeded random cases and compares it with
the reference implementation in ``pruning_lab`` (see :mod:`pruning_lab.exercises._core`).
"""
from ._core import ExerciseFailed, Verdict, available, check, describe, grade

__all__ = ["check", "available", "describe", "grade", "ExerciseFailed", "Verdict"]
