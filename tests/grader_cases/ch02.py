"""Grader cases of Chapter 2: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import time

import torch

# ---------------------------------------------------------------------------- Chapter 2 solutions
SOLUTIONS = {
    "ch02.obd_saliency": lambda w, h: 0.5 * h * w**2,
    "ch02.taylor_saliency": lambda w, g, h: -g * w + 0.5 * h * w**2,
    "ch02.least_damaging": lambda w, H: int(torch.argmin(0.5 * torch.diagonal(H) * w**2)),
    "ch02.quadratic_delta": lambda w, g, H, p: float(g @ (-w * p) + 0.5 * (-w * p) @ H @ (-w * p)),
    "ch02.w5_cost": 0.5 * 1000 * 0.3**2,
    "ch02.layer_obd_saliency": lambda W, X: W**2 * (X**2).sum(dim=1),
}


def _obd_inplace(w, h):
    w.pow_(2).mul_(0.5 * h)
    return w


def _taylor_loop_slow(w, g, h):
    time.sleep(10)
    return -g * w + 0.5 * h * w**2


def _layer_inplace(W, X):
    W.pow_(2)
    return W * (X**2).sum(dim=1)


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
    "ch02.layer_obd_saliency": [
        (lambda W, X: 2 * W**2 * (X**2).sum(dim=1), "cancel"),  # the 1/2 and the 2 of 2 X X^T
        (lambda W, X: 0.5 * W**2 * (X**2).sum(dim=1), "2 X X^T, not X X^T"),  # Hessian taken as X X^T
        (lambda W, X: W**2 * (X**2).mean(dim=1), "divided by n"),  # a mean over the examples
        (lambda W, X: W.abs() * X.norm(dim=1), "Wanda's score"),  # ||X_j|| not squared, |W| not squared
        (lambda W, X: W.abs() * (X**2).sum(dim=1), "square the weight"),
        (lambda W, X: W**2 * (X**2).sum(dim=0), "wrong axis"),  # norms over d_in (columns of X)
        (lambda W, X: W**2 * torch.diagonal(X.T @ X), "diag(X^T X)"),  # H = X^T X, n x n
        (lambda W, X: 0.5 * W**2, "curvature is missing"),
        (lambda W, X: (W**2).sum(dim=0) * (X**2).sum(dim=1), "wrong shape"),  # summed over d_out
        (lambda W, X: (W**2 * (X**2).sum(dim=1)).T, "transposed"),
        (_layer_inplace, "modified its input `weight`"),
    ],
}
