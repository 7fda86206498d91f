"""Checkers for Chapter 4 (SparseGPT).

Expected outputs come from :mod:`pruning_lab.sparsegpt` (the fast algorithm) and :mod:`pruning_lab.layerwise_obs`
(its step-by-step teaching references), the implementations the chapter teaches.
"""
from __future__ import annotations

import torch

from .. import layerwise_obs as ref
from ..sparsegpt import hessian_from_inputs, inverse_hessian_factor, sparsegpt_prune
from ._core import Case, Checker, register

# Worked examples of the chapter.
# Inputs of a 3-input layer on 4 tokens (one row per token).
X_EX = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
# One row and its inverse Hessian (the corrected worked example of Chapter 3; seed 001, example 2).
W_ROW = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
HINV_EX = torch.tensor([[4, 0, -2, 1, 0], [0, 1, 1, 0, -1], [-2, 1, 3, 0, 0], [1, 0, 0, 2, -1], [0, -1, 0, -1, 5]],
                       dtype=torch.float64)
# A block of 2 rows x 4 columns and the diagonal of U for its columns (Section 4.5 of the chapter).
W_BLOCK_EX = torch.tensor([[0.9, -0.3, 0.5, 0.1], [0.3, 1.5, -0.7, 0.2]], dtype=torch.float64)
U_DIAG_EX = torch.tensor([0.5, 2.0, 1.0, 0.25], dtype=torch.float64)


