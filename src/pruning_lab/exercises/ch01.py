"""Checkers for Chapter 1 (magnitude vs random pruning, and what sparsity costs to store).

Expected outputs come from :mod:`pruning_lab.structured` (masks) and :mod:`pruning_lab.storage` (bytes), the
implementations the chapter teaches; the expected share of the norm that a random mask removes is the formula
sqrt(s) derived in the solution of Exercise 6 (Section 1.1).
"""
from __future__ import annotations

import math

import torch

from .. import storage as st
from .. import structured as ref
from ._core import Case, Checker, as_float, register, seeded_generator as _gen

# Worked example of the chapter: small weights with ties at the threshold and large negative weights.
W_EX = torch.tensor([[0.5, -0.1, 0.1, 2.0], [-0.1, 0.3, 0.1, -3.0]])
PP1_SHAPE = (1024, 1024)  # seed 001, practice problem 1: a 1024 x 1024 fp16 matrix at 80% sparsity
PP1_NNZ = 209_715


def _as_bool_mask(got, shape) -> torch.Tensor | None:
    """``got`` if it is a boolean tensor of ``shape``, else None (hints only look at well-formed answers)."""
    if isinstance(got, torch.Tensor) and got.dtype == torch.bool and tuple(got.shape) == tuple(shape):
        return got
    return None


# ----------------------------------------------------------------------------- 1. magnitude mask with exactly k zeros
def _magnitude_cases() -> list[Case]:
    names = ("weight", "k")
    cases = [
        Case("worked example: four weights tie at |w| = 0.1, k = 3", (W_EX, 3),
             expected=ref.magnitude_mask(W_EX, k=3), arg_names=names),
        Case("large negative weights, k = 1", (torch.tensor([-5.0, -4.0, 0.1, 3.0]), 1),
             expected=ref.magnitude_mask(torch.tensor([-5.0, -4.0, 0.1, 3.0]), k=1), arg_names=names),
    ]
    g = _gen(1)
    q = torch.randint(-4, 5, (6, 10), generator=g).float() / 8  # 4-bit-like weights: many exact ties
    cases.append(Case("4-bit-like weights with many exact ties (seed 1), k = 27", (q, 27),
                      expected=ref.magnitude_mask(q, k=27), arg_names=names))
    w0 = torch.randn(3, 4, generator=_gen(2))
    cases.append(Case("k = 0 keeps everything", (w0, 0), expected=ref.magnitude_mask(w0, k=0), arg_names=names))
    w = torch.randn(5, 7, generator=_gen(3), dtype=torch.float64)
    cases.append(Case("random 5x7 float64 layer (seed 3), k = 34 of 35", (w, 34),
                      expected=ref.magnitude_mask(w, k=34), arg_names=names))
    w = torch.randn(12, generator=_gen(4))
    cases.append(Case("random vector (seed 4), k = 5", (w, 5), expected=ref.magnitude_mask(w, k=5), arg_names=names))
    return cases


def _magnitude_hint(case: Case, got) -> str | None:
    w, k = case.args
    if isinstance(got, torch.Tensor) and got.shape == w.shape and got.dtype != torch.bool:
        return "return the boolean keep-mask (True = kept), not the pruned weights or the scores."
    got = _as_bool_mask(got, w.shape)
    if got is None:
        return None
    removed = int((~got).sum())
    if torch.equal(got, ~case.expected):
        return "your mask is exactly inverted: True must mean KEPT, False removed."
    if k > 0 and torch.equal(got, ref.magnitude_mask(w.abs().max() - w.abs(), k=k)):
        return "you removed the k LARGEST |w|; magnitude pruning removes the smallest."
    if k > 0 and torch.equal(got, ref.magnitude_mask(w - w.min(), k=k)):
        return "rank by |w|, not by w: a large negative weight matters as much as a large positive one."
    if removed > k:
        return (f"you removed {removed} weights, not k = {k}: a threshold test like |w| <= t also removes every "
                "weight tied with the k-th smallest. Remove exactly k, breaking ties by index.")
    if removed < k:
        return (f"you removed {removed} weights, not k = {k}: a strict test |w| < t spares the weights equal to "
                "the threshold. Remove exactly k, breaking ties by index.")
    return ("exactly k removed, but not the expected ones: among equal |w| remove the LOWER flattened index "
            "first (torch.sort(..., stable=True) keeps equal values in index order).")


