"""Checkers for Chapter 3 (Optimal Brain Surgeon).

Expected outputs come from :mod:`pruning_lab.obs`, the implementation the chapter teaches. Indices are 0-based.
"""
from __future__ import annotations

import torch

from .. import obs as ref
from ._core import Case, Checker, register, seeded_generator as _gen

# Worked example 2 of the chapter: w = (1, 2, 3, 4, 5) and its inverse Hessian (positive definite).
W_EX = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
HINV_EX = torch.tensor([[4.0, 0.0, -2.0, 1.0, 0.0],
                        [0.0, 1.0, 1.0, 0.0, -1.0],
                        [-2.0, 1.0, 3.0, 0.0, 0.0],
                        [1.0, 0.0, 0.0, 2.0, -1.0],
                        [0.0, -1.0, 0.0, -1.0, 5.0]], dtype=torch.float64)


def _problem(d: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random weights and the inverse of a random positive-definite Hessian with strong couplings."""
    g = _gen(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    H = A @ A.T / d + torch.diag(torch.rand(d, generator=g, dtype=torch.float64) * 0.5 + 0.1)
    Hinv = torch.linalg.inv(0.5 * (H + H.T))
    w = torch.randn(d, generator=g, dtype=torch.float64)
    return w.to(dtype), (0.5 * (Hinv + Hinv.T)).to(dtype)


def _close(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
        and a.dtype == b.dtype and bool(torch.allclose(a, b, rtol=1e-6, atol=1e-9))


def _num(x) -> float | None:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return float(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return None


def _near(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-7 * max(1.0, abs(b))


# ----------------------------------------------------------------------------- 1. a pair by hand
PAIR = torch.tensor([True, True, False, False, False])


def _pair_cases() -> list[Case]:
    return [Case("worked example: OBS cost of removing w1 and w2 together",
                 expected=float(ref.obs_set_cost(W_EX, HINV_EX, PAIR)))]


def _pair_hint(case: Case, got) -> str | None:
    x = _num(got)
    w_S, P_SS = W_EX[:2], HINV_EX[:2, :2]
    H = torch.linalg.inv(HINV_EX)
    if _near(x, float(0.5 * w_S @ P_SS @ w_S)):
        return "you used the block [H^-1]_SS itself; the cost needs its INVERSE: 1/2 w_S^T ([H^-1]_SS)^-1 w_S."
    if _near(x, float(0.5 * w_S @ H[:2, :2] @ w_S)):
        return "that is the cost of zeroing w1 and w2 and leaving the other weights alone (1/2 w_S^T H_SS w_S)."
    if _near(x, float(ref.obs_set_cost(W_EX, HINV_EX, torch.tensor([False, False, False, True, True])))):
        return "that is the cost of removing w4 and w5 (the two largest), not w1 and w2."
    return None


register(Checker(
    name="ch03.pair_cost", chapter=3, kind="value",
    summary="OBS cost of removing w1 and w2 together in the worked example (w = 1..5, the given H^-1)",
    make_cases=_pair_cases, hint=_pair_hint,
))


# ----------------------------------------------------------------------------- 2. OBS saliency
def _saliency_cases() -> list[Case]:
    names = ("weight", "hessian_inv")
    cases = [Case("worked example", (W_EX, HINV_EX), expected=ref.obs_saliency(W_EX, HINV_EX), arg_names=names)]
    for seed in (1, 2):
        w, P = _problem(6, seed)
        cases.append(Case(f"random 6 weights, coupled H (seed {seed})", (w, P), expected=ref.obs_saliency(w, P),
                          arg_names=names))
    w, P = _problem(5, 3, torch.float32)
    cases.append(Case("random float32 (seed 3)", (w, P), expected=ref.obs_saliency(w, P), arg_names=names))
    return cases


def _saliency_hint(case: Case, got) -> str | None:
    w, P = case.args
    if not isinstance(got, torch.Tensor) or got.shape != w.shape or got.dtype != w.dtype:
        return None
    p = P.diagonal()
    if _close(got, 0.5 * w.square() * p):
        return "divide by [H^-1]_qq, do not multiply: L_q = w_q**2 / (2 [H^-1]_qq)."
    if _close(got, 0.5 * torch.linalg.inv(P).diagonal() * w.square()):
        return ("that is OBD's 1/2 H_qq w_q**2 (with H = the inverse of hessian_inv). OBS divides by [H^-1]_qq, "
                "which accounts for the other weights compensating.")
    if _close(got, w.abs() / (2 * p)):
        return "square the weight: w_q**2, not |w_q|."
    if _close(got, w.square() / (2 * P.sum(dim=1))):
        return "use the diagonal entry [H^-1]_qq (torch.diagonal), not a row sum."
    return None


register(Checker(
    name="ch03.obs_saliency", chapter=3, kind="function",
    summary="OBS saliency L_q = w_q^2 / (2 [H^-1]_qq) for every weight, given w and H^-1",
    make_cases=_saliency_cases, hint=_saliency_hint,
))


# ----------------------------------------------------------------------------- 3. OBS update vector
def _update_cases() -> list[Case]:
    names = ("weight", "hessian_inv", "q")
    cases = [Case("worked example, remove w5 (q = 4)", (W_EX, HINV_EX, 4), expected=ref.obs_update(W_EX, HINV_EX, 4),
                  arg_names=names),
             Case("worked example, remove w1 (q = 0)", (W_EX, HINV_EX, 0), expected=ref.obs_update(W_EX, HINV_EX, 0),
                  arg_names=names)]
    for seed, q in ((4, 2), (5, 5)):
        w, P = _problem(6, seed)
        cases.append(Case(f"random 6 weights, remove q = {q} (seed {seed})", (w, P, q),
                          expected=ref.obs_update(w, P, q), arg_names=names))
    return cases


def _update_hint(case: Case, got) -> str | None:
    w, P, q = case.args
    if not isinstance(got, torch.Tensor) or got.shape != w.shape or got.dtype != w.dtype:
        return None
    exp = case.expected
    if _close(got, w + exp):
        return "return the change dw, not the new weights w + dw."
    only = torch.zeros_like(w)
    only[q] = -w[q]
    if _close(got, only):
        return ("that only zeroes w_q. OBS also moves every other weight: dw = -(w_q / [H^-1]_qq) H^-1[:, q].")
    if _close(got, -w[q] * P[:, q]):
        return "divide by [H^-1]_qq: dw = -(w_q / [H^-1]_qq) H^-1[:, q] (then dw_q = -w_q)."
    H = torch.linalg.inv(P)
    if _close(got, -(w[q] / H[q, q]) * H[:, q]):
        return "use the INVERSE Hessian's column H^-1[:, q] (the argument hessian_inv), not a column of H."
    for off in (q - 1, q + 1):
        if 0 <= off < w.numel() and _close(got, -(w[off] / P[off, off]) * P[:, off]):
            return f"you removed weight {off} instead of q = {q}: indices are 0-based."
    return None


register(Checker(
    name="ch03.obs_update", chapter=3, kind="function",
    summary="OBS update vector dw = -(w_q / [H^-1]_qq) H^-1[:, q] for removing weight q (0-based)",
    make_cases=_update_cases, hint=_update_hint,
))


# ----------------------------------------------------------------------------- 4. inverse downdate
def _downdate_cases() -> list[Case]:
    names = ("hessian_inv", "q")
    cases = [Case("worked example, remove w5 (q = 4)", (HINV_EX, 4), expected=ref.inverse_downdate(HINV_EX, 4),
                  arg_names=names)]
    for seed, q in ((6, 0), (7, 3)):
        _, P = _problem(5, seed)
        cases.append(Case(f"random 5x5 H^-1, remove q = {q} (seed {seed})", (P, q),
                          expected=ref.inverse_downdate(P, q), arg_names=names))
    return cases


def _downdate_hint(case: Case, got) -> str | None:
    P, q = case.args
    d = P.shape[0]
    if isinstance(got, torch.Tensor) and got.shape == (d - 1, d - 1):
        return ("return the full d x d matrix with row and column q set to zero, so that the indices of the "
                "other weights do not shift.")
    if not isinstance(got, torch.Tensor) or got.shape != P.shape or got.dtype != P.dtype:
        return None
    def zero_rc(M: torch.Tensor) -> torch.Tensor:
        M = M.clone()
        M[q, :] = 0
        M[:, q] = 0
        return M

    if _close(got, zero_rc(P)):
        return ("zeroing row and column q is not enough: every other entry changes too, "
                "P - P[:, q] P[q, :] / P[q, q]. Skipping this gives the wrong answer (-1.5, 3, 3, 0, 0) of the "
                "chapter's worked example.")
    outer = torch.outer(P[:, q], P[q, :])
    if _close(got, P - outer) or _close(got, zero_rc(P - outer)):
        return "divide the outer product by the pivot P[q, q]."
    if _close(got, P + outer / P[q, q]) or _close(got, zero_rc(P + outer / P[q, q])):
        return "subtract the outer product: P - P[:, q] P[q, :] / P[q, q] (sign)."
    keep = [i for i in range(d) if i != q]
    inv_sub = torch.zeros_like(P)
    inv_sub[torch.tensor(keep)[:, None], torch.tensor(keep)] = torch.linalg.inv(P[keep][:, keep])
    if _close(got, inv_sub):
        return ("you inverted the submatrix of H^-1. What is needed is the inverse of the submatrix of H, "
                "which is P - P[:, q] P[q, :] / P[q, q] restricted to the other rows and columns.")
    return None


register(Checker(
    name="ch03.inverse_downdate", chapter=3, kind="function",
    summary="downdate H^-1 after removing weight q: P - P[:, q] P[q, :] / P[q, q], with row and column q zeroed",
    make_cases=_downdate_cases, hint=_downdate_hint,
))


# ----------------------------------------------------------------------------- 5. sequential OBS in a given order
def _sequential_cases() -> list[Case]:
    names = ("weight", "hessian_inv", "order")
    cases = [
        Case("worked example: remove w5, then w4 (order [4, 3])", (W_EX, HINV_EX, [4, 3]),
             expected=ref.sequential_obs(W_EX, HINV_EX, order=[4, 3]).weight, arg_names=names),
        Case("worked example: remove w1, then w2 (order [0, 1])", (W_EX, HINV_EX, [0, 1]),
             expected=ref.sequential_obs(W_EX, HINV_EX, order=[0, 1]).weight, arg_names=names),
    ]
    for seed, order in ((8, [5, 1, 3]), (9, [0, 4, 2, 6])):
        w, P = _problem(7, seed)
        cases.append(Case(f"random 7 weights, order {order} (seed {seed})", (w, P, order),
                          expected=ref.sequential_obs(w, P, order=order).weight, arg_names=names))
    return cases


def _sequential_hint(case: Case, got) -> str | None:
    w, P, order = case.args
    if not isinstance(got, torch.Tensor) or got.shape != w.shape or got.dtype != w.dtype:
        return None
    if _close(got, ref.sequential_obs(w, P, order=order, downdate=False).weight):
        return ("you did not downdate H^-1 after each removal. Once w_q is gone, the next step needs the inverse "
                "Hessian of the REMAINING weights: P <- P - P[:, q] P[q, :] / P[q, q].")
    no_dd = w.clone()
    for q in order:  # no downdate, and the removed weights are not held at zero
        no_dd = no_dd - (no_dd[q] / P[q, q]) * P[:, q]
    if _close(got, no_dd):
        return ("you did not downdate H^-1 after each removal, so later steps move weights that were already "
                "removed away from zero. Downdate: P <- P - P[:, q] P[q, :] / P[q, q].")
    zeroed = w.clone()
    zeroed[order] = 0
    if _close(got, zeroed):
        return "you only zeroed the weights; OBS also applies the update dw to the remaining ones at each step."
    stale = w.clone()
    Pc = P.clone()
    for q in order:  # updates computed from the ORIGINAL weights
        stale = stale - (w[q] / Pc[q, q]) * Pc[:, q]
        Pc = ref.inverse_downdate(Pc, q)
    stale[order] = 0
    if _close(got, stale):
        return "use the CURRENT value of w_q (after the earlier updates) in each step, not its original value."
    return None


register(Checker(
    name="ch03.sequential_obs", chapter=3, kind="function",
    summary="sequential OBS: remove the weights in `order` one at a time, with the update and the H^-1 downdate",
    make_cases=_sequential_cases, hint=_sequential_hint,
))


# ----------------------------------------------------------------------------- 6. exact cost of a set
def _set_cases() -> list[Case]:
    names = ("weight", "hessian_inv", "prune")
    cases = []
    for label, mask in (("worked example, remove {w4, w5}", [False, False, False, True, True]),
                        ("worked example, remove {w1, w3}", [True, False, True, False, False])):
        p = torch.tensor(mask)
        cases.append(Case(label, (W_EX, HINV_EX, p), expected=float(ref.obs_set_cost(W_EX, HINV_EX, p)),
                          arg_names=names))
    for seed in (10, 11):
        w, P = _problem(6, seed)
        p = torch.rand(6, generator=_gen(seed)) < 0.5
        p[seed % 6] = True
        p[(seed + 1) % 6] = True
        p[(seed + 3) % 6] = False
        cases.append(Case(f"random 6 weights, {int(p.sum())} removed (seed {seed})", (w, P, p),
                          expected=float(ref.obs_set_cost(w, P, p)), arg_names=names))
    return cases


def _set_hint(case: Case, got) -> str | None:
    w, P, p = case.args
    x = _num(got)
    if x is None:
        return None
    S = torch.nonzero(p).reshape(-1)
    w_S, P_SS = w[S], P[S][:, S]
    if _near(x, float((w_S.square() / (2 * P_SS.diagonal())).sum())):
        return ("you added the single-weight saliencies. Removing one weight changes the cost of the others: "
                "use 1/2 w_S^T ([H^-1]_SS)^-1 w_S, with the inverse of the whole block.")
    if _near(x, float(0.5 * w_S @ P_SS @ w_S)):
        return "invert the block: 1/2 w_S^T ([H^-1]_SS)^-1 w_S, not 1/2 w_S^T [H^-1]_SS w_S."
    H = torch.linalg.inv(P)
    if _near(x, float(0.5 * w_S @ H[S][:, S] @ w_S)):
        return ("that is the cost of zeroing the set without compensation (1/2 w_S^T H_SS w_S). With the OBS "
                "update the cost is 1/2 w_S^T ([H^-1]_SS)^-1 w_S.")
    return None


register(Checker(
    name="ch03.set_cost", chapter=3, kind="function",
    summary="exact OBS cost of removing a set S: 1/2 w_S^T ([H^-1]_SS)^-1 w_S",
    make_cases=_set_cases, hint=_set_hint,
))


# ----------------------------------------------------------------------------- 7. derive: what compensation saves
RHO = 0.9  # the coupling of the two weights in the exercise


def _ratio_cases() -> list[Case]:
    # for H = [[1, rho], [rho, 1]]: 1 / [H^-1]_11 = H_11 - H_12^2 / H_22 = 1 - rho^2, and OBD's curvature is H_11 = 1
    H = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 1.0], dtype=torch.float64)
    ratio = float(ref.obs_saliency(w, torch.linalg.inv(H))[0] / (0.5 * H[0, 0] * w[0] ** 2))
    return [Case(f"two weights, H = [[1, rho], [rho, 1]] with rho = {RHO:g}: OBS saliency of w1 / OBD saliency",
                 expected=ratio)]


def _ratio_hint(case: Case, got) -> str | None:
    x = _num(got)
    if x is None:
        return None
    if _near(x, 1 - RHO):
        return "rho enters squared: 1 / [H^-1]_11 = H_11 - H_12**2 / H_22 = 1 - rho**2."
    if _near(x, RHO**2):
        return ("rho**2 is the part of the curvature that compensation removes; the ratio is what is left, "
                "1 - rho**2.")
    if _near(x, 1 / (1 - RHO**2)):
        return "that is OBD over OBS, the inverse: OBS's saliency is never larger than OBD's, so the ratio is <= 1."
    if _near(x, 1.0):
        return "the two saliencies are equal only when the weights are uncoupled (rho = 0)."
    return None


register(Checker(
    name="ch03.saliency_ratio", chapter=3, kind="value",
    summary=f"derived: OBS saliency / OBD saliency of w1 for two weights with H = [[1, rho], [rho, 1]], rho = {RHO:g}",
    make_cases=_ratio_cases, hint=_ratio_hint,
))