def _close(a, b, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
        and a.dtype == b.dtype and torch.allclose(a, b, rtol=rtol, atol=atol)


def _safe(hint):
    """A hint must never break the verdict: any exception inside it means 'no hint'."""
    def wrapped(case, got):
        try:
            return hint(case, got)
        except Exception:
            return None
    return wrapped


def _spd_inverse(d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """``H^-1`` of a random correlated layer with ``d`` inputs (dampened as SparseGPT does)."""
    _, X = ref.random_layer(1, d, 4 * d, seed=seed)
    Hd, _ = ref.dampen_hessian(hessian_from_inputs(X), 0.01)
    return torch.linalg.inv(Hd).to(dtype)


# ----------------------------------------------------------------------------- 1. the Hessian from inputs
def _hessian_cases() -> list[Case]:
    names = ("x",)
    cases = [Case("worked example: 4 tokens, 3 inputs", (X_EX,), expected=hessian_from_inputs(X_EX), arg_names=names)]
    for seed, (n, d) in zip((1, 2), ((10, 4), (7, 7))):
        _, x = ref.random_layer(1, d, n, seed=seed)
        cases.append(Case(f"random {n} tokens x {d} inputs (seed {seed})", (x,), expected=hessian_from_inputs(x),
                          arg_names=names))
    _, x = ref.random_layer(1, 5, 12, seed=3, dtype=torch.float32)
    cases.append(Case("random float32, 12 tokens x 5 inputs (seed 3)", (x,), expected=hessian_from_inputs(x),
                      arg_names=names))
    return cases


def _hessian_hint(case: Case, got) -> str | None:
    (x,) = case.args
    n = x.shape[0]
    if isinstance(got, torch.Tensor) and got.shape == (n, n) and got.shape != (x.shape[1], x.shape[1]):
        return "x has one row per token, so X = x.T and X X^T is x.T @ x, [d_in, d_in]; x @ x.T is [tokens, tokens]."
    if _close(got, x.T @ x):
        return "that is the sum X X^T = x.T @ x; the Hessian is H = (2/n) X X^T: " \
               "times 2, divided by the number of tokens n."
    if _close(got, 2 * x.T @ x):
        return "H here is the MEAN over the n tokens: divide 2 * x.T @ x by n = x.shape[0]."
    if _close(got, x.T @ x / n):
        return "the factor 2 is missing: differentiating ||w X||^2 twice with respect to w gives 2 X X^T."
    xc = x - x.mean(dim=0, keepdim=True)
    if _close(got, 2 / n * xc.T @ xc) or _close(got, 2 / (n - 1) * xc.T @ xc):
        return "do not subtract the mean: the layer sees the raw inputs, so H = (2/n) X X^T is not a covariance."
    if _close(got, 2 / (n - 1) * x.T @ x):
        return "divide by n, the number of tokens, not n - 1."
    return None


register(Checker(
    name="ch04.hessian_from_inputs", chapter=4, kind="function",
    summary="the layer-wise Hessian H = (2/n) X X^T (X = x.T) from inputs x of shape [n tokens, d_in]",
    make_cases=_hessian_cases, hint=_safe(_hessian_hint), rtol=1e-5,
))


# ----------------------------------------------------------------------------- 2. one row of OBS, fixed order
def _no_downdate(w, G, prune):
    row = w.clone()
    for j in range(w.shape[0]):
        if prune[j]:
            row = row - row[j] / G[j, j] * G[:, j]
            row[j] = 0.0
    return row


def _downdate_only_pruned(w, G, prune):
    row, G = w.clone(), G.clone()
    for j in range(w.shape[0]):
        if prune[j]:
            row = row - row[j] / G[j, j] * G[:, j]
            row[j] = 0.0
            G = G - torch.outer(G[:, j], G[j, :]) / G[j, j]
    return row


def _obs_row_cases() -> list[Case]:
    names = ("w", "hessian_inv", "prune")
    mk = lambda *idx: torch.tensor([i in idx for i in range(5)])  # noqa: E731
    cases = []
    for idx, label in (((0, 1), "worked example: prune w1, w2"), ((3, 4), "worked example: prune w4, w5"),
                       ((1, 3), "worked example: prune w2, w4")):
        p = mk(*idx)
        cases.append(Case(label, (W_ROW, HINV_EX, p), expected=ref.obs_row(W_ROW, HINV_EX, p), arg_names=names))
    for seed, d in ((4, 8), (5, 12)):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        G = _spd_inverse(d, seed)
        p = torch.rand(d, generator=g) < 0.5
        p[0], p[d - 2] = True, True  # the first column (full compensation) and one near the end
        cases.append(Case(f"random row of {d} weights (seed {seed})", (w, G, p), expected=ref.obs_row(w, G, p),
                          arg_names=names))
    return cases


def _obs_row_hint(case: Case, got) -> str | None:
    w, G, p = case.args
    if not isinstance(got, torch.Tensor) or got.shape != w.shape:
        return None
    if _close(got, w.masked_fill(p, 0.0)):
        return "you only zeroed the pruned weights: OBS also moves the later weights to compensate, " \
               "w <- w - (w_j / G_jj) G[:, j]."
    if _close(got, _no_downdate(w, G, p)):
        return "you used the same H^-1 for every column. After visiting column j, freeze it by downdating: " \
               "G <- G - G[:, j] G[j, :] / G_jj (this is the step the course notes skip)."
    if _close(got, _downdate_only_pruned(w, G, p)):
        return "that is Chapter 3's sequential OBS, where every weight not yet pruned may still move. In the fixed " \
               "order every VISITED column is frozen, pruned or kept: downdate G after EVERY column."
    bad = (got[p] != 0) if got.dtype != torch.bool else None
    if bad is not None and bad.any():
        return "pruned weights must be exactly 0 in your output (set w[j] = 0 after the update)."
    return None


register(Checker(
    name="ch04.obs_row", chapter=4, kind="function",
    summary="OBS on one row, columns left to right, given H^-1 and a prune mask (downdate after every column)",
    make_cases=_obs_row_cases, hint=_safe(_obs_row_hint),
))


# ----------------------------------------------------------------------------- 3. the Cholesky identity
def _factor_cases() -> list[Case]:
    names = ("hessian_inv",)
    cases = [Case("worked example: the 5x5 H^-1 of Sections 4.2-4.3", (HINV_EX,),
                  expected=ref.upper_factor_by_downdating(HINV_EX), arg_names=names)]
    H_ex = hessian_from_inputs(X_EX)
    G_ex = torch.linalg.inv(H_ex)
    cases.append(Case("worked example: H^-1 of the 3-input layer", (G_ex,),
                      expected=ref.upper_factor_by_downdating(G_ex), arg_names=names))
    for seed, d in ((6, 6), (7, 9)):
        G = _spd_inverse(d, seed)
        cases.append(Case(f"random {d}x{d} H^-1 (seed {seed})", (G,), expected=ref.upper_factor_by_downdating(G),
                          arg_names=names))
    G = _spd_inverse(5, 8, torch.float32)
    cases.append(Case("random float32 5x5 H^-1 (seed 8)", (G,), expected=ref.upper_factor_by_downdating(G),
                      arg_names=names))
    return cases


def _factor_hint(case: Case, got) -> str | None:
    (G,) = case.args
    if not isinstance(got, torch.Tensor) or got.shape != G.shape:
        return None
    U = case.expected
    seq = ref.downdated_inverses(G)
    d = G.shape[0]
    if _close(got, U.T, rtol=1e-5, atol=1e-5):
        return "that is the LOWER factor L = U^T; SparseGPT needs the upper one (rows), H^-1 = U^T U."
    unscaled = torch.stack([seq[j][j] for j in range(d)])
    if _close(got, unscaled, rtol=1e-5, atol=1e-5):
        return "each row of U is the row of the downdated inverse divided by the square root of its diagonal entry."
    if _close(got, torch.stack([seq[j][j] / seq[j][j, j] for j in range(d)]), rtol=1e-5, atol=1e-5):
        return "divide row j by sqrt(G_jj), not by G_jj."
    if _close(got, torch.triu(G / G.diagonal().sqrt().unsqueeze(1)), rtol=1e-5, atol=1e-5):
        return "you scaled the rows of H^-1 itself; each row must come from the inverse downdated by all earlier " \
               "columns."
    try:
        if _close(got, torch.linalg.cholesky(torch.linalg.inv(G), upper=True), rtol=1e-5, atol=1e-5):
            return "that is the Cholesky factor of H; factor H^-1 (the argument) instead."
    except Exception:
        pass
    return None


register(Checker(
    name="ch04.upper_factor", chapter=4, kind="function",
    summary="the upper Cholesky factor U of H^-1 (H^-1 = U^T U), row j = downdated row / sqrt(its diagonal)",
    make_cases=_factor_cases, hint=_safe(_factor_hint), rtol=1e-5, atol=1e-5,
))


# ----------------------------------------------------------------------------- 4. block mask selection
def _block_cases() -> list[Case]:
    names = ("w_block", "u_diag", "sparsity")
    cases = [Case("worked example: 2x4 block at 50%", (W_BLOCK_EX, U_DIAG_EX, 0.5),
                  expected=ref.select_block_mask(W_BLOCK_EX, U_DIAG_EX, 0.5), arg_names=names)]
    for seed, (r, c, s) in zip((9, 10, 11), ((4, 8, 0.5), (6, 16, 0.3), (3, 5, 0.7))):
        W, X = ref.random_layer(r, c, 8 * c, seed=seed, outliers=True)
        U, _ = inverse_hessian_factor(hessian_from_inputs(X))
        d = U.diagonal().clone()
        cases.append(Case(f"random {r}x{c} block with outlier inputs at {s:.0%} (seed {seed})", (W, d, s),
                          expected=ref.select_block_mask(W, d, s), arg_names=names))
    return cases


def _block_hint(case: Case, got) -> str | None:
    w, d, s = case.args
    if not isinstance(got, torch.Tensor) or got.shape != w.shape:
        return None
    if got.dtype != torch.bool:
        return "return a boolean tensor (True = pruned), e.g. build it with torch.zeros(..., dtype=torch.bool)."
    k = int(w.numel() * s)
    if torch.equal(got, ~case.expected):
        return "your mask is inverted: True must mean PRUNED (the lowest scores)."
    if int(got.sum()) != k:
        return f"prune exactly int(numel * sparsity) = {k} weights of the block; you pruned {int(got.sum())}."
    score = (w / d).square()
    per_row = torch.zeros_like(got)
    kr = int(w.shape[1] * s)
    if kr:
        per_row.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :kr], True)
    if torch.equal(got, per_row) and int(per_row.sum()) == k:
        return "the comparison group is the WHOLE block (all rows together), not each row separately."
    flat = lambda sc: torch.zeros(w.numel(), dtype=torch.bool).index_fill_(  # noqa: E731
        0, torch.sort(sc.reshape(-1), stable=True).indices[:k], True).reshape(w.shape)
    if torch.equal(got, flat(w.abs())):
        return "that is the magnitude mask: SparseGPT ranks by the OBS saliency w^2 / U_jj^2."
    if torch.equal(got, flat(w.square() * d.square())) or torch.equal(got, flat(w.abs() * d)):
        return "divide by U_jj^2 (it is the diagonal of the downdated INVERSE Hessian), do not multiply."
    if torch.equal(got, flat(w.square() / d)) or torch.equal(got, flat(w.abs() / d.square())):
        return "the saliency is w^2 / U_jj^2 = (w / U_jj)^2: square both, or neither."
    return None


