"""Tests of pruning_lab.obs_experiment (the experiment of Chapter 3). A 64-4-10 MLP (310 parameters): fast."""
from __future__ import annotations

import pytest
import torch

from pruning_lab.digits import DigitsMLP
from pruning_lab.obs import obs_set_update, sequential_obs
from pruning_lab.obs_experiment import (
    METHOD_LABELS,
    METHODS,
    HessianSetup,
    cost_scaling,
    greedy_vs_best,
    prepare,
    prune_sweep,
    zeroing_scores,
)


@pytest.fixture(scope="module")
def small():
    """A 64-4-10 tanh MLP trained to a strict minimum (300 L-BFGS iterations, about a second)."""
    model = DigitsMLP(sizes=(64, 4, 10))
    theta = model.train(model.init(0), max_iter=300)
    return model, theta, prepare(model, theta)


def test_prepare(small):
    model, theta, s = small
    assert isinstance(s, HessianSetup)
    d = model.num_params
    assert s.hessian.shape == (d, d) and s.hessian_inv.shape == (d, d)
    torch.testing.assert_close(s.hessian_inv @ s.hessian, torch.eye(d, dtype=torch.float64), atol=1e-8, rtol=0)
    assert s.min_eig > 0 and s.grad_norm < 1e-2
    assert torch.equal(s.prunable, model.is_weight) and s.index.numel() == 4 * 64 + 10 * 4
    assert s.loss == pytest.approx(float(model.loss(theta)))
    assert set(s.seconds) == {"hessian", "inverse"} and all(v >= 0 for v in s.seconds.values())
    assert not s.theta is theta


def test_prepare_rejects_a_point_that_is_not_a_minimum():
    model = DigitsMLP(sizes=(64, 4, 10))
    early = model.train(model.init(0), max_iter=100)  # the Hessian still has a negative eigenvalue here
    with pytest.raises(ValueError, match="not a strict minimum"):
        prepare(model, early)
    with pytest.raises(ValueError, match="theta"):
        prepare(model, early[:-1])
    with pytest.raises(ValueError, match="model"):
        prepare(None, early)


def test_zeroing_scores(small):
    _, theta, s = small
    w = theta[s.index]
    torch.testing.assert_close(zeroing_scores(s, "magnitude"), w.abs())
    torch.testing.assert_close(zeroing_scores(s, "obd"), 0.5 * s.hessian.diagonal()[s.index] * w**2)
    obs = zeroing_scores(s, "obs_no_update")
    torch.testing.assert_close(obs, w**2 / (2 * s.hessian_inv.diagonal()[s.index]))
    assert torch.all(obs <= zeroing_scores(s, "obd") * (1 + 1e-9))  # compensation never costs more
    with pytest.raises(ValueError, match="method"):
        zeroing_scores(s, "obs")
    with pytest.raises(ValueError, match="setup"):
        zeroing_scores(None, "obd")


def test_prune_sweep(small):
    model, theta, s = small
    sparsities = [0.0, 0.2, 0.5, 0.8]
    res = prune_sweep(model, s, sparsities)
    assert list(res) == list(METHODS) and set(METHOD_LABELS) == set(METHODS)
    n = s.index.numel()
    for m, r in res.items():
        assert r["theta"].shape == (4, model.num_params)
        assert r["loss"].shape == r["data_loss"].shape == r["accuracy"].shape == r["predicted"].shape == (4,)
        for i, sp in enumerate(sparsities):
            t = r["theta"][i]
            assert int((t[s.index] == 0).sum()) == int(n * sp)  # exactly int(n * s) weights removed
            assert r["loss"][i].item() == pytest.approx(float(model.loss(t)))
            assert r["accuracy"][i].item() == pytest.approx(model.accuracy(t))
        assert r["loss"][0].item() == pytest.approx(s.loss)  # sparsity 0 changes nothing
        assert r["seconds"] >= 0
        if m != "obs":  # zeroing methods leave the biases and the kept weights alone
            kept = r["theta"][-1] != 0
            torch.testing.assert_close(r["theta"][-1][kept], theta[kept])
    # OBS moves the biases too, and its quadratic prediction is the sum of its step costs
    assert not torch.equal(res["obs"]["theta"][1][~s.prunable], theta[~s.prunable])
    seq = sequential_obs(theta, s.hessian_inv, int(n * 0.5), prunable=s.prunable)
    torch.testing.assert_close(res["obs"]["theta"][2], seq.weight)
    dw = seq.weight - theta
    assert float(0.5 * dw @ s.hessian @ dw) == pytest.approx(seq.total_cost, rel=1e-6, abs=1e-12)
    assert res["obs"]["predicted"][2].item() == pytest.approx(seq.total_cost + float(s.grad @ dw), rel=1e-6)
    # for its own set, OBS's update is the optimal step of the quadratic model
    prune = res["obs"]["theta"][2] == 0
    prune &= s.prunable
    torch.testing.assert_close(theta + obs_set_update(theta, s.hessian_inv, prune), seq.weight)
    # with the update, the quadratic model predicts less damage than any zeroing method at 50%
    assert all(res["obs"]["predicted"][2] < res[m]["predicted"][2] for m in METHODS if m != "obs")
    # one method only, deterministic
    again = prune_sweep(model, s, sparsities, methods=["obs"])
    assert list(again) == ["obs"] and torch.equal(again["obs"]["theta"], res["obs"]["theta"])


def test_prune_sweep_validates(small):
    model, _, s = small
    with pytest.raises(ValueError, match="sparsities"):
        prune_sweep(model, s, [0.5, 0.2])
    with pytest.raises(ValueError, match="sparsities"):
        prune_sweep(model, s, [1.0])
    with pytest.raises(ValueError, match="sparsities"):
        prune_sweep(model, s, [])
    with pytest.raises(ValueError, match="methods"):
        prune_sweep(model, s, [0.5], methods=["wanda"])
    with pytest.raises(ValueError, match="setup"):
        prune_sweep(model, "setup", [0.5])


def test_cost_scaling():
    res = cost_scaling([8, 16], sparsity=0.5)
    assert res["size"].tolist() == [8, 16]
    for key in ("magnitude", "obd", "inverse", "obs_no_update", "obs"):
        assert res[key].shape == (2,) and bool((res[key] >= 0).all())
    with pytest.raises(ValueError, match="sizes"):
        cost_scaling([1])
    with pytest.raises(ValueError, match="sparsity"):
        cost_scaling([8], sparsity=1.5)


def test_greedy_vs_best():
    res = greedy_vs_best(num_problems=12, d=6, k=3, seed=0)
    assert res["greedy"].shape == res["best"].shape == res["same_set"].shape == (12,)
    assert bool((res["greedy"] >= res["best"] * (1 - 1e-12)).all())  # the best set is never beaten
    same = res["same_set"]
    torch.testing.assert_close(res["greedy"][same], res["best"][same])
    assert bool((res["greedy"][~same] > res["best"][~same]).all())
    assert torch.equal(greedy_vs_best(num_problems=12, d=6, k=3, seed=0)["greedy"], res["greedy"])
    with pytest.raises(ValueError, match="k"):
        greedy_vs_best(num_problems=2, d=4, k=4)
    with pytest.raises(ValueError, match="num_problems"):
        greedy_vs_best(num_problems=0)
