"""Checkers for Chapter 2 (the Taylor expansion and Optimal Brain Damage).

Expected outputs come from :mod:`pruning_lab.saliency`, the implementation the chapter teaches, and, for the
saliency of one linear layer (Exercise 6), from :mod:`pruning_lab.gauss_newton`.
"""
from __future__ import annotations

import torch

from .. import gauss_newton as gn
from .. import saliency as ref
from ._core import Case, Checker, register, seeded_generator as _gen

# Worked example of the chapter: a weight vector at a minimum with a diagonal Hessian.
W_EX = torch.tensor([0.5, 0.02, 1.0, 0.001, 0.3], dtype=torch.float64)
H_EX = torch.tensor([1.0, 100.0, 1.0, 50.0, 1.0], dtype=torch.float64)
H_EX_STIFF = torch.tensor([1.0, 1.0, 1.0, 1.0, 1000.0], dtype=torch.float64)


def _spd(d: int, g: torch.Generator, *, coupling: float = 0.8) -> torch.Tensor:
    """A random symmetric positive-definite ``[d, d]`` matrix with strong off-diagonal terms."""
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    H = coupling * (A @ A.T) / d + torch.diag(torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1)
    return 0.5 * (H + H.T)


# ----------------------------------------------------------------------------- 1. OBD saliency
def _obd_cases() -> list[Case]:
    names = ("weight", "hessian_diag")
    cases = [
        Case("worked example: H = diag(1, 100, 1, 50, 1)", (W_EX, H_EX), expected=ref.obd_saliency(W_EX, H_EX), arg_names=names),
        Case("worked example: H = diag(1, 1, 1, 1, 1000)", (W_EX, H_EX_STIFF),
             expected=ref.obd_saliency(W_EX, H_EX_STIFF), arg_names=names),
    ]
    for seed in (1, 2):
        g = _gen(seed)
        w = torch.randn(4, 6, generator=g, dtype=torch.float64)
        h = torch.rand(4, 6, generator=g, dtype=torch.float64) * 10
        cases.append(Case(f"random 4x6 layer (seed {seed})", (w, h), expected=ref.obd_saliency(w, h), arg_names=names))
    g = _gen(3)
    w = torch.randn(8, generator=g)
    h = torch.rand(8, generator=g) * 5
    cases.append(Case("random float32 vector (seed 3)", (w, h), expected=ref.obd_saliency(w, h), arg_names=names))
    return cases


def _obd_hint(case: Case, got) -> str | None:
    w, h = case.args
    if isinstance(got, torch.Tensor) and got.shape == w.shape and got.dtype == w.dtype:
        if torch.allclose(got, 0.5 * h * w.abs()):
            return "OBD squares the weight: 1/2 * H_ii * w_i**2, not |w_i|."
        if torch.allclose(got, 0.5 * w.square()) or torch.allclose(got, w.square()):
            return "the curvature H_ii is missing: each w_i**2 is weighted by its own H_ii."
        if torch.allclose(got, 0.5 * h.square() * w.square()):
            return "H_ii enters once, not squared."
    return None


register(Checker(
    name="ch02.obd_saliency", chapter=2, kind="function",
    summary="OBD saliency s_i = 1/2 H_ii w_i^2, elementwise",
    make_cases=_obd_cases, hint=_obd_hint,
))