register(Checker(
    name="ch01.magnitude_mask", chapter=1, kind="function",
    summary="keep-mask removing exactly k weights of smallest |w| (ties: lower flattened index first)",
    make_cases=_magnitude_cases, hint=_magnitude_hint,
))


# ----------------------------------------------------------------------------- 2. random mask
def _random_expected(shape, k, seed):
    return ref.random_mask(shape, k=k, generator=_gen(seed))


def _random_cases() -> list[Case]:
    names = ("shape", "k", "seed")
    specs = [((4, 6), 10, 0), ((10,), 3, 1), ((8, 16), 100, 2), ((3, 5), 0, 3), ((2, 3, 4), 23, 4)]
    return [Case(f"shape {shape}, k = {k}, seed {seed}", (shape, k, seed), expected=_random_expected(shape, k, seed),
                 arg_names=names) for shape, k, seed in specs]


def _random_hint(case: Case, got) -> str | None:
    shape, k, seed = case.args
    got = _as_bool_mask(got, shape)
    if got is None:
        return "return a boolean tensor of the given shape (True = kept)."
    removed = int((~got).sum())
    if torch.equal(got, ~case.expected):
        return "your mask is exactly inverted: True must mean KEPT, False removed."
    if removed != k:
        return (f"you removed {removed} weights, not k = {k}: a Bernoulli mask such as torch.rand(shape) < p removes "
                "k only on average. Rank the random scores and remove exactly the k lowest.")
    scores = torch.rand(shape, generator=_gen(seed), dtype=torch.float32)
    if k > 0 and torch.equal(got, ref.magnitude_mask(1 - scores, k=k)):
        return "you removed the k HIGHEST scores; the recipe removes the k lowest."
    return ("exactly k removed, but not the recipe's set: g = torch.Generator().manual_seed(seed), then ONE call "
            "scores = torch.rand(shape, generator=g), then remove the k lowest scores (a randperm mask is "
            "uniform too, but this exercise fixes the recipe so that it can be checked).")


register(Checker(
    name="ch01.random_mask", chapter=1, kind="function",
    summary="keep-mask removing exactly k entries: the k lowest of torch.rand(shape) from a seeded generator",
    make_cases=_random_cases, hint=_random_hint,
))


# ----------------------------------------------------------------------------- 3. COO bytes
def _bytes_cases(fn, specs) -> list[Case]:
    names = ("shape", "nnz", "value_bytes", "index_bytes")
    return [Case(label, (shape, nnz, v, i), expected=fn(shape, nnz, v, i), arg_names=names)
            for label, shape, nnz, v, i in specs]


_COO_SPECS = [
    ("practice problem 1: 1024x1024 fp16, 80% sparse, int32 indices", PP1_SHAPE, PP1_NNZ, 2, 4),
    ("576x1536 fp32 at 50%, int16 indices", (576, 1536), 442_368, 4, 2),
    ("8x4096 bf16, 1,000 non-zeros, int64 indices", (8, 4096), 1000, 2, 8),
    ("empty: no non-zeros", (64, 64), 0, 2, 4),
    ("a 3-D tensor 4x8x16, int8 values, int16 indices", (4, 8, 16), 100, 1, 2),
]


def _coo_hint(case: Case, got) -> str | None:
    shape, nnz, v, i = case.args
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return None
    numel = math.prod(shape)
    if got == nnz * (i + v) and len(shape) >= 2:
        return "COO stores one index per dimension: a matrix entry needs its row AND its column index."
    if len(shape) != 2 and got == nnz * (2 * i + v):
        return "one index per dimension: len(shape) indices per non-zero, not always two."
    if got == nnz * v:
        return "you counted only the values; COO also stores the coordinates of every non-zero."
    if got == 8 * case.expected:
        return "that is bits; the answer is in bytes."
    if got == numel * (len(shape) * i + v):
        return "only the non-zeros are stored: use nnz, not the number of entries."
    return None


