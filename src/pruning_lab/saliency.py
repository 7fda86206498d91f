"""Second-order saliencies: the Taylor expansion of the loss and Optimal Brain Damage (Chapter 2).

Zeroing a set of weights moves the parameter vector by ``dw = -w * p`` (``p`` = 1 on the pruned
coordinates, 0 elsewhere). A second-order Taylor expansion of the loss around ``w`` predicts

    dL  ~  g . dw  +  1/2 dw^T H dw,                       g = grad L(w),  H = Hessian of L at w.

* :func:`quadratic_delta` evaluates that prediction for any set (it keeps every cross term ``H_ij``).
* :func:`taylor_saliency` is the prediction for zeroing ONE weight ``w_i`` alone:
  ``-g_i w_i + 1/2 H_ii w_i^2`` (for a single weight the "full quadratic" needs only ``H_ii``).
* :func:`obd_saliency` is Optimal Brain Damage (LeCun et al. 1990): at a minimum ``g = 0`` and the Hessian is
  taken as diagonal, so ``s_i = 1/2 H_ii w_i^2`` and the cost of a set is the *sum* of the saliencies.
* :func:`magnitude_saliency` is ``|w_i|``: OBD's ranking when the curvature is the same for every weight.

All functions work on flat vectors (``[d]``) or on tensors of any shape with a matching Hessian diagonal;
they return new tensors and never modify their inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._validate import as_tensor, check_same_shape

__all__ = [
    "magnitude_saliency",
    "obd_saliency",
    "taylor_saliency",
    "quadratic_delta",
    "least_damaging",
]


def magnitude_saliency(weight) -> Tensor:
    """``|w|``, elementwise (Chapter 2): the magnitude criterion. Same shape as ``weight``."""
    w = as_tensor(weight, "weight")
    return w.abs()


def obd_saliency(weight, hessian_diag) -> Tensor:
    """Optimal Brain Damage saliency ``s_i = 1/2 H_ii w_i^2`` (Chapter 2; LeCun et al. 1990).

    ``hessian_diag`` has the shape of ``weight`` and holds ``H_ii`` for each weight; at a minimum the
    Hessian is positive semi-definite, so every ``H_ii`` must be >= 0.
    """
    w = as_tensor(weight, "weight")
    h = as_tensor(hessian_diag, "hessian_diag", dtype=w.dtype)
    check_same_shape(w, h, "weight", "hessian_diag")
    if (h < 0).any():
        raise ValueError(
            "`hessian_diag` must be >= 0 everywhere (curvature at a minimum is non-negative); "
            f"got a minimum of {h.min().item():.3g}"
        )
    return 0.5 * h * w.square()


def taylor_saliency(weight, grad, hessian_diag) -> Tensor:
    """Second-order prediction of ``dL`` for zeroing each weight alone (Chapter 2).

    ``dw = -w_i e_i`` gives ``dL_i ~ -g_i w_i + 1/2 H_ii w_i^2``. The first (gradient) term vanishes at a
    minimum; away from one (early in training) it can dominate. ``hessian_diag`` may be negative here
    (the expansion holds at any point). All three arguments share one shape.
    """
    w = as_tensor(weight, "weight")
    g = as_tensor(grad, "grad", dtype=w.dtype)
    h = as_tensor(hessian_diag, "hessian_diag", dtype=w.dtype)
    check_same_shape(w, g, "weight", "grad")
    check_same_shape(w, h, "weight", "hessian_diag")
    return -g * w + 0.5 * h * w.square()


def quadratic_delta(weight, grad, hessian, prune) -> Tensor:
    """Second-order prediction of ``dL`` for zeroing the set ``prune`` together (Chapter 2).

    ``weight``, ``grad``: ``[d]``; ``hessian``: ``[d, d]`` (symmetric); ``prune``: ``[d]`` booleans, True
    where the weight is set to zero. With ``dw = -w * prune``:
    ``dL ~ g . dw + 1/2 dw^T H dw``. Returns a 0-d tensor. ``grad=None`` means ``g = 0``.
    """
    w = as_tensor(weight, "weight")
    if w.dim() != 1:
        raise ValueError(f"`weight` must be a vector [d]; got shape {tuple(w.shape)}")
    d = w.numel()
    H = as_tensor(hessian, "hessian", dtype=w.dtype)
    if H.shape != (d, d):
        raise ValueError(f"`hessian` must have shape ({d}, {d}) to match `weight`; got {tuple(H.shape)}")
    g = torch.zeros_like(w) if grad is None else as_tensor(grad, "grad", dtype=w.dtype)
    check_same_shape(w, g, "weight", "grad")
    p = torch.as_tensor(prune)
    if p.dtype != torch.bool:
        raise ValueError(f"`prune` must be a boolean mask (True = pruned); got dtype {p.dtype}")
    check_same_shape(w, p, "weight", "prune")
    dw = torch.where(p, -w, torch.zeros_like(w))  # (d,)
    return g @ dw + 0.5 * dw @ H @ dw


def least_damaging(saliency) -> int:
    """Index of the weight whose removal is predicted to hurt least: ``argmin`` of a saliency (Chapter 2).

    Ties go to the lowest (flattened) index, so the answer is deterministic.
    """
    s = as_tensor(saliency, "saliency")
    if s.numel() == 0:
        raise ValueError("`saliency` must contain at least one value; got an empty tensor")
    flat = s.reshape(-1)
    return int(torch.nonzero(flat == flat.min())[0, 0])
