"""Grader cases of Chapter 4: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import torch


# ---------------------------------------------------------------------------- Chapter 4 solutions (learner style)
def hessian(x):
    return 2.0 / x.shape[0] * x.T @ x


def obs_row(w, hessian_inv, prune, *, downdate="all", update=True, sign=1.0, zero=True):
    w, G = w.clone(), hessian_inv.clone()
    for j in range(w.shape[0]):
        if prune[j]:
            if update:
                w = w - sign * w[j] / G[j, j] * G[:, j]
            if zero:
                w[j] = 0.0
        if downdate == "all" or (downdate == "pruned" and prune[j]):
            G = G - torch.outer(G[:, j], G[j, :]) / G[j, j]
    return w


def upper_factor(hessian_inv, *, scale="sqrt", downdate=True, lower=False):
    G = hessian_inv.clone()
    U = torch.zeros_like(G)
    for j in range(G.shape[0]):
        piv = G[j, j]
        U[j, j:] = G[j, j:] / {"sqrt": piv.sqrt(), "none": 1.0, "diag": piv}[scale]
        if downdate:
            G = G - torch.outer(G[:, j], G[j, :]) / piv
    return U.T if lower else U


def block_mask(w_block, u_diag, sparsity, *, score="obs", group="block", invert=False, rounding=int):
    if score == "obs":
        s = (w_block / u_diag) ** 2
    elif score == "magnitude":
        s = w_block.abs()
    else:  # multiplies by U_jj^2
        s = w_block**2 * u_diag**2
    prune = torch.zeros_like(w_block, dtype=torch.bool)
    if group == "block":
        k = rounding(w_block.numel() * sparsity)
        idx = torch.sort(s.reshape(-1), stable=True).indices[:k]
        prune.view(-1)[idx] = True
    else:
        k = rounding(w_block.shape[1] * sparsity)
        prune.scatter_(1, torch.sort(s, dim=1, stable=True).indices[:, :k], True)
    return ~prune if invert else prune


def sparsegpt(weight, hessian, sparsity, blocksize, *, lazy=True, group="block", score="obs", damp=0.01,
              update=True, dead_inputs=True):
    H = hessian.clone()
    W = weight.clone()
    dead = torch.diag(H) == 0
    if dead_inputs:
        H[dead, dead] = 1.0
        W[:, dead] = 0.0
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    d_in = W.shape[1]
    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        W1 = W[:, i1:i2].clone()
        d1 = torch.diag(U)[i1:i2]
        prune = block_mask(W1, d1, sparsity, score=score, group=group)
        Err = torch.zeros_like(W1)
        for j in range(i2 - i1):
            q = W1[:, j].masked_fill(prune[:, j], 0.0)
            err = (W1[:, j] - q) / d1[j]
            if update:
                W1[:, j:] -= err[:, None] * U[i1 + j, i1 + j : i2][None, :]
            W1[:, j] = q
            Err[:, j] = err
        W[:, i1:i2] = W1
        if lazy and update:
            W[:, i2:] -= Err @ U[i1:i2, i2:]
    return W


def order_can_matter(hessian, blocksize):
    """Section 4.12: the order acts through the updates (off-diagonal H) and through the mask's blocks."""
    off = hessian - torch.diag(torch.diag(hessian))
    return bool((off != 0).any()) or hessian.shape[0] > blocksize


SOLUTIONS = {
    "ch04.order_can_matter": order_can_matter,
    "ch04.hessian_from_inputs": hessian,
    "ch04.obs_row": obs_row,
    "ch04.upper_factor": upper_factor,
    "ch04.block_mask": block_mask,
    "ch04.sparsegpt": sparsegpt,
}


def _obs_row_inplace(w, hessian_inv, prune):
    G = hessian_inv
    for j in range(w.shape[0]):
        if prune[j]:
            w -= w[j] / G[j, j] * G[:, j]
            w[j] = 0.0
        G -= torch.outer(G[:, j], G[j, :]) / G[j, j]
    return w


