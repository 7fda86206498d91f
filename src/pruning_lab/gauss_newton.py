"""The Gauss-Newton approximation of the Hessian: the curvature OBD actually used (Chapter 2).

For a training objective ``L(theta) = (1/N) sum_n l(z_n, y_n) + (lam / 2) ||theta||^2`` whose per-example loss
``l`` depends on the parameters only through the logits ``z_n = f(theta, x_n)`` (``[C]``), the chain rule splits
the Hessian into two terms::

    H = (1/N) sum_n J_n^T H_out,n J_n  +  (1/N) sum_n sum_k (dl/dz_nk) d^2 z_nk / d theta^2  +  lam I

with ``J_n = dz_n / dtheta`` (``[C, d]``) the Jacobian of the logits and ``H_out,n = d^2 l / dz_n^2``
(``[C, C]``). The **Gauss-Newton** matrix ``G`` keeps the first and the last term and drops the middle one, the
only one with second derivatives of the network's output. LeCun, Denker and Solla (1990) made the same choice
(they call it the Levenberg-Marquardt approximation) so that their estimate of ``H_ii`` is never negative.

For the cross-entropy ``l = -log softmax(z)_y`` the output Hessian is ``H_out = diag(p) - p p^T`` with
``p = softmax(z)``, which does not depend on the label and is positive semi-definite. Hence ``G`` is positive
semi-definite, and its diagonal is a variance over the classes::

    G_ii = (1/N) sum_n [ sum_k p_nk J_nki^2 - (sum_k p_nk J_nki)^2 ]  +  lam   >=  lam.

The dropped term is weighted by the residuals ``dl/dz = p - onehot(y)``: it is small where the network fits
its training data. When the logits are *linear* in ``theta`` (softmax regression, or one linear layer with a
squared-error objective, Chapter 4's ``2 X X^T``) it is zero and ``G`` is the exact Hessian.

Everything is a pure function: tensors in, new tensors out.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.func import jacrev, vmap

from ._validate import as_tensor
from .digits import DigitsMLP

__all__ = ["softmax_output_hessian", "gauss_newton_diagonal", "gauss_newton_matrix",
           "digits_gauss_newton_diagonal", "linear_layer_obd_saliency"]

#: ``logits_fn(theta [d], X [n, ...]) -> logits [n, C]``, e.g. :meth:`pruning_lab.digits.DigitsMLP.logits`.
LogitsFn = Callable[[Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------------------------------ checks
def _theta(theta) -> Tensor:
    t = as_tensor(theta, "theta")
    if t.dim() != 1:
        raise ValueError(f"`theta` must be a flat parameter vector [d]; got shape {tuple(t.shape)}")
    return t.detach()


def _inputs(inputs) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise ValueError(f"`inputs` must be a tensor [N, ...] of N >= 1 examples; got {type(inputs).__name__}")
    if inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"`inputs` must be a tensor [N, ...] of N >= 1 examples; got shape {tuple(inputs.shape)}")
    return inputs.detach()


def _weight_decay(weight_decay) -> float:
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"`weight_decay` must be a finite number >= 0; got {weight_decay!r}")
    return float(weight_decay)


def _per_example(logits_fn, theta: Tensor, inputs: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """``logits_fn`` as a function of ``(theta, x)`` for ONE example ``x``, returning ``[C]``; checks the shape."""
    if not callable(logits_fn):
        raise ValueError(f"`logits_fn` must be callable as logits_fn(theta, X) -> [n, C]; got "
                         f"{type(logits_fn).__name__}")
    with torch.no_grad():
        z = logits_fn(theta, inputs[:1])
    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[0] != 1 or z.shape[1] < 1:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"`logits_fn` must return logits of shape [n, C] for n inputs; got {shape} for n = 1")
    return lambda t, x: logits_fn(t, x.unsqueeze(0))[0]


def _jacobians(single, theta: Tensor, chunk: Tensor) -> tuple[Tensor, Tensor]:
    """``(J, p)`` for a chunk of ``b`` examples: ``J`` ``[b, C, d]`` (logits by parameters), ``p`` ``[b, C]``."""
    J = vmap(jacrev(single), in_dims=(None, 0))(theta, chunk)  # (b, C, d)
    with torch.no_grad():
        p = torch.softmax(vmap(single, in_dims=(None, 0))(theta, chunk), dim=-1)  # (b, C)
    return J.detach(), p


# ------------------------------------------------------------------------------------------------ functions
def softmax_output_hessian(logits) -> Tensor:
    """``H_out = diag(p) - p p^T`` for each row of ``logits`` ``[N, C]``, with ``p = softmax(z)``; ``[N, C, C]``
    (Chapter 2). It is the Hessian of the cross-entropy with respect to the logits, the same for every label,
    and positive semi-definite (``v^T H_out v`` is the variance of ``v`` under ``p``)."""
    z = as_tensor(logits, "logits")
    if z.dim() != 2:
        raise ValueError(f"`logits` must be 2-D [N, C]; got shape {tuple(z.shape)}")
    p = torch.softmax(z, dim=1)  # (N, C)
    return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)


def gauss_newton_diagonal(logits_fn: LogitsFn, theta, inputs, *, weight_decay: float = 0.0,
                          chunk_size: int = 256) -> Tensor:
    """``diag(G)``, shape ``[d]``: the Gauss-Newton diagonal of the mean cross-entropy (Chapter 2).

    ``G = (1/N) sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n + weight_decay * I`` with ``J_n`` ``[C, d]`` the
    Jacobian of ``logits_fn(theta, inputs)[n]`` with respect to ``theta`` (``[d]``) and ``p_n`` its softmax;
    ``weight_decay`` is the ``lam`` of an L2 penalty ``lam/2 ||theta||^2``. Entry ``i`` is
    ``(1/N) sum_n [sum_k p_nk J_nki^2 - (sum_k p_nk J_nki)^2] + lam``, never below ``lam``. The labels do not
    enter. Examples are processed ``chunk_size`` at a time (memory ``chunk_size * C * d`` numbers).
    """
    t, X = _theta(theta), _inputs(inputs)
    lam = _weight_decay(weight_decay)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer; got {chunk_size!r}")
    single = _per_example(logits_fn, t, X)
    total = torch.zeros_like(t)
    for chunk in torch.split(X, chunk_size):
        J, p = _jacobians(single, t, chunk)  # (b, C, d), (b, C)
        pw = p.unsqueeze(2)  # (b, C, 1)
        second = (pw * J.square()).sum(dim=1)  # (b, d)  sum_k p_k J_ki^2
        mean = (pw * J).sum(dim=1)  # (b, d)            sum_k p_k J_ki
        total = total + (second - mean.square()).clamp(min=0).sum(dim=0)  # clamp: rounding only
    return total / X.shape[0] + lam


def gauss_newton_matrix(logits_fn: LogitsFn, theta, inputs, *, weight_decay: float = 0.0) -> Tensor:
    """The full Gauss-Newton matrix ``G``, ``[d, d]``, of the mean cross-entropy (Chapter 2), symmetrised.

    Same definition as :func:`gauss_newton_diagonal`; it holds ``N * C * d`` Jacobian entries at once, so it is
    meant for small models (tests, and checking that ``G`` equals the exact Hessian when the logits are linear
    in ``theta``).
    """
    t, X = _theta(theta), _inputs(inputs)
    lam = _weight_decay(weight_decay)
    single = _per_example(logits_fn, t, X)
    J, p = _jacobians(single, t, X)  # (N, C, d), (N, C)
    H_out = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (N, C, C)
    G = torch.einsum("nki,nkl,nlj->ij", J, H_out, J) / X.shape[0]  # (d, d)
    G = 0.5 * (G + G.T)
    return G + lam * torch.eye(t.numel(), dtype=G.dtype)


def digits_gauss_newton_diagonal(model: DigitsMLP, theta: Tensor, *, chunk_size: int = 256) -> Tensor:
    """``diag(G)`` ``[d]`` of the training objective of Chapter 2's :class:`~pruning_lab.digits.DigitsMLP`:
    the mean cross-entropy over its training images ``model.X`` plus the penalty ``model.lam / 2 ||theta||^2``
    (whose Hessian ``lam I`` is exact). The counterpart of ``exact_hessian(model.loss, theta).diagonal()``.
    """
    if not isinstance(model, DigitsMLP):
        raise ValueError(f"`model` must be a DigitsMLP; got {type(model).__name__}")
    if not isinstance(theta, Tensor) or theta.shape != (model.num_params,):
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"`theta` must be a tensor of shape ({model.num_params},) for this model; got {shape}")
    return gauss_newton_diagonal(model.logits, theta, model.X, weight_decay=model.lam, chunk_size=chunk_size)


# ------------------------------------------------------------------------------------------------ one linear layer
def linear_layer_obd_saliency(weight, inputs) -> Tensor:
    """OBD saliency of every weight of one linear layer under the layer-wise squared error (Chapters 2, 4, 5).

    ``weight`` is ``W`` ``[d_out, d_in]`` and ``inputs`` is ``X`` ``[d_in, n]``: one COLUMN per calibration
    example (the transpose of the ``[tokens, d_in]`` layout of :mod:`pruning_lab.sparsegpt`). The objective
    ``E(W') = ||W X - W' X||_F^2`` is quadratic with its minimum ``E = 0`` at ``W' = W``; each output row ``i``
    has the Hessian ``2 X X^T`` (``[d_in, d_in]``, Gauss-Newton and exact at once, since ``W' X`` is linear in
    ``W'``). OBD's ``1/2 H_jj W_ij^2`` is therefore ``s_ij = W_ij^2 ||X_j||^2`` with ``X_j`` row ``j`` of ``X``
    (input feature ``j`` over the ``n`` examples): exactly the change of ``E`` when ``W_ij`` alone is zeroed,
    and the square of Wanda's score ``|W_ij| ||X_j||`` (Chapter 5). Returns ``[d_out, d_in]`` in ``weight``'s
    dtype.
    """
    W = as_tensor(weight, "weight")
    if W.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(W.shape)}")
    X = as_tensor(inputs, "inputs", dtype=W.dtype)
    if X.dim() != 2 or X.shape[0] != W.shape[1] or X.shape[1] == 0:
        raise ValueError(f"`inputs` must be 2-D [d_in, n] with d_in = {W.shape[1]} and n >= 1 (one column per "
                         f"example); got shape {tuple(X.shape)}")
    hessian_diag = 2.0 * X.square().sum(dim=1)  # (d_in,) the diagonal of 2 X X^T
    return 0.5 * hessian_diag.unsqueeze(0) * W.square()  # (d_out, d_in)
