"""Chapter 4's teaching references: naive sequential OBS, the downdated inverses and the Cholesky identity,
block mask selection, the layer objective, and their agreement with the fast ``sparsegpt_prune``."""
import math

import pytest
import torch

from pruning_lab.layerwise_obs import (
    best_time,
    dampen_hessian,
    downdated_inverses,
    fit_power_law,
    layer_reconstruction_error,
    obs_row,
    random_layer,
    select_block_mask,
    sequential_obs,
    sequential_obs_cholesky,
    upper_factor_by_downdating,
)
from pruning_lab.nm import check_nm
from pruning_lab.sparsegpt import hessian_from_inputs, inverse_hessian_factor, sparsegpt_prune
from test_pruning_rules import naive_sequential_obs  # the independent reference: row by row, full inverse

# The worked example of Chapter 3 (seed 001, example 2): a row and its inverse Hessian.
W_ROW = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
HINV_EX = torch.tensor([[4, 0, -2, 1, 0], [0, 1, 1, 0, -1], [-2, 1, 3, 0, 0], [1, 0, 0, 2, -1], [0, -1, 0, -1, 5]],
                       dtype=torch.float64)


# ------------------------------------------------------------------------------------------ the layer objective
def test_reconstruction_error_is_the_quadratic_form_of_H():
    W, X = random_layer(4, 6, 30, seed=0)
    Wp = W.clone()
    Wp[:, ::2] = 0
    err = layer_reconstruction_error(W, Wp, X)
    direct = float(((W @ X.T - Wp @ X.T) ** 2).sum())
    assert math.isclose(err, direct, rel_tol=1e-12)
    H = hessian_from_inputs(X)  # (2/n) X^T X
    dW = W - Wp
    quad = float(torch.einsum("ri,ij,rj->", dW, H, dW)) * X.shape[0] / 2  # sum_r dw_r (X^T X) dw_r
    assert math.isclose(err, quad, rel_tol=1e-10)
    assert layer_reconstruction_error(W, W, X) == 0.0


def test_random_layer_is_seeded_and_shaped():
    W, X = random_layer(3, 8, 20, seed=5)
    W2, X2 = random_layer(3, 8, 20, seed=5)
    assert W.shape == (3, 8) and X.shape == (20, 8) and W.dtype == torch.float64
    assert torch.equal(W, W2) and torch.equal(X, X2)
    W3, _ = random_layer(3, 8, 20, seed=6)
    assert not torch.equal(W, W3)
    _, Xo = random_layer(3, 8, 200, seed=5, outliers=True)
    norms = Xo.norm(dim=0)
    assert norms.max() / norms.min() > 10  # a few inputs are much larger: outlier features
    assert random_layer(2, 4, 5, seed=0, dtype=torch.float32)[0].dtype == torch.float32


# ------------------------------------------------------------------------------------------ dampening, dead inputs
def test_dampen_hessian_matches_the_fast_path():
    _, X = random_layer(1, 6, 40, seed=1)
    X[:, 2] = 0  # a dead input
    H = hessian_from_inputs(X)
    Hc = H.clone()
    Hd, dead = dampen_hessian(H, 0.01)
    assert torch.equal(H, Hc)  # untouched
    assert dead.tolist() == [False, False, True, False, False, False]
    diag = H.diagonal().clone()
    diag[2] = 1.0
    expected = H.clone()
    expected[2, 2] = 1.0
    expected += 0.01 * diag.mean() * torch.eye(6, dtype=H.dtype)
    torch.testing.assert_close(Hd, expected)
    U, dead_fast = inverse_hessian_factor(H, 0.01)
    assert torch.equal(dead, dead_fast)
    torch.testing.assert_close(U.T @ U, torch.linalg.inv(Hd))


# ------------------------------------------------------------------------------------------ one row of OBS
def test_obs_row_on_the_worked_example():
    # prune w4, w5 in the fixed left-to-right order: columns 1-3 are frozen first, so nothing can compensate
    prune45 = torch.tensor([False, False, False, True, True])
    out = obs_row(W_ROW, HINV_EX, prune45)
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0], dtype=torch.float64))
    # prune w1, w2: they come first, so every other weight compensates; this is the exact OBS optimum for the set
    prune12 = torch.tensor([True, True, False, False, False])
    out = obs_row(W_ROW, HINV_EX, prune12)
    S = prune12
    dw = -torch.linalg.solve(HINV_EX[S][:, S], W_ROW[S])  # Lagrange multipliers
    optimum = W_ROW + HINV_EX[:, S] @ dw
    torch.testing.assert_close(out, optimum)
    assert out[:2].abs().max() == 0