# ----------------------------------------------------------------------------- 2. Taylor with a gradient
def _taylor_cases() -> list[Case]:
    names = ("weight", "grad", "hessian_diag")
    zero = torch.zeros_like(W_EX)
    g_early = torch.tensor([0.2, -0.5, 0.1, 0.3, -0.05], dtype=torch.float64)
    cases = [
        Case("worked example at a minimum (g = 0)", (W_EX, zero, H_EX),
             expected=ref.taylor_saliency(W_EX, zero, H_EX), arg_names=names),
        Case("worked example away from a minimum (g != 0)", (W_EX, g_early, H_EX),
             expected=ref.taylor_saliency(W_EX, g_early, H_EX), arg_names=names),
    ]
    for seed in (4, 5):
        g = _gen(seed)
        w = torch.randn(3, 5, generator=g, dtype=torch.float64)
        gr = torch.randn(3, 5, generator=g, dtype=torch.float64)
        h = torch.randn(3, 5, generator=g, dtype=torch.float64)  # any sign: the expansion holds anywhere
        cases.append(Case(f"random 3x5 layer, any-sign curvature (seed {seed})", (w, gr, h),
                          expected=ref.taylor_saliency(w, gr, h), arg_names=names))
    return cases


def _taylor_hint(case: Case, got) -> str | None:
    w, g, h = case.args
    if isinstance(got, torch.Tensor) and got.shape == w.shape and got.dtype == w.dtype:
        if torch.allclose(got, g * w + 0.5 * h * w.square()):
            return "zeroing w_i is the step dw_i = -w_i, so the gradient term is g_i * dw_i = -g_i * w_i (sign)."
        if torch.allclose(got, 0.5 * h * w.square()):
            return "you left out the gradient term -g_i * w_i; it vanishes only at a minimum."
        if torch.allclose(got, -g * w + h * w.square()):
            return "the curvature term is 1/2 * H_ii * w_i**2: the factor 1/2 is missing."
        if torch.allclose(got, -g * w):
            return "you kept only the first-order term; add the curvature term 1/2 * H_ii * w_i**2."
    return None


register(Checker(
    name="ch02.taylor_saliency", chapter=2, kind="function",
    summary="second-order Taylor dL_i = -g_i w_i + 1/2 H_ii w_i^2 for zeroing each weight",
    make_cases=_taylor_cases, hint=_taylor_hint,
))


# ----------------------------------------------------------------------------- 3. least damaging weight
def _least_cases() -> list[Case]:
    names = ("weight", "hessian")
    cases = [
        Case("worked example: H = diag(1, 100, 1, 50, 1)", (W_EX, torch.diag(H_EX)),
             expected=ref.least_damaging(ref.obd_saliency(W_EX, H_EX)), arg_names=names),
    ]
    # the smallest weight sits on a very stiff direction: magnitude picks it, OBD does not
    w = torch.tensor([0.5, 0.02, 1.0, 0.3], dtype=torch.float64)
    H = torch.diag(torch.tensor([1.0, 1000.0, 1.0, 1e-3], dtype=torch.float64))
    cases.append(Case("small weight on a stiff direction", (w, H),
                      expected=ref.least_damaging(ref.obd_saliency(w, H.diagonal())), arg_names=names))
    seed, found = 10, 0
    while found < 3:  # seeded random full Hessians where magnitude and OBD disagree
        g = _gen(seed)
        w = torch.randn(7, generator=g, dtype=torch.float64)
        H = _spd(7, g)
        s = ref.obd_saliency(w, H.diagonal())
        if ref.least_damaging(s) != ref.least_damaging(w.abs()) and ref.least_damaging(s) != 6:
            cases.append(Case(f"random 7 weights, full Hessian (seed {seed})", (w, H),
                              expected=ref.least_damaging(s), arg_names=names))
            found += 1
        seed += 1
    return cases


def _least_hint(case: Case, got) -> str | None:
    w, H = case.args
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, int):
        return "return a plain Python int, e.g. int(torch.argmin(s))."
    s = 0.5 * H.diagonal() * w.square()
    hints = []
    if got == int(torch.argmin(w.abs())):
        hints.append("that is the smallest |w_i|; OBD weighs each w_i**2 by its curvature H_ii.")
    if got == int(torch.argmin(0.5 * H.sum(dim=1) * w.square())):
        hints.append("use the diagonal H_ii (torch.diagonal(H)), not a row sum of H.")
    if got == int(torch.argmax(s)):
        hints.append("that is the MOST damaging weight: take the minimum saliency, not the maximum.")
    return " Or: ".join(hints) or None