# (wrong answer, words the failure message must contain)
MUTANTS = {
    "ch04.hessian_from_inputs": [
        (lambda x: x.T @ x, "times 2, divided by the number of tokens"),
        (lambda x: 2 * x.T @ x, "MEAN over the n tokens"),
        (lambda x: x.T @ x / x.shape[0], "factor 2 is missing"),
        (lambda x: 2.0 / x.shape[0] * x @ x.T, "[tokens, tokens]"),
        (lambda x: 2.0 / x.shape[0] * (x - x.mean(0)).T @ (x - x.mean(0)), "not a covariance"),
        (lambda x: 2.0 / (x.shape[0] - 1) * x.T @ x, "not n - 1"),
        (lambda x: (2.0 / x.shape[0] * x.T @ x).float(), "dtype"),
    ],
    "ch04.obs_row": [
        (lambda w, G, p: obs_row(w, G, p, downdate="none"), "downdating"),
        (lambda w, G, p: obs_row(w, G, p, downdate="pruned"), "downdate G after EVERY column"),
        (lambda w, G, p: obs_row(w, G, p, update=False), "only zeroed the pruned weights"),
        (lambda w, G, p: obs_row(w, G, p, zero=False, sign=-1.0), "exactly 0"),
        (_obs_row_inplace, "modified its input"),
    ],
    "ch04.upper_factor": [
        (lambda G: upper_factor(G, lower=True), "LOWER factor"),
        (lambda G: upper_factor(G, scale="none"), "divided by the square root"),
        (lambda G: upper_factor(G, scale="diag"), "not by G_jj"),
        (lambda G: upper_factor(G, downdate=False), "rows of H^-1 itself"),
        (lambda G: torch.linalg.cholesky(torch.linalg.inv(G), upper=True), "Cholesky factor of H"),
        (lambda G: torch.linalg.cholesky(G), "LOWER factor"),
    ],
    "ch04.block_mask": [
        (lambda w, d, s: block_mask(w, d, s, group="row"), "WHOLE block"),
        (lambda w, d, s: block_mask(w, d, s, score="magnitude"), "magnitude mask"),
        (lambda w, d, s: block_mask(w, d, s, score="times"), "do not multiply"),
        (lambda w, d, s: block_mask(w, d, s, invert=True), "inverted"),
        (lambda w, d, s: block_mask(w, d, s, rounding=round), "exactly int(numel * sparsity)"),
        (lambda w, d, s: block_mask(w, d, s).float(), "boolean"),
    ],
    "ch04.sparsegpt": [
        (lambda W, H, s, bs: sparsegpt(W, H, s, bs, lazy=False), "lazy batched update"),
        (lambda W, H, s, bs: sparsegpt(W, H, s, bs, group="row"), "WHOLE block"),
        (lambda W, H, s, bs: sparsegpt(W, H, s, bs, score="magnitude"), "not by |w|"),
        (lambda W, H, s, bs: sparsegpt(W, H, s, bs, update=False), "never updated the others"),
        (lambda W, H, s, bs: sparsegpt(W, H, s, bs, damp=0.0), "dampen H first"),
        (lambda W, H, s, bs: sparsegpt(W, H, s, bs, dead_inputs=False), "dead"),
    ],
    "ch04.order_can_matter": [
        (lambda H, bs: False, "per block of columns"),
        (lambda H, bs: True, "Every order"),
        (lambda H, bs: bool((H - torch.diag(torch.diag(H)) != 0).any()), "per block of columns"),
        (lambda H, bs: H.shape[0] > bs, "correlated"),
        (lambda H, bs: bool((H - torch.diag(torch.diag(H)) != 0).any()) or H.shape[0] >= bs, "Every order"),
        (lambda H, bs: bool((H - torch.diag(torch.diag(H))).abs().max() > 0.01) or H.shape[0] > bs,
         "however small"),
        (lambda H, bs: bool(torch.diag(H).std() > 0) or H.shape[0] > bs, "Every order"),
        (lambda H, bs: "yes", "bool"),
    ],
}