register(Checker(
    name="ch01.coo_bytes", chapter=1, kind="function",
    summary="bytes of the COO format: nnz * (ndim * index_bytes + value_bytes)",
    make_cases=lambda: _bytes_cases(lambda s, n, v, i: st.coo_bytes(s, n, v, i), _COO_SPECS), hint=_coo_hint,
))


# ----------------------------------------------------------------------------- 4. CSR bytes
_CSR_SPECS = [
    ("practice problem 1: 1024x1024 fp16, 80% sparse, int32 indices", PP1_SHAPE, PP1_NNZ, 2, 4),
    ("576x1536 fp32 at 50%, int32 indices", (576, 1536), 442_368, 4, 4),
    ("tall 4096x8 bf16, 1,000 non-zeros, int64 indices", (4096, 8), 1000, 2, 8),
    ("empty: no non-zeros (the pointers remain)", (64, 64), 0, 2, 4),
    ("a single row 1x4096, int8 values, int16 indices", (1, 4096), 300, 1, 2),
]


def _csr_hint(case: Case, got) -> str | None:
    (rows, cols), nnz, v, i = case.args
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return None
    base = nnz * (i + v)
    if got == base:
        return "add the row pointers: rows + 1 indices that say where each row's entries start and end."
    if got == base + rows * i:
        return "there are rows + 1 pointers, not rows: the last one marks the end of the last row."
    if got == base + (cols + 1) * i and rows != cols:
        return "the pointers are per row (shape[0] + 1 of them), not per column."
    if got == nnz * (2 * i + v) + (rows + 1) * i or got == nnz * (2 * i + v):
        return "CSR stores only the column index of each non-zero; its row is implied by the row pointers."
    if got == 8 * case.expected:
        return "that is bits; the answer is in bytes."
    return None


register(Checker(
    name="ch01.csr_bytes", chapter=1, kind="function",
    summary="bytes of the CSR format: nnz * (index_bytes + value_bytes) + (rows + 1) * index_bytes",
    make_cases=lambda: _bytes_cases(lambda s, n, v, i: st.csr_bytes(s, n, v, i), _CSR_SPECS), hint=_csr_hint,
))


# ----------------------------------------------------------------------------- 5. break-even sparsity
_BREAK_EVEN_SPECS = [
    ("practice problem 1: COO, 1024x1024 fp16, int32 indices", "coo", PP1_SHAPE, 2, 4),
    ("CSR, 1024x1024 fp16, int32 indices", "csr", PP1_SHAPE, 2, 4),
    ("COO, 576x1536 fp32, int16 indices", "coo", (576, 1536), 4, 2),
    ("CSR, 576x1536 fp32, int16 indices", "csr", (576, 1536), 4, 2),
    ("CSR, tall 4096x16 bf16, int32 indices", "csr", (4096, 16), 2, 4),
    ("COO, 64x64 int8, int64 indices", "coo", (64, 64), 1, 8),
]


def _break_even_cases() -> list[Case]:
    names = ("fmt", "shape", "value_bytes", "index_bytes")
    return [Case(label, (fmt, shape, v, i), expected=float(st.break_even_sparsity(fmt, shape, v, i)), arg_names=names)
            for label, fmt, shape, v, i in _BREAK_EVEN_SPECS]