def test_obs_row_is_pure_and_exact_zero():
    prune = torch.tensor([True, False, True, False, True])
    w, h = W_ROW.clone(), HINV_EX.clone()
    out = obs_row(w, h, prune)
    assert torch.equal(w, W_ROW) and torch.equal(h, HINV_EX)
    assert (out[prune] == 0).all() and out.dtype == W_ROW.dtype


def test_obs_row_with_the_full_inverse_compensates_only_to_the_right():
    _, X = random_layer(1, 7, 50, seed=2)
    Hinv = torch.linalg.inv(hessian_from_inputs(X))
    w = torch.randn(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    prune = torch.tensor([False, False, True, False, True, False, False])
    out = obs_row(w, Hinv, prune)
    assert torch.equal(out[:2], w[:2])  # columns before the first pruned one never move


# ------------------------------------------------------------------------------------------ naive vs fast
@pytest.mark.parametrize("d_out, d_in, blocksize, nm, dead", [(6, 16, 4, None, False), (5, 24, 8, None, True),
                                                              (4, 16, 8, (2, 4), False), (3, 32, 128, (4, 8), True),
                                                              (7, 20, 128, None, False)])
def test_sparsegpt_equals_naive_sequential_obs(d_out, d_in, blocksize, nm, dead):
    W, X = random_layer(d_out, d_in, 64, seed=d_in)
    if dead:
        X[:, 1] = 0
    H = hessian_from_inputs(X)
    kw = {"n": nm[0], "m": nm[1]} if nm else {}
    fast = sparsegpt_prune(W, H, 0.5, blocksize=blocksize, **kw)
    prune = fast == 0
    naive = sequential_obs(W, H, prune)
    torch.testing.assert_close(naive, fast, rtol=0, atol=1e-9)
    torch.testing.assert_close(naive, naive_sequential_obs(W, H, prune), rtol=0, atol=1e-10)
    torch.testing.assert_close(sequential_obs_cholesky(W, H, prune), fast, rtol=0, atol=1e-9)
    if nm:
        assert check_nm(fast, *nm)


def test_sequential_obs_is_pure_and_checks_shapes():
    W, X = random_layer(3, 8, 30, seed=3)
    H = hessian_from_inputs(X)
    prune = torch.zeros(3, 8, dtype=torch.bool)
    prune[:, ::2] = True
    Wc, Hc, pc = W.clone(), H.clone(), prune.clone()
    out = sequential_obs(W, H, prune)
    assert torch.equal(W, Wc) and torch.equal(H, Hc) and torch.equal(prune, pc)
    assert (out[prune] == 0).all()
    # with nothing pruned, nothing moves
    torch.testing.assert_close(sequential_obs(W, H, torch.zeros_like(prune)), W, rtol=0, atol=0)


def test_obs_beats_plain_zeroing_on_the_layer_objective():
    W, X = random_layer(8, 16, 100, seed=4)
    H = hessian_from_inputs(X)
    prune = torch.rand(8, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    zeroed = W.masked_fill(prune, 0.0)
    obs = sequential_obs(W, H, prune, percdamp=0.0)
    assert layer_reconstruction_error(W, obs, X) < layer_reconstruction_error(W, zeroed, X)


# ------------------------------------------------------------------------------------------ the Cholesky identity
def test_downdated_inverses_are_inverses_of_the_trailing_blocks():
    _, X = random_layer(1, 6, 40, seed=7)
    H = hessian_from_inputs(X)
    Hinv = torch.linalg.inv(H)
    seq = downdated_inverses(Hinv)
    assert seq.shape == (6, 6, 6)
    torch.testing.assert_close(seq[0], Hinv)
    for j in range(6):
        padded = torch.zeros(6, 6, dtype=H.dtype)
        padded[j:, j:] = torch.linalg.inv(H[j:, j:])
        torch.testing.assert_close(seq[j], padded)


def test_upper_factor_by_downdating_is_the_cholesky_factor():
    _, X = random_layer(1, 6, 40, seed=3)
    H = hessian_from_inputs(X)
    Hinv = torch.linalg.inv(H)
    U = upper_factor_by_downdating(Hinv)
    torch.testing.assert_close(U, torch.linalg.cholesky(Hinv, upper=True))
    U_fast, _ = inverse_hessian_factor(H, percdamp=0.0)
    torch.testing.assert_close(U, U_fast)
    seq = downdated_inverses(Hinv)
    for j in range(6):
        torch.testing.assert_close(U[j, j:], seq[j][j, j:] / seq[j][j, j].sqrt())
    assert torch.equal(U, torch.triu(U))


# ------------------------------------------------------------------------------------------ block mask
def test_block_mask_matches_the_first_block_of_sparsegpt():
    W, X = random_layer(6, 32, 80, seed=8, outliers=True)
    H = hessian_from_inputs(X)
    U, _ = inverse_hessian_factor(H)
    fast = sparsegpt_prune(W, H, 0.5, blocksize=8)
    mask = select_block_mask(W[:, :8], U.diagonal()[:8], 0.5)
    assert torch.equal(mask, fast[:, :8] == 0)  # the first block sees the original weights
    assert int(mask.sum()) == int(6 * 8 * 0.5)
    nm_fast = sparsegpt_prune(W, H, n=2, m=4, blocksize=8)
    nm_mask = select_block_mask(W[:, :4], U.diagonal()[:4], n=2, m=4)
    assert torch.equal(nm_mask, nm_fast[:, :4] == 0)


def test_block_mask_is_by_obs_saliency_over_the_whole_block():
    w = torch.tensor([[1.0, 0.5], [0.2, 3.0]], dtype=torch.float64)
    d = torch.tensor([1.0, 10.0], dtype=torch.float64)  # scores w^2/d^2: [[1, 0.0025], [0.04, 0.09]]
    assert select_block_mask(w, d, 0.5).tolist() == [[False, True], [True, False]]
    # not per row: the 2 lowest of the block may share a row
    w2 = torch.tensor([[0.1, 0.2], [5.0, 6.0]], dtype=torch.float64)
    assert select_block_mask(w2, torch.ones(2, dtype=torch.float64), 0.5).tolist() == [[True, True], [False, False]]
    # ties: the lower flat index is pruned first
    assert select_block_mask(torch.ones(2, 2), torch.ones(2), 0.25).tolist() == [[True, False], [False, False]]
    nm = select_block_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), torch.ones(4), n=2, m=4)
    assert nm.tolist() == [[False, True, False, True]]