register(Checker(
    name="ch04.block_mask", chapter=4, kind="function",
    summary="SparseGPT's mask for one block: prune the int(numel*sparsity) lowest w^2/U_jj^2 of the whole block",
    make_cases=_block_cases, hint=_safe(_block_hint),
))


# ----------------------------------------------------------------------------- 5. the full algorithm
def _variant(W, H, sparsity, blocksize, *, lazy=True, group="block", score="obs", percdamp=0.01, update=True):
    """SparseGPT with one thing changed, to recognise a learner's slip (float64 in, float64 out)."""
    d_out, d_in = W.shape
    U, dead = inverse_hessian_factor(H, percdamp)
    W = W.clone()
    W[:, dead] = 0
    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        W1, d1 = W[:, i1:i2].clone(), U.diagonal()[i1:i2]
        sc = (W1 / d1).square() if score == "obs" else W1.abs()
        if group == "block":
            k = int(W1.numel() * sparsity)
            prune = torch.zeros(W1.numel(), dtype=torch.bool)
            prune[torch.sort(sc.reshape(-1), stable=True).indices[:k]] = True
            prune = prune.reshape(W1.shape)
        else:
            k = int(W1.shape[1] * sparsity)
            prune = torch.zeros_like(W1, dtype=torch.bool)
            prune.scatter_(1, torch.sort(sc, dim=1, stable=True).indices[:, :k], True)
        if not update:
            W[:, i1:i2] = W1.masked_fill(prune, 0.0)
            continue
        Err1 = torch.zeros_like(W1)
        for j in range(i2 - i1):
            q = W1[:, j].masked_fill(prune[:, j], 0.0)
            err = (W1[:, j] - q) / d1[j]
            W1[:, j:] -= err.unsqueeze(1) * U[i1 + j, i1 + j : i2].unsqueeze(0)
            W1[:, j] = q
            Err1[:, j] = err
        W[:, i1:i2] = W1
        if lazy:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


