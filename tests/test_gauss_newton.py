"""Tests of pruning_lab.gauss_newton (OBD's own curvature, Chapter 2): the Gauss-Newton diagonal equals the exact
Hessian diagonal when the logits are linear in the parameters, it is never negative, a case by hand, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pruning_lab.digits import DigitsMLP
from pruning_lab.gauss_newton import (
    digits_gauss_newton_diagonal,
    gauss_newton_diagonal,
    gauss_newton_matrix,
    linear_layer_obd_saliency,
    softmax_output_hessian,
)
from pruning_lab.sparsegpt import hessian_from_inputs
from pruning_lab.wanda import wanda_scores
from pruning_lab.hessian import exact_hessian

D_IN, C = 5, 3


def _linear_logits(theta, X):
    """Softmax regression: logits X W^T + b with W [C, D_IN] and b [C] packed in theta (linear in theta)."""
    W = theta[: C * D_IN].reshape(C, D_IN)
    return X @ W.T + theta[C * D_IN:]


def _mlp_logits(theta, X):
    """A 5-4-3 tanh MLP: logits are NOT linear in theta."""
    W1, b1 = theta[:20].reshape(4, D_IN), theta[20:24]
    W2, b2 = theta[24:36].reshape(C, 4), theta[36:39]
    return torch.tanh(X @ W1.T + b1) @ W2.T + b2


def _data(seed: int, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (n,), generator=g)
    return X, y, g


def _objective(logits_fn, X, y, lam):
    return lambda t: F.cross_entropy(logits_fn(t, X), y) + 0.5 * lam * t.square().sum()


@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_linear_logits_gauss_newton_is_the_exact_hessian(lam):
    X, y, g = _data(0)
    theta = torch.randn(C * D_IN + C, generator=g, dtype=torch.float64)
    H = exact_hessian(_objective(_linear_logits, X, y, lam), theta)
    G = gauss_newton_matrix(_linear_logits, theta, X, weight_decay=lam)
    torch.testing.assert_close(G, H, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gauss_newton_diagonal(_linear_logits, theta, X, weight_decay=lam),
                               H.diagonal(), rtol=1e-10, atol=1e-12)


def test_mlp_diagonal_matches_the_matrix_and_differs_from_the_exact_hessian():
    X, y, g = _data(1)
    theta = torch.randn(39, generator=g, dtype=torch.float64)
    G = gauss_newton_matrix(_mlp_logits, theta, X)
    torch.testing.assert_close(gauss_newton_diagonal(_mlp_logits, theta, X, chunk_size=7), G.diagonal(),
                               rtol=1e-10, atol=1e-12)
    H = exact_hessian(_objective(_mlp_logits, X, y, 0.0), theta)
    assert (G - H).abs().max() > 1e-3  # the dropped term: second derivatives of the logits


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_gauss_newton_is_never_negative_even_where_the_exact_diagonal_is(seed):
    X, y, g = _data(seed)
    theta = 2.0 * torch.randn(39, generator=g, dtype=torch.float64)  # far from any minimum
    G = gauss_newton_matrix(_mlp_logits, theta, X)
    assert (gauss_newton_diagonal(_mlp_logits, theta, X) >= 0).all()
    assert torch.linalg.eigvalsh(G).min() > -1e-12  # positive semi-definite, not only its diagonal


def test_the_exact_diagonal_does_go_negative_somewhere():
    """The property above is not vacuous: on these networks the exact H_ii has negative entries."""
    negatives = 0
    for seed in (2, 3, 4):
        X, y, g = _data(seed)
        theta = 2.0 * torch.randn(39, generator=g, dtype=torch.float64)
        negatives += int((exact_hessian(_objective(_mlp_logits, X, y, 0.0), theta).diagonal() < 0).sum())
    assert negatives > 0


def test_a_case_by_hand():
    """Logits (theta x, 0): p = sigmoid(theta x), so G = mean of x^2 p (1 - p); at theta = 0, p = 1/2."""
    logits = lambda t, X: torch.cat([X * t, torch.zeros_like(X)], dim=1)  # noqa: E731
    X = torch.tensor([[2.0], [-1.0]], dtype=torch.float64)
    theta = torch.zeros(1, dtype=torch.float64)
    # (2^2 / 4 + 1^2 / 4) / 2 = 0.625, plus the weight decay 0.1
    torch.testing.assert_close(gauss_newton_diagonal(logits, theta, X), torch.tensor([0.625], dtype=torch.float64))
    torch.testing.assert_close(gauss_newton_diagonal(logits, theta, X, weight_decay=0.1),
                               torch.tensor([0.725], dtype=torch.float64))
    theta = torch.tensor([0.5], dtype=torch.float64)
    p = torch.sigmoid(X[:, 0] * 0.5)
    torch.testing.assert_close(gauss_newton_diagonal(logits, theta, X), (X[:, 0] ** 2 * p * (1 - p)).mean(0,
                               keepdim=True))


def test_softmax_output_hessian_by_hand():
    z = torch.tensor([[0.0, 0.0], [0.0, 1e3]], dtype=torch.float64)
    H = softmax_output_hessian(z)
    torch.testing.assert_close(H[0], torch.tensor([[0.25, -0.25], [-0.25, 0.25]], dtype=torch.float64))
    torch.testing.assert_close(H[1], torch.zeros(2, 2, dtype=torch.float64))  # a confident output: no curvature
    assert H.shape == (2, 2, 2)


def test_inputs_are_not_modified():
    X, _, g = _data(5)
    theta = torch.randn(39, generator=g, dtype=torch.float64)
    X0, t0 = X.clone(), theta.clone()
    gauss_newton_diagonal(_mlp_logits, theta, X, weight_decay=0.1)
    gauss_newton_matrix(_mlp_logits, theta, X)
    assert torch.equal(X, X0) and torch.equal(theta, t0)


def test_digits_diagonal_is_the_generic_one_with_the_models_penalty():
    model = DigitsMLP(sizes=(64, 3, 10))
    theta = model.init(0)
    X = model.X[:50]
    small = DigitsMLP(sizes=(64, 3, 10), X=X, y=model.y[:50])
    got = digits_gauss_newton_diagonal(small, theta)
    torch.testing.assert_close(got, gauss_newton_diagonal(small.logits, theta, X, weight_decay=small.lam))
    assert got.shape == (model.num_params,) and (got >= small.lam).all()


def test_digits_tiny_softmax_regression_equals_the_exact_hessian_of_the_training_objective():
    """A DigitsMLP with no hidden layer is softmax regression: its logits are linear in theta."""
    model = DigitsMLP(sizes=(64, 10))
    model = DigitsMLP(sizes=(64, 10), X=model.X[:60], y=model.y[:60])
    theta = model.init(1)
    torch.testing.assert_close(digits_gauss_newton_diagonal(model, theta),
                               exact_hessian(model.loss, theta).diagonal(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    ({"theta": torch.zeros(2, 3)}, "`theta` must be a flat parameter vector"),
    ({"theta": [float("nan")] * 39}, "`theta` contains NaN"),
    ({"inputs": torch.zeros(0, D_IN)}, "`inputs` must"),
    ({"inputs": "pixels"}, "`inputs` must"),
    ({"weight_decay": -1.0}, "`weight_decay` must be a finite number >= 0"),
    ({"weight_decay": float("inf")}, "`weight_decay` must be a finite number >= 0"),
    ({"chunk_size": 0}, "`chunk_size` must be a positive integer"),
    ({"logits_fn": "mlp"}, "`logits_fn` must be callable"),
    ({"logits_fn": lambda t, X: t.sum() * X.sum()}, "`logits_fn` must return"),
])
def test_bad_input_names_the_argument(kwargs, words):
    X, _, g = _data(6)
    args = {"logits_fn": _mlp_logits, "theta": torch.randn(39, generator=g, dtype=torch.float64), "inputs": X}
    args.update(kwargs)
    for fn in (gauss_newton_diagonal, gauss_newton_matrix):
        kw = dict(args)
        if fn is gauss_newton_matrix:
            kw.pop("chunk_size", None)
            if "chunk_size" in kwargs:
                continue
        with pytest.raises(ValueError, match=words.replace("(", r"\(")):
            fn(**kw)


def test_bad_logits_and_model():
    with pytest.raises(ValueError, match="`logits` must be 2-D"):
        softmax_output_hessian(torch.zeros(3))
    with pytest.raises(ValueError, match="`model` must be a DigitsMLP"):
        digits_gauss_newton_diagonal("mlp", torch.zeros(3))
    model = DigitsMLP(sizes=(64, 3, 10))
    with pytest.raises(ValueError, match="`theta` must be a tensor of shape"):
        digits_gauss_newton_diagonal(model, torch.zeros(5, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ one linear layer
def _layer(seed, d_out=3, d_in=4, n=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d_out, d_in, generator=g, dtype=torch.float64),
            torch.randn(d_in, n, generator=g, dtype=torch.float64))


def test_layer_hessian_is_two_x_xt_exact_and_gauss_newton():
    W, X = _layer(0)
    row_error = lambda v: (W[0] @ X - v @ X).square().sum()  # noqa: E731
    H = torch.func.hessian(row_error)(W[0])
    torch.testing.assert_close(H, 2 * X @ X.T)
    J = X.T  # (n, d_in): d(v X)/dv; the output Hessian of a squared error is 2 I
    torch.testing.assert_close(H, J.T @ (2 * torch.eye(X.shape[1], dtype=X.dtype)) @ J)
    torch.testing.assert_close(hessian_from_inputs(X.T) * X.shape[1], H)  # Chapter 4's (2/n) X X^T, summed


def test_layer_saliency_is_the_exact_change_and_wandas_score_squared():
    W, X = _layer(1)
    s = linear_layer_obd_saliency(W, X)
    assert s.shape == W.shape and s.dtype == W.dtype
    for i, j in [(0, 0), (1, 3), (2, 1)]:
        W2 = W.clone()
        W2[i, j] = 0.0
        # the objective is quadratic: OBD's prediction is the exact change
        torch.testing.assert_close(s[i, j], (W @ X - W2 @ X).square().sum())
    torch.testing.assert_close(s.float(), wanda_scores(W, X.square().sum(1)).square(), rtol=1e-5, atol=1e-6)


def test_layer_saliency_by_hand_and_leaves_inputs_alone():
    W = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    X = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 0.0]], dtype=torch.float64)  # ||X_0||^2 = 3, ||X_1||^2 = 0.25
    W0, X0 = W.clone(), X.clone()
    torch.testing.assert_close(linear_layer_obd_saliency(W, X), torch.tensor([[3.0, 1.0]], dtype=torch.float64))
    assert torch.equal(W, W0) and torch.equal(X, X0)


@pytest.mark.parametrize("weight, inputs, words", [
    (torch.zeros(3), torch.zeros(3, 2), "`weight` must be 2-D"),
    (torch.zeros(2, 3), torch.zeros(2, 3), "`inputs` must be 2-D \\[d_in, n\\] with d_in = 3"),
    (torch.zeros(2, 3), torch.zeros(3, 0), "`inputs` must be 2-D"),
    (torch.zeros(2, 3), torch.full((3, 2), float("nan")), "`inputs` contains NaN"),
])
def test_layer_saliency_bad_input(weight, inputs, words):
    with pytest.raises(ValueError, match=words):
        linear_layer_obd_saliency(weight, inputs)
