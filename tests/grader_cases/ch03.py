"""Grader cases of Chapter 3: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import torch


# ---------------------------------------------------------------------------- Chapter 3 solutions
def _update(w, P, q):
    return -(w[q] / P[q, q]) * P[:, q]


def _downdate(P, q):
    out = P - torch.outer(P[:, q], P[q, :]) / P[q, q]
    out[q, :] = 0.0
    out[:, q] = 0.0
    return out


def _sequential(w, P, order):
    for q in order:
        w = w + _update(w, P, q)
        w[q] = 0.0
        P = _downdate(P, q)
    return w


SOLUTIONS = {
    "ch03.pair_cost": 0.5 * (1.0**2 / 4.0 + 2.0**2 / 1.0),
    "ch03.obs_saliency": lambda w, P: w**2 / (2 * torch.diagonal(P)),
    "ch03.obs_update": _update,
    "ch03.inverse_downdate": _downdate,
    "ch03.sequential_obs": _sequential,
    "ch03.set_cost": lambda w, P, p: float(0.5 * w[p] @ torch.linalg.solve(P[p][:, p], w[p])),
    "ch03.saliency_ratio": 1 - 0.9**2,
}


# ---------------------------------------------------------------------------- wrong answers
def _zero_rc(P, q):
    out = P.clone()
    out[q, :] = 0.0
    out[:, q] = 0.0
    return out


def _update_in_place(w, P, q):
    dw = -(w[q] / P[q, q]) * P[:, q]
    w.add_(dw)  # modifies the input
    return dw


def _downdate_in_place(P, q):
    P.sub_(torch.outer(P[:, q], P[q, :]) / P[q, q])
    P[q, :] = 0.0
    P[:, q] = 0.0
    return P


def _downdate_deleted(P, q):
    keep = [i for i in range(P.shape[0]) if i != q]
    return _downdate(P, q)[keep][:, keep]


def _downdate_inverse_of_sub(P, q):
    keep = [i for i in range(P.shape[0]) if i != q]
    out = torch.zeros_like(P)
    out[torch.tensor(keep)[:, None], torch.tensor(keep)] = torch.linalg.inv(P[keep][:, keep])
    return out


def _seq_no_downdate(w, P, order):  # the source's mistake: original H^-1 each time, removed weights stay 0
    done = []
    for q in order:
        w = w + _update(w, P, q)
        done.append(q)
        w[done] = 0.0
    return w


def _seq_no_downdate_free(w, P, order):
    for q in order:
        w = w + _update(w, P, q)
    return w


def _seq_zero_only(w, P, order):
    w = w.clone()
    w[order] = 0.0
    return w


def _seq_stale(w, P, order):
    w0, out = w.clone(), w.clone()
    for q in order:
        out = out - (w0[q] / P[q, q]) * P[:, q]
        P = _downdate(P, q)
    out[order] = 0.0
    return out


def _seq_in_place(w, P, order):
    w = w.clone()
    for q in order:
        w = w + _update(w, P, q)
        w[q] = 0.0
        P.sub_(torch.outer(P[:, q], P[q, :]) / P[q, q])  # overwrites the caller's H^-1
        P[q, :] = 0.0
        P[:, q] = 0.0
    return w


def _set_sum(w, P, p):
    return float((w[p] ** 2 / (2 * torch.diagonal(P)[p])).sum())


def _set_block(w, P, p):
    return float(0.5 * w[p] @ P[p][:, p] @ w[p])


def _set_zeroing(w, P, p):
    H = torch.linalg.inv(P)
    return float(0.5 * w[p] @ H[p][:, p] @ w[p])


# (wrong answer, words the failure message must contain)
MUTANTS = {
    "ch03.pair_cost": [
        (4.25, "factor 1/2"),
        (4.0, "INVERSE"),
        (26 / 3, "zeroing w1 and w2"),
        (85 / 9, "w4 and w5"),
        (lambda: 2.125, "function"),
    ],
    "ch03.obs_saliency": [
        (lambda w, P: w**2 * torch.diagonal(P) / 2, "do not multiply"),
        (lambda w, P: 0.5 * torch.diagonal(torch.linalg.inv(P)) * w**2, "OBD"),
        (lambda w, P: w.abs() / (2 * torch.diagonal(P)), "square the weight"),
        (lambda w, P: w**2 / torch.diagonal(P), "factor 1/2"),
        (lambda w, P: w**2 / (2 * P.sum(dim=1)), "diagonal"),
        (lambda w, P: (w**2 / (2 * torch.diagonal(P))).float(), "dtype"),
    ],
    "ch03.obs_update": [
        (lambda w, P, q: w + _update(w, P, q), "not the new weights"),
        (lambda w, P, q: torch.zeros_like(w).index_fill(0, torch.tensor([q]), -float(w[q])), "only zeroes"),
        (lambda w, P, q: -w[q] * P[:, q], "divide by [H^-1]_qq"),
        (lambda w, P, q: _update(w, torch.linalg.inv(P), q), "INVERSE Hessian"),
        (lambda w, P, q: _update(w, P, q + 1) if q + 1 < len(w) else _update(w, P, q - 1), "0-based"),
        (lambda w, P, q: -_update(w, P, q), "sign"),
        (_update_in_place, "modified its input `weight`"),
    ],
    "ch03.inverse_downdate": [
        (_zero_rc, "not enough"),
        (lambda P, q: _zero_rc(P - torch.outer(P[:, q], P[q, :]), q), "pivot"),
        (lambda P, q: _zero_rc(P + torch.outer(P[:, q], P[q, :]) / P[q, q], q), "sign"),
        (_downdate_deleted, "full d x d"),
        (_downdate_inverse_of_sub, "submatrix of H^-1"),
        (_downdate_in_place, "modified its input `hessian_inv`"),
    ],
    "ch03.sequential_obs": [
        (_seq_no_downdate, "did not downdate"),
        (_seq_no_downdate_free, "already removed"),
        (_seq_zero_only, "only zeroed"),
        (_seq_stale, "CURRENT value"),
        (_seq_in_place, "modified its input `hessian_inv`"),
    ],
    "ch03.set_cost": [
        (_set_sum, "added the single-weight saliencies"),
        (_set_block, "invert the block"),
        (_set_zeroing, "without compensation"),
        (lambda w, P, p: 2 * SOLUTIONS["ch03.set_cost"](w, P, p), "factor 1/2"),
        (lambda w, P, p: 1 / 0, "ZeroDivisionError"),
    ],
    "ch03.saliency_ratio": [
        (0.1, "rho enters squared"),
        (0.81, "compensation removes"),
        (1 / 0.19, "never larger than OBD"),
        (1.0, "uncoupled"),
        (0.38, "factor 1/2"),
        (lambda: 0.19, "function"),
    ],
}