# ------------------------------------------------------------------------------------------ timing helpers
def test_fit_power_law_recovers_an_exponent():
    sizes = [32, 64, 128, 256]
    times = [2e-9 * s**3 for s in sizes]
    k, c = fit_power_law(sizes, times)
    assert math.isclose(k, 3.0, rel_tol=1e-9) and math.isclose(c, 2e-9, rel_tol=1e-6)


def test_best_time_returns_the_minimum_of_positive_times():
    calls = []
    t = best_time(lambda: calls.append(1), repeat=3)
    assert len(calls) == 3 and t >= 0


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: layer_reconstruction_error(torch.ones(2, 3), torch.ones(2, 4), torch.ones(5, 3)), "pruned"),
        (lambda: layer_reconstruction_error(torch.ones(2, 3), torch.ones(2, 3), torch.ones(5, 4)), "x"),
        (lambda: dampen_hessian(torch.ones(2, 3)), "hessian"),
        (lambda: dampen_hessian(torch.eye(3), percdamp=1.5), "percdamp"),
        (lambda: obs_row(torch.ones(3), torch.eye(4), torch.zeros(3, dtype=torch.bool)), "hessian_inv"),
        (lambda: obs_row(torch.ones(3), torch.eye(3), torch.zeros(4, dtype=torch.bool)), "prune"),
        (lambda: obs_row(torch.ones(3), torch.eye(3), torch.zeros(3)), "prune"),
        (lambda: sequential_obs(torch.ones(2, 3), torch.eye(3), torch.zeros(2, 4, dtype=torch.bool)), "prune"),
        (lambda: sequential_obs(torch.ones(3), torch.eye(3), torch.zeros(3, dtype=torch.bool)), "weight"),
        (lambda: downdated_inverses(torch.ones(2, 3)), "hessian_inv"),
        (lambda: upper_factor_by_downdating(-torch.eye(3)), "hessian_inv"),
        (lambda: select_block_mask(torch.ones(2, 3), torch.ones(4)), "u_diag"),
        (lambda: select_block_mask(torch.ones(2, 3), torch.ones(3), 1.0), "sparsity"),
        (lambda: select_block_mask(torch.ones(2, 6), torch.ones(6), n=2, m=4), "m"),
        (lambda: fit_power_law([1, 2], [1.0]), "times"),
        (lambda: fit_power_law([1, 2], [1.0, -1.0]), "times"),
        (lambda: random_layer(0, 3, 4, seed=0), "d_out"),
        (lambda: best_time(lambda: None, repeat=0), "repeat"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