def _sparsegpt_cases() -> list[Case]:
    names = ("weight", "hessian", "sparsity", "blocksize")
    cases = []
    W, X = ref.random_layer(4, 8, 32, seed=0)
    H = hessian_from_inputs(X)
    cases.append(Case("worked example: 4x8 layer, blocks of 4, 50%", (W, H, 0.5, 4),
                      expected=sparsegpt_prune(W, H, 0.5, blocksize=4), arg_names=names))
    for seed, (r, c, s, bs, outl) in zip((12, 13, 14, 15), ((6, 16, 0.5, 8, True), (8, 24, 0.6, 8, False),
                                                              (5, 12, 0.5, 128, True), (6, 20, 0.4, 6, True))):
        W, X = ref.random_layer(r, c, 4 * c, seed=seed, outliers=outl)
        H = hessian_from_inputs(X)
        cases.append(Case(f"random {r}x{c} layer{' with outlier inputs' if outl else ''}, {s:.0%}, blocks of {bs} "
                          f"(seed {seed})", (W, H, s, bs), expected=sparsegpt_prune(W, H, s, blocksize=bs),
                          arg_names=names))
    W, X = ref.random_layer(4, 12, 48, seed=16)
    X[:, 5] = 0  # a dead input
    H = hessian_from_inputs(X)
    cases.append(Case("random 4x12 layer with a dead input (column 5), 50%, blocks of 4 (seed 16)", (W, H, 0.5, 4),
                      expected=sparsegpt_prune(W, H, 0.5, blocksize=4), arg_names=names))
    return cases


def _sparsegpt_hint(case: Case, got) -> str | None:
    W, H, s, bs = case.args
    if not isinstance(got, torch.Tensor) or got.shape != W.shape or got.dtype != W.dtype:
        return None
    k = sum(int(W.shape[0] * (min(i + bs, W.shape[1]) - i) * s) for i in range(0, W.shape[1], bs))
    if int((got == 0).sum()) < k:
        return f"expected at least {k} zeros (int(d_out * block_cols * sparsity) per block); you have " \
               f"{int((got == 0).sum())}."
    checks = [
        (dict(update=False), "you zeroed the mask's weights but never updated the others: each pruned column's "
                             "error err = (w_j - q_j) / U_jj must be propagated, W[:, j:] -= err U[j, j:]."),
        (dict(lazy=False), "the columns AFTER each block never received the block's errors: after the block, "
                           "W[:, i2:] -= Err @ U[i1:i2, i2:] (the lazy batched update)."),
        (dict(group="row"), "the mask of a block is chosen over the WHOLE block (all rows together), not per row."),
        (dict(score="magnitude"), "choose the mask by the OBS saliency w^2 / U_jj^2, not by |w| (magnitude)."),
        (dict(percdamp=0), "dampen H first: add 0.01 * mean(diag H) to its diagonal (and set dead inputs' "
                           "diagonal to 1) before inverting."),
    ]
    for kw, msg in checks:
        if _close(got, _variant(W, H, s, bs, **kw), rtol=1e-6, atol=1e-8):
            return msg
    dead = torch.diag(H) == 0
    if dead.any() and (got[:, dead] != 0).any():
        return "inputs whose H_jj = 0 are dead: set their diagonal of H to 1 and their weights to 0 first."
    return None


