"""Tests of pruning_lab.obs (Optimal Brain Surgeon, Chapter 3): the worked example, the identities the chapter
derives, and argument checking. Small matrices only: fast."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from pruning_lab.obs import (
    OBSResult,
    best_set,
    inverse_downdate,
    obs_saliency,
    obs_set_cost,
    obs_set_update,
    obs_update,
    sequential_obs,
    set_costs,
    step_cost,
)

F64 = torch.float64

# Worked example 2 of the chapter (the source's "SparseGPT compensation" example): H^-1 given, w = 1..5.
HINV_EX = torch.tensor([[4, 0, -2, 1, 0],
                        [0, 1, 1, 0, -1],
                        [-2, 1, 3, 0, 0],
                        [1, 0, 0, 2, -1],
                        [0, -1, 0, -1, 5]], dtype=F64)
W_EX = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64)
H_EX = torch.linalg.inv(HINV_EX)


def _spd(d: int, seed: int, coupling: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    H = coupling * A @ A.T / d + torch.diag(torch.rand(d, generator=g, dtype=F64) + 0.1)
    return 0.5 * (H + H.T)


def _random(d: int, seed: int):
    H = _spd(d, seed)
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed + 100), dtype=F64)
    Hinv = torch.linalg.inv(H)
    return w, H, 0.5 * (Hinv + Hinv.T)


def _constrained_minimum(H: torch.Tensor, w: torch.Tensor, S: list[int]) -> torch.Tensor:
    """argmin 1/2 d^T H d subject to d_S = -w_S, by solving the KKT system directly (no OBS formula)."""
    d, k = len(w), len(S)
    E = torch.zeros(d, k, dtype=F64)
    E[S, torch.arange(k)] = 1.0
    K = torch.zeros(d + k, d + k, dtype=F64)
    K[:d, :d], K[:d, d:], K[d:, :d] = H, E, E.T
    rhs = torch.cat([torch.zeros(d, dtype=F64), -w[S]])
    return torch.linalg.solve(K, rhs)[:d]


# ------------------------------------------------------------------------------------------------ worked example
def test_worked_example_sequential_with_downdate():
    res = sequential_obs(W_EX, HINV_EX, order=[4, 3])  # prune w5, then w4 (0-based indices)
    expected = torch.tensor([-16 / 9, 32 / 9, 3.0, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(res.weight, expected)
    assert res.removed == [4, 3]
    torch.testing.assert_close(res.costs, torch.tensor([2.5, 125 / 18], dtype=F64))
    assert res.total_cost == pytest.approx(85 / 9)
    # the prediction is exact for a quadratic loss: 1/2 dw^T H dw of the final step
    assert float(step_cost(H_EX, res.weight - W_EX)) == pytest.approx(85 / 9)
    # and equals the one-shot cost of the set {w4, w5}
    prune = torch.tensor([False, False, False, True, True])
    assert float(obs_set_cost(W_EX, HINV_EX, prune)) == pytest.approx(85 / 9)
    torch.testing.assert_close(W_EX + obs_set_update(W_EX, HINV_EX, prune), expected)


def test_worked_example_without_downdate_reproduces_the_source():
    res = sequential_obs(W_EX, HINV_EX, order=[4, 3], downdate=False)
    torch.testing.assert_close(res.weight, torch.tensor([-1.5, 3.0, 3.0, 0.0, 0.0], dtype=F64))
    assert float(step_cost(H_EX, res.weight - W_EX)) == pytest.approx(65 / 6)  # 10.83 > 9.44


def test_worked_example_zeroing_and_best_pair():
    zeroed = W_EX.clone()
    zeroed[3:] = 0
    assert float(step_cost(H_EX, zeroed - W_EX)) == pytest.approx(97 / 3)  # 32.33
    best, cost = best_set(W_EX, HINV_EX, 2)
    assert best == (0, 1) and cost == pytest.approx(17 / 8)  # {w1, w2}: 2.125
    greedy = sequential_obs(W_EX, HINV_EX, 2)
    assert greedy.removed == [0, 1] and greedy.total_cost == pytest.approx(17 / 8)
    table = set_costs(W_EX, HINV_EX, 2)
    assert len(table) == 10 and table[0] == (best, cost)
    assert dict(table)[(3, 4)] == pytest.approx(85 / 9)
    assert [c for _, c in table] == sorted(c for _, c in table)


def test_worked_example_inverse_downdate_by_hand():
    A = inverse_downdate(HINV_EX, 4)
    assert float(A[3, 3]) == pytest.approx(9 / 5)
    torch.testing.assert_close(A[:, 3], torch.tensor([1.0, -0.2, 0.0, 1.8, 0.0], dtype=F64))
    assert torch.all(A[4] == 0) and torch.all(A[:, 4] == 0)
    # the downdated inverse feeds the next step directly: w5 is marked as gone
    w1 = W_EX + obs_update(W_EX, HINV_EX, 4)
    torch.testing.assert_close(w1, torch.tensor([1.0, 3.0, 3.0, 5.0, 0.0], dtype=F64))
    s = obs_saliency(w1, A)
    assert s[4] == float("inf") and float(s[3]) == pytest.approx(25 / (2 * 9 / 5))
    torch.testing.assert_close(w1 + obs_update(w1, A, 3), torch.tensor([-16 / 9, 32 / 9, 3.0, 0.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="already removed"):
        obs_update(w1, A, 4)
    with pytest.raises(ValueError, match="already removed"):
        inverse_downdate(A, 4)


def test_exact_fractions_with_sympy():
    """The worked example in exact arithmetic, independently of torch."""
    sp = pytest.importorskip("sympy")
    Hinv = sp.Matrix(HINV_EX.to(torch.int64).tolist())
    w = sp.Matrix([1, 2, 3, 4, 5])
    cost = w[4] ** 2 / (2 * Hinv[4, 4])
    w = w - (w[4] / Hinv[4, 4]) * Hinv[:, 4]
    Hinv = Hinv - Hinv[:, 4] * Hinv[4, :] / Hinv[4, 4]
    assert Hinv[3, 3] == sp.Rational(9, 5)
    cost += w[3] ** 2 / (2 * Hinv[3, 3])
    w = w - (w[3] / Hinv[3, 3]) * Hinv[:, 3]
    assert list(w) == [sp.Rational(-16, 9), sp.Rational(32, 9), 3, 0, 0]
    assert Fraction(str(cost)) == Fraction(85, 9)


# ------------------------------------------------------------------------------------------------ identities
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_obs_update_solves_the_constrained_problem(seed):
    w, H, Hinv = _random(6, seed)
    for q in range(6):
        dw = obs_update(w, Hinv, q)
        torch.testing.assert_close(dw, _constrained_minimum(H, w, [q]))
        assert dw[q] == -w[q]  # exactly: the pruned weight lands on zero
        assert float(obs_saliency(w, Hinv)[q]) == pytest.approx(float(step_cost(H, dw)))


def test_obs_saliency_never_exceeds_zeroing_and_equals_obd_for_diagonal_h():
    w, H, Hinv = _random(7, 3)
    zeroing = 0.5 * H.diagonal() * w**2  # OBD: zero w_q, leave the rest
    assert torch.all(obs_saliency(w, Hinv) <= zeroing * (1 + 1e-12))
    h = torch.tensor([1.0, 100.0, 1.0, 50.0, 1.0], dtype=F64)
    wd = torch.tensor([0.5, 0.02, 1.0, 0.001, 0.3], dtype=F64)
    torch.testing.assert_close(obs_saliency(wd, torch.diag(1 / h)), 0.5 * h * wd**2)
    assert torch.all(obs_update(wd, torch.diag(1 / h), 2)[[0, 1, 3, 4]] == 0)  # no coupling: nothing moves


@pytest.mark.parametrize("q", [0, 2, 5])
def test_inverse_downdate_is_the_inverse_of_the_reduced_hessian(q):
    _, H, Hinv = _random(6, 4)
    keep = [i for i in range(6) if i != q]
    expected = torch.zeros(6, 6, dtype=F64)
    expected[torch.tensor(keep)[:, None], torch.tensor(keep)] = torch.linalg.inv(H[keep][:, keep])
    A = inverse_downdate(Hinv, q)
    torch.testing.assert_close(A, expected)
    torch.testing.assert_close(A, A.T)


@pytest.mark.parametrize("seed", [5, 6])
def test_set_cost_and_update_match_the_kkt_solution_and_any_order(seed):
    w, H, Hinv = _random(7, seed)
    S = [1, 4, 5]
    prune = torch.zeros(7, dtype=torch.bool)
    prune[S] = True
    dw = obs_set_update(w, Hinv, prune)
    torch.testing.assert_close(dw, _constrained_minimum(H, w, S))
    assert torch.equal(dw[S], -w[S])
    cost = float(obs_set_cost(w, Hinv, prune))
    assert cost == pytest.approx(float(step_cost(H, dw)))
    for order in ([1, 4, 5], [5, 1, 4], [4, 5, 1]):  # the order does not matter for a fixed set
        res = sequential_obs(w, Hinv, order=order)
        torch.testing.assert_close(res.weight, w + dw)
        assert res.total_cost == pytest.approx(cost)
    assert float(obs_set_cost(w, Hinv, torch.zeros(7, dtype=torch.bool))) == 0.0


def test_greedy_is_not_always_optimal():
    """Two weights that cancel each other: each alone costs almost as much as both together."""
    H = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    w = torch.tensor([1.0, -1.0, 0.4], dtype=F64)
    Hinv = torch.linalg.inv(H)
    torch.testing.assert_close(obs_saliency(w, Hinv), torch.tensor([0.095, 0.095, 0.08], dtype=F64))
    greedy = sequential_obs(w, Hinv, 2)
    assert greedy.removed == [2, 0] and greedy.total_cost == pytest.approx(0.175)
    best, cost = best_set(w, Hinv, 2)
    assert best == (0, 1) and cost == pytest.approx(0.1)


def test_greedy_sequential_matches_brute_force_steps():
    """Each greedy step removes the weight of least OBS saliency under the current (downdated) inverse."""
    w, H, Hinv = _random(8, 7)
    res = sequential_obs(w, Hinv, 5)
    cur_w, cur_keep = w.clone(), list(range(8))
    for q, c in zip(res.removed, res.costs.tolist()):
        Hk_inv = torch.linalg.inv(H[cur_keep][:, cur_keep])
        sal = cur_w[cur_keep] ** 2 / (2 * Hk_inv.diagonal())
        j = int(torch.argmin(sal))
        assert cur_keep[j] == q and sal[j].item() == pytest.approx(c)
        full = torch.zeros(8, 8, dtype=F64)
        full[torch.tensor(cur_keep)[:, None], torch.tensor(cur_keep)] = Hk_inv
        cur_w = cur_w + obs_update(cur_w, full + torch.diag((full.diagonal() == 0).to(F64)), q)
        cur_keep.remove(q)
    torch.testing.assert_close(res.weight, cur_w)
    assert res.total_cost == pytest.approx(float(step_cost(H, res.weight - w)))


def test_sequential_prunable_snapshots_and_float32():
    w, H, Hinv = _random(6, 8)
    prunable = torch.tensor([True, False, True, True, False, True])
    res = sequential_obs(w, Hinv, 4, prunable=prunable, snapshots=[0, 2, 4])
    assert set(res.removed) == {0, 2, 3, 5}
    assert sorted(res.snapshots) == [0, 2, 4]
    torch.testing.assert_close(res.snapshots[0], w)
    torch.testing.assert_close(res.snapshots[4], res.weight)
    assert int((res.snapshots[2] == 0).sum()) == 2
    r32 = sequential_obs(w.float(), Hinv.float(), 2)
    assert r32.weight.dtype == torch.float32 and r32.costs.dtype == torch.float32
    assert obs_saliency(w.float(), Hinv.float()).dtype == torch.float32
    assert isinstance(res, OBSResult)
    assert res.hessian_inv.shape == (6, 6) and torch.all(res.hessian_inv[0] == 0)
    with pytest.raises(ValueError, match="k"):
        sequential_obs(w, Hinv, 3, prunable=torch.tensor([True, False, False, False, False, True]))


def test_functions_do_not_modify_their_inputs():
    w, H, Hinv = _random(5, 9)
    w0, Hinv0 = w.clone(), Hinv.clone()
    prune = torch.tensor([True, False, True, False, False])
    obs_update(w, Hinv, 1)
    obs_saliency(w, Hinv)
    inverse_downdate(Hinv, 2)
    obs_set_cost(w, Hinv, prune)
    obs_set_update(w, Hinv, prune)
    sequential_obs(w, Hinv, 3)
    sequential_obs(w, Hinv, order=[4, 0], downdate=False)
    best_set(w, Hinv, 2)
    assert torch.equal(w, w0) and torch.equal(Hinv, Hinv0)


def test_lists_are_accepted():
    assert obs_update([1.0, 2.0], [[1.0, 0.0], [0.0, 2.0]], 0).tolist() == [-1.0, 0.0]
    assert obs_saliency([1.0, 2.0], [[1.0, 0.0], [0.0, 2.0]]).tolist() == [0.5, 1.0]


# ------------------------------------------------------------------------------------------------ validation
def test_bad_arguments_raise_value_errors_naming_the_argument():
    w, H, Hinv = _random(4, 10)
    with pytest.raises(ValueError, match="weight"):
        obs_saliency(torch.ones(2, 2, dtype=F64), Hinv)
    with pytest.raises(ValueError, match="hessian_inv"):
        obs_saliency(w, Hinv[:3])
    with pytest.raises(ValueError, match="hessian_inv"):
        obs_saliency(w, -Hinv)  # non-positive diagonal: not the inverse of a positive-definite H
    with pytest.raises(ValueError, match="hessian_inv"):
        inverse_downdate(torch.ones(2, 3), 0)
    for bad_q in (-1, 4, 1.5, True):
        with pytest.raises(ValueError, match="q"):
            obs_update(w, Hinv, bad_q)
        with pytest.raises(ValueError, match="q"):
            inverse_downdate(Hinv, bad_q)
    with pytest.raises(ValueError, match="prune"):
        obs_set_cost(w, Hinv, torch.ones(4))
    with pytest.raises(ValueError, match="prune"):
        obs_set_update(w, Hinv, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="hessian"):
        step_cost(torch.eye(3), torch.ones(4))
    with pytest.raises(ValueError, match="order"):
        sequential_obs(w, Hinv, 2, order=[0, 1])  # both k and order
    with pytest.raises(ValueError, match="order"):
        sequential_obs(w, Hinv)  # neither
    with pytest.raises(ValueError, match="order"):
        sequential_obs(w, Hinv, order=[0, 0])
    with pytest.raises(ValueError, match="order"):
        sequential_obs(w, Hinv, order=[7])
    with pytest.raises(ValueError, match="k"):
        sequential_obs(w, Hinv, 5)
    with pytest.raises(ValueError, match="snapshots"):
        sequential_obs(w, Hinv, 2, snapshots=[3])
    with pytest.raises(ValueError, match="prunable"):
        sequential_obs(w, Hinv, 2, prunable=torch.ones(4))
    with pytest.raises(ValueError, match="k"):
        best_set(w, Hinv, 0)
    big_w, _, big_inv = _random(40, 11)
    with pytest.raises(ValueError, match="subsets"):
        set_costs(big_w, big_inv, 20)