def _break_even_hint(case: Case, got) -> str | None:
    fmt, (rows, cols), v, i = case.args
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return None
    close = lambda x: math.isclose(got, x, rel_tol=1e-9, abs_tol=1e-12)  # noqa: E731
    if close(1 - case.expected):
        return "that is the density (the fraction of NON-zeros) at the crossing; the sparsity is 1 - density."
    if close(100 * case.expected):
        return "give a fraction in [0, 1], not a percentage."
    if fmt == "coo" and close(i / (i + v)):
        return "COO stores two indices per non-zero (row and column): solve nnz * (2i + v) = numel * v."
    if fmt == "csr" and close(i / (i + v)):
        return "you left out the rows + 1 row pointers of CSR; they are paid even when nnz = 0."
    if fmt == "csr" and close(2 * i / (2 * i + v)):
        return "CSR stores one index per non-zero (the column), plus rows + 1 row pointers: that is not COO."
    if fmt == "csr" and close(1 - (rows * cols * v - rows * i) / (rows * cols * (i + v))):
        return "there are rows + 1 row pointers, not rows."
    return None


register(Checker(
    name="ch01.break_even_sparsity", chapter=1, kind="function",
    summary="sparsity at which COO or CSR takes as many bytes as dense (above it, the format is smaller)",
    make_cases=_break_even_cases, hint=_break_even_hint, rtol=1e-9, atol=1e-12,
))


# ----------------------------------------------------------------------------- 6. norm removed by a random mask
# Section 1.1: a uniformly random mask of sparsity s removes each weight with probability s, so
# E||W - W⊙M||_F^2 = s ||W||_F^2 and the expected share of the norm removed is sqrt(s) (the measurement
# there: about sqrt(0.5) at 50%).
_NORM_SPECS = [
    ("a quarter removed: s = 0.25", 0.25),
    ("Section 1.1's measurement: s = 0.5", 0.5),
    ("light pruning: s = 0.1", 0.1),
    ("s = 0.8", 0.8),
    ("heavy pruning: s = 0.99", 0.99),
    ("nothing removed: s = 0", 0.0),
    ("everything removed: s = 1", 1.0),
]


def _norm_removed_cases() -> list[Case]:
    return [Case(label, (s,), expected=math.sqrt(s), arg_names=("s",)) for label, s in _NORM_SPECS]


def _norm_removed_hint(case: Case, got) -> str | None:
    (s,) = case.args
    got = as_float(got)
    if got is None:
        return "return one number (a float), the expected share of the norm removed."
    close = lambda x: math.isclose(got, x, rel_tol=1e-9, abs_tol=1e-12)  # noqa: E731
    if close(s):
        return ("that is the share of the SQUARED norm, E||W - W⊙M||^2 / ||W||^2 = s; you forgot the square root "
                "(the relative error of Section 1.1 is a ratio of norms, not of squared norms).")
    if close(math.sqrt(1 - s)):
        return ("that is the share of the norm KEPT, sqrt(||W⊙M||^2 / ||W||^2); the exercise asks for the share "
                "removed, ||W - W⊙M|| / ||W||.")
    if close(1 - s):
        return "1 - s is the fraction of weights kept (the density); the removed weights are the fraction s."
    if close(s**2):
        return ("s**2 squares the probability, not the weights: (1 - m_ij)^2 = 1 - m_ij for a 0/1 mask, so each "
                "squared weight is removed with probability s. Then take the square root.")
    if close(100 * math.sqrt(s)):
        return "give a fraction in [0, 1], not a percentage."
    if abs(got - math.sqrt(s)) < 0.03:
        return ("close to sqrt(s) but not equal: a sampled estimate? The exercise asks for the exact expectation; "
                "derive it from E[m_ij] = 1 - s.")
    if 0 <= got < math.sqrt(s):
        return ("less than sqrt(s): that is what a mask that prefers SMALL weights removes (magnitude pruning: the "
                "smallest weights carry less than their share of the norm). A random mask does not look at the "
                "weights: every weight, large or small, is removed with probability s.")
    return None


register(Checker(
    name="ch01.random_norm_removed", chapter=1, kind="function",
    summary="expected share of ||W||_F a uniformly random mask of sparsity s removes: sqrt(s)",
    make_cases=_norm_removed_cases, hint=_norm_removed_hint, rtol=1e-9, atol=1e-12,
))