register(Checker(
    name="ch04.sparsegpt", chapter=4, kind="function",
    summary="SparseGPT on a small layer (unstructured, percdamp 0.01, adaptive mask per block, lazy updates)",
    make_cases=_sparsegpt_cases, hint=_safe(_sparsegpt_hint), rtol=1e-6, atol=1e-8,
))


# ----------------------------------------------------------------------------- 7. when can the column order matter?
# Section 4.12 (predict first): SparseGPT's result depends on the column order through two things only: the updates
# (a pruned column's error reaches the later columns through the off-diagonal of H^-1, so through U's rows) and
# the mask's blocks (which columns compete for a block's quota). With H diagonal, U is diagonal and no update
# reaches another column; with one block (d_in <= blocksize) the mask is the smallest w^2 / U_jj^2 of the whole
# matrix, a set no permutation changes. So the order can matter iff H has a nonzero off-diagonal entry or
# d_in > blocksize.
def _order_case_h(kind: str, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(d, generator=g, dtype=torch.float64) * 9 + 0.5
    H = torch.diag(h)
    if kind == "isotropic":
        H = 3.0 * torch.eye(d, dtype=torch.float64)
    elif kind == "one pair":  # inputs 0 and d-1 correlated
        H[0, d - 1] = H[d - 1, 0] = 0.5 * float((h[0] * h[-1]).sqrt())
    elif kind == "faint":
        H[1, 2] = H[2, 1] = 1e-3
    elif kind == "dense":
        X = torch.randn(d, 4 * d, generator=g, dtype=torch.float64)
        H = X @ X.T
    return H


_ORDER_SPECS = [  # label, kind of H, d_in, blocksize, whether the order can matter
    ("uncorrelated inputs (H diagonal), one block", "diagonal", 8, 128, False),
    ("H = 3 I, one block", "isotropic", 6, 128, False),
    ("H diagonal, d_in = blocksize (exactly one block)", "diagonal", 8, 8, False),
    ("H diagonal, two blocks of 4", "diagonal", 8, 4, True),
    ("H diagonal, d_in = blocksize + 1", "diagonal", 9, 8, True),
    ("H = 3 I, two blocks of 3", "isotropic", 6, 3, True),
    ("one correlated pair (inputs 1 and 8), one block", "one pair", 8, 128, True),
    ("a faint correlation (H_23 = 1e-3), one block", "faint", 8, 128, True),
    ("correlated inputs (H = X X^T), one block", "dense", 8, 128, True),
    ("correlated inputs, blocks of 2", "dense", 8, 2, True),
]


def _order_cases() -> list[Case]:
    return [Case(label, (_order_case_h(kind, d, seed), bs), expected=truth, arg_names=("hessian", "blocksize"))
            for seed, (label, kind, d, bs, truth) in enumerate(_ORDER_SPECS)]


def _order_hint(case: Case, got) -> str | None:
    H, bs = case.args
    if not isinstance(got, bool):
        return None
    d = H.shape[0]
    correlated = bool((H - torch.diag(torch.diag(H))).abs().max() > 0)
    if got is False and correlated:
        return ("H has a nonzero off-diagonal entry: those inputs are correlated, so pruning one of them moves the "
                "other's weights (the update -eps_j U[j, j:] of Section 4.3 reaches every later column with "
                "U_jk != 0). Which of them the order visits first, and so which one can still compensate, changes "
                "the result, however small the correlation.")
    if got is False and d > bs:
        return (f"d_in = {d} > blocksize = {bs}: the mask is chosen per block of columns (Section 4.5), and the "
                f"order decides which columns share a block, so which weights compete for the block's quota, "
                f"even when no update reaches another column.")
    if got is True and not correlated and d <= bs:
        return ("with H diagonal, H^-1 and its factor U are diagonal: each pruning step's update touches only its "
                "own column, so no weight compensates for another. And with one block the mask is the smallest "
                "w^2 / U_jj^2 over the whole matrix, a set that no permutation of the columns changes. Every order "
                "gives the same result.")
    return None


register(Checker(
    name="ch04.order_can_matter", chapter=4, kind="function",
    summary="whether SparseGPT's column order can change its result: H not diagonal, or d_in > blocksize",
    make_cases=_order_cases, hint=_safe(_order_hint),
))