register(Checker(
    name="ch02.least_damaging", chapter=2, kind="function",
    summary="index of the weight whose removal OBD predicts to hurt least, given w and the full H",
    make_cases=_least_cases, hint=_least_hint,
))


# ----------------------------------------------------------------------------- 4. quadratic prediction for a set
def _quad_cases() -> list[Case]:
    names = ("weight", "grad", "hessian", "prune")
    w2 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    H2 = torch.tensor([[2.0, 1.8], [1.8, 2.0]], dtype=torch.float64)
    both = torch.tensor([True, True])
    zero2 = torch.zeros(2, dtype=torch.float64)
    cases = [
        Case("two correlated weights, both pruned", (w2, zero2, H2, both),
             expected=float(ref.quadratic_delta(w2, zero2, H2, both)), arg_names=names),
        Case("worked example, prune w2 and w4", (W_EX, torch.zeros(5, dtype=torch.float64), torch.diag(H_EX),
                                                 torch.tensor([False, True, False, True, False])),
             expected=float(ref.quadratic_delta(W_EX, None, torch.diag(H_EX),
                                                torch.tensor([False, True, False, True, False]))),
             arg_names=names),
    ]
    for seed in (20, 21, 22):
        g = _gen(seed)
        w = torch.randn(6, generator=g, dtype=torch.float64)
        gr = torch.randn(6, generator=g, dtype=torch.float64) * 0.5
        H = _spd(6, g)
        p = torch.rand(6, generator=g) < 0.5
        p[seed % 6] = True
        p[(seed + 1) % 6] = False
        cases.append(Case(f"random 6 weights, gradient and full H (seed {seed})", (w, gr, H, p),
                          expected=float(ref.quadratic_delta(w, gr, H, p)), arg_names=names))
    return cases


def _quad_hint(case: Case, got) -> str | None:
    w, g, H, p = case.args
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)):
        return None
    dw = torch.where(p, -w, torch.zeros_like(w))
    close = lambda v: abs(got - float(v)) <= 1e-7 * max(1.0, abs(float(v)))  # noqa: E731
    if close(g @ dw + 0.5 * (H.diagonal() * dw.square()).sum()) and not close(case.expected):
        return "you kept only the diagonal H_ii; the cross terms H_ij dw_i dw_j matter for correlated weights."
    if close(-(g @ dw) + 0.5 * dw @ H @ dw):
        return "the step is dw = -w on the pruned set, so the gradient term is g . dw = -g_S . w_S (sign)."
    if close(g @ dw + dw @ H @ dw):
        return "the quadratic term is 1/2 dw^T H dw: the factor 1/2 is missing."
    w_all = -w
    if close(g @ w_all + 0.5 * w_all @ H @ w_all):
        return "only the pruned weights move: dw_i = -w_i where prune[i] is True and 0 elsewhere."
    return None


register(Checker(
    name="ch02.quadratic_delta", chapter=2, kind="function",
    summary="second-order prediction g.dw + 1/2 dw^T H dw for zeroing a set of weights",
    make_cases=_quad_cases, hint=_quad_hint,
))


# ----------------------------------------------------------------------------- 5. a number from the worked example
def _w5_cases() -> list[Case]:
    return [Case("worked example: cost of pruning w5 when H_55 = 1000",
                 expected=float(ref.obd_saliency(W_EX, H_EX_STIFF)[4]))]


register(Checker(
    name="ch02.w5_cost", chapter=2, kind="value",
    summary="OBD's predicted loss increase for pruning w5 = 0.3 when H = diag(1, 1, 1, 1, 1000)",
    make_cases=_w5_cases,
))


# ----------------------------------------------------------------------------- 6. OBD for one linear layer (derived)
# Worked example: two output rows, three inputs, n = 3 calibration examples (columns of X). X is square on
# purpose, so that norms over the wrong axis give numbers (not a shape error) and the hint can name the slip.
W_LAYER_EX = torch.tensor([[1.0, -0.5, 2.0], [0.1, 3.0, -1.0]], dtype=torch.float64)
X_LAYER_EX = torch.tensor([[1.0, 2.0, 0.0], [0.5, -0.5, 0.5], [3.0, 0.0, -1.0]], dtype=torch.float64)


def _layer_cases() -> list[Case]:
    names = ("weight", "X")
    cases = [Case("worked example: W [2, 3], X [3, 3] (d_in = 3 inputs, n = 3 examples)", (W_LAYER_EX, X_LAYER_EX),
                  expected=gn.linear_layer_obd_saliency(W_LAYER_EX, X_LAYER_EX), arg_names=names)]
    for seed, (d_out, d_in, n), dtype in [(30, (4, 6, 10), torch.float64), (31, (5, 3, 8), torch.float64),
                                          (32, (3, 7, 7), torch.float32), (33, (1, 5, 2), torch.float64)]:
        g = _gen(seed)
        w = torch.randn(d_out, d_in, generator=g, dtype=dtype)
        x = torch.randn(d_in, n, generator=g, dtype=dtype)
        x[seed % d_in] *= 10.0  # one outlier feature, as in a language model's activations
        cases.append(Case(f"random W [{d_out}, {d_in}], X [{d_in}, {n}], {str(dtype).replace('torch.', '')} "
                          f"(seed {seed})", (w, x), expected=gn.linear_layer_obd_saliency(w, x), arg_names=names))
    return cases


def _layer_hint(case: Case, got) -> str | None:
    w, x = case.args
    if not (isinstance(got, torch.Tensor) and got.shape == w.shape and got.dtype == w.dtype):
        return None
    rtol = 1e-4 if w.dtype == torch.float32 else 1e-7
    close = lambda a: torch.allclose(got, a.to(w.dtype), rtol=rtol, atol=1e-9)  # noqa: E731
    sq_rows, n = x.square().sum(dim=1), x.shape[1]  # (d_in,) ||X_j||^2: row j over the n examples
    if close(2 * w.square() * sq_rows):
        return "exactly twice the expected saliency: OBD's 1/2 and the 2 of the Hessian 2 X X^T cancel."
    if close(0.5 * w.square() * sq_rows):
        return ("exactly half the expected saliency: the Hessian of ||W X - W' X||^2 for one row is 2 X X^T, not "
                "X X^T (differentiate the square twice).")
    if close(w.square() * sq_rows / n):
        return (f"divided by n = {n}: the objective sums the squared error over the examples, it does not "
                "average it (a mean would not change the ranking, but it is not this objective's saliency).")
    if close(w.abs() * sq_rows.sqrt()):
        return ("that is Wanda's score |W_ij| ||X_j|| (Chapter 5), the SQUARE ROOT of the saliency: OBD predicts "
                "a loss change, quadratic in the weight.")
    if close(w.abs() * sq_rows):
        return "square the weight: the saliency is 1/2 H_jj W_ij^2, with W_ij^2, not |W_ij|."
    if x.shape[0] == x.shape[1] and close(w.square() * x.square().sum(dim=0)):
        return ("wrong axis: that is diag(X^T X), an n x n matrix, i.e. norms of the COLUMNS of X. The Hessian of "
                "row i is 2 X X^T, [d_in, d_in]: ||X_j||^2 sums row j of X (input j) over the n examples, axis 1.")
    if close(w.square()) or close(0.5 * w.square()):
        return "the curvature is missing: each W_ij^2 is weighted by [X X^T]_jj = ||X_j||^2."
    return None


register(Checker(
    name="ch02.layer_obd_saliency", chapter=2, kind="function",
    summary="OBD saliency [d_out, d_in] of every weight of one linear layer under ||W X - W' X||_F^2, X [d_in, n]",
    make_cases=_layer_cases, hint=_layer_hint, rtol=1e-5, atol=1e-8,
))
