"""pruning_lab.lottery: IMP rounds equal repeated torch.nn.utils.prune; resets, rewinds and controls."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from pruning_lab import lottery as lt


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 5))


def _conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _perturb(weights, seed):
    """Stand-in for training between rounds: new values everywhere (pruned entries included)."""
    g = torch.Generator().manual_seed(seed)
    return {k: w + 0.3 * torch.randn(w.shape, generator=g) for k, w in weights.items()}


# ------------------------------------------------------------------------------------------- schedule
def test_per_round_rate_reaches_the_target():
    p = lt.per_round_rate(0.02, 17)
    assert math.isclose((1 - p) ** 17, 0.02)
    assert math.isclose(lt.per_round_rate(0.8 ** 5, 5), 0.2)
    assert lt.per_round_rate(1.0, 3) == 0.0


@pytest.mark.parametrize("args, word", [((0.0, 3), "final_remaining"), ((1.5, 3), "final_remaining"),
                                        ((0.1, 0), "rounds"), ((0.1, 2.0), "rounds"), ((True, 2), "final")])
def test_per_round_rate_bad_input(args, word):
    with pytest.raises(ValueError, match=word):
        lt.per_round_rate(*args)


def test_rounds_for():
    assert lt.rounds_for(0.8 ** 16, 0.2) == 16
    assert lt.rounds_for(0.03, 0.2) == 16  # 0.8^15 = 3.5%, 0.8^16 = 2.8%
    assert lt.rounds_for(1.0, 0.2) == 0
    with pytest.raises(ValueError, match="rate"):
        lt.rounds_for(0.5, 1.0)


def test_kept_counts_match_prune_round():
    w = lt.prunable_weights(_net(7))
    rates = {"0": 0.2, "2": 0.2, "4": 0.1}
    counts = lt.kept_counts({k: v.numel() for k, v in w.items()}, rates, 6)
    m = lt.full_masks(w)
    for r in range(6):
        assert counts[r] == {k: int(x.sum()) for k, x in m.items()}
        m = lt.prune_round(_perturb(w, r), m, rates)
    assert counts[6] == {k: int(x.sum()) for k, x in m.items()}
    with pytest.raises(ValueError, match="rates"):
        lt.kept_counts({"a": 10}, {"b": 0.2}, 2)


# ------------------------------------------------------------------------------------------- one round
def test_layer_round_counts_and_no_revival():
    w = lt.prunable_weights(_net())
    m = lt.full_masks(w)
    rates = {"0": 0.2, "2": 0.2, "4": 0.1}
    for r in range(6):
        w = _perturb(w, r)
        new = lt.prune_round(w, m, rates)
        for k in w:
            assert int(new[k].sum()) == int(m[k].sum()) - round(rates[k] * int(m[k].sum()))
            assert not (new[k] & ~m[k]).any(), "a pruned weight came back"
            alive_pruned = m[k] & ~new[k]
            if alive_pruned.any() and new[k].any():  # pruned ones are the smallest survivors
                assert w[k].abs()[alive_pruned].max() <= w[k].abs()[new[k]].min()
        m = new


def test_ties_are_deterministic_and_exact():
    w = {"a": torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0]])}
    m = lt.prune_round(w, lt.full_masks(w), 0.4)
    assert m["a"].tolist() == [[False, False, True, True, True]]  # 2 pruned, lower indices first


def test_inputs_are_not_modified():
    w = lt.prunable_weights(_net())
    m = lt.full_masks(w)
    w0, m0 = copy.deepcopy(w), copy.deepcopy(m)
    lt.prune_round(w, m, 0.3)
    lt.prune_round(w, m, 0.3, scope="global")
    lt.reset(w, m), lt.random_mask(m), lt.magnitude_mask_like(w, m), lt.random_reinit(m, w)
    for k in w:
        assert torch.equal(w[k], w0[k]) and torch.equal(m[k], m0[k])


@pytest.mark.parametrize("net, x_shape", [(_net, (1, 20)), (_conv_net, (1, 2, 6, 6))])
def test_layer_rounds_equal_repeated_l1_unstructured(net, x_shape):
    model = net(1)
    ref = copy.deepcopy(model)
    names = list(lt.prunable_weights(model))
    rates = {k: (0.1 if k == names[-1] else 0.2) for k in names}
    mods = dict(ref.named_modules())
    w, m = lt.prunable_weights(model), lt.full_masks(lt.prunable_weights(model))
    for r in range(5):
        w = _perturb(w, 10 + r)
        for k in names:  # torch: write the "trained" values into weight_orig, then prune again
            with torch.no_grad():
                (mods[k].weight_orig if r else mods[k].weight).copy_(w[k])
        ref(torch.zeros(x_shape))  # the forward pre-hook recomputes weight = weight_orig * weight_mask
        for k in names:
            tprune.l1_unstructured(mods[k], "weight", amount=rates[k])
        m = lt.prune_round(w, m, rates)
        for k in names:
            assert torch.equal(m[k], mods[k].weight_mask.bool()), f"round {r}, layer {k}"


def test_global_rounds_equal_repeated_global_unstructured():
    model = _net(2)
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())
    names = list(lt.prunable_weights(model))
    w, m = lt.prunable_weights(model), lt.full_masks(lt.prunable_weights(model))
    for r in range(5):
        w = _perturb(w, 20 + r)
        for k in names:
            with torch.no_grad():
                (mods[k].weight_orig if r else mods[k].weight).copy_(w[k])
        ref(torch.zeros(1, 20))  # recompute weight = weight_orig * weight_mask
        tprune.global_unstructured([(mods[k], "weight") for k in names], tprune.L1Unstructured, amount=0.2)
        m = lt.prune_round(w, m, 0.2, scope="global")
        for k in names:
            assert torch.equal(m[k], mods[k].weight_mask.bool()), f"round {r}, layer {k}"
    total = sum(x.numel() for x in m.values())
    kept = total
    for _ in range(5):
        kept -= round(0.2 * kept)
    assert math.isclose(lt.remaining_fraction(m), kept / total)


def test_global_differs_from_layer_on_layers_of_different_scale():
    w = {"small": torch.linspace(0.01, 0.1, 50).reshape(5, 10), "large": torch.linspace(1, 2, 50).reshape(5, 10)}
    g = lt.prune_round(w, lt.full_masks(w), 0.3, scope="global")
    assert int(g["small"].sum()) == 20 and int(g["large"].sum()) == 50  # one threshold: all 30 from `small`
    with pytest.raises(ValueError, match="all 50 remaining weights of layer 'small'"):
        lt.prune_round(w, lt.full_masks(w), 0.5, scope="global")
    layer = lt.prune_round(w, lt.full_masks(w), 0.5)
    assert int(layer["small"].sum()) == int(layer["large"].sum()) == 25


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("rate, word", [(1.0, "rate"), (-0.1, "rate"), (float("nan"), "rate"),
                                        ({"0": 0.2}, "one entry per layer"), ("0.2", "rate")])
def test_bad_rates(rate, word):
    w = lt.prunable_weights(_net())
    with pytest.raises(ValueError, match=word):
        lt.prune_round(w, lt.full_masks(w), rate)


def test_bad_masks_and_scope():
    w = lt.prunable_weights(_net())
    m = lt.full_masks(w)
    with pytest.raises(ValueError, match="same layer names"):
        lt.prune_round(w, {"0": m["0"]}, 0.2)
    with pytest.raises(ValueError, match=r"masks\['2'\].*shape"):
        lt.prune_round(w, {**m, "2": m["2"].T}, 0.2)
    with pytest.raises(ValueError, match="0/1"):
        lt.prune_round(w, {**m, "2": m["2"] * 2.0}, 0.2)
    with pytest.raises(ValueError, match="scope"):
        lt.prune_round(w, m, 0.2, scope="network")
    with pytest.raises(ValueError, match="one number with scope='global'"):
        lt.prune_round(w, m, {k: 0.2 for k in w}, scope="global")
    with pytest.raises(ValueError, match="NaN"):
        lt.prune_round({**w, "0": w["0"] * float("nan")}, m, 0.2)


def test_a_rate_that_empties_a_layer():
    w = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.randn(3, 3)}
    m = {"a": torch.tensor([[False, True]]), "b": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(ValueError, match="all 1 remaining weights of layer 'a'"):
        lt.prune_round(w, m, {"a": 0.6, "b": 0.2})
    assert lt.prune_round(w, m, {"a": 0.4, "b": 0.2})["a"].sum() == 1  # round(0.4) = 0


# ------------------------------------------------------------------------------------------- controls
def test_reset_and_rewind_keep_the_mask():
    w0 = lt.prunable_weights(_net(3))
    m = lt.prune_round(_perturb(w0, 1), lt.full_masks(w0), 0.5)
    r = lt.reset(w0, m)
    for k in w0:
        assert torch.equal(r[k][m[k]], w0[k][m[k]]) and (r[k][~m[k]] == 0).all()
    ck = {0: w0, 100: _perturb(w0, 5)}
    assert all(torch.equal(lt.rewind(ck, 0, m)[k], r[k]) for k in w0)
    assert all(torch.equal(lt.rewind(ck, 100, m)[k], ck[100][k] * m[k]) for k in w0)
    with pytest.raises(ValueError, match=r"saved iterations \[0, 100\]"):
        lt.rewind(ck, 50, m)


def test_random_mask_and_one_shot_keep_per_layer_counts():
    w = lt.prunable_weights(_net(4))
    m = lt.full_masks(w)
    for r in range(4):
        m = lt.prune_round(_perturb(w, r), m, {"0": 0.2, "2": 0.2, "4": 0.1})
    rnd = lt.random_mask(m, seed=1)
    one = lt.magnitude_mask_like(w, m)
    for k in w:
        assert int(rnd[k].sum()) == int(m[k].sum()) == int(one[k].sum())
        if 0 < int(one[k].sum()) < one[k].numel():
            assert w[k].abs()[~one[k]].max() <= w[k].abs()[one[k]].min()
    assert not all(torch.equal(rnd[k], m[k]) for k in w)
    assert all(torch.equal(lt.random_mask(m, seed=1)[k], rnd[k]) for k in w)  # seeded


def test_random_reinit_is_glorot_normal_with_the_mask():
    w = {"big": torch.zeros(400, 600)}
    m = {"big": torch.rand(400, 600, generator=torch.Generator().manual_seed(0)) < 0.5}
    r = lt.random_reinit(m, w, seed=3)["big"]
    assert (r[~m["big"]] == 0).all()
    assert math.isclose(r[m["big"]].std().item(), math.sqrt(2 / 1000), rel_tol=0.02)
    assert math.isclose(lt.glorot_normal((8, 4, 3, 3), torch.Generator().manual_seed(0), torch.float64)
                        .std().item(), math.sqrt(2 / (12 * 9)), rel_tol=0.35)


# ------------------------------------------------------------------------------------------- training
def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 20, generator=g)
    y = (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()
    return [(X[i % 4 * 16:(i % 4 + 1) * 16], y[i % 4 * 16:(i % 4 + 1) * 16]) for i in range(n)]


def test_train_masked_keeps_pruned_weights_zero_with_momentum_and_weight_decay():
    model = _net(5)
    w = lt.prunable_weights(model)
    m = lt.prune_round(w, lt.full_masks(w), 0.6)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)  # noqa: E731
    before = copy.deepcopy(model)
    trained = lt.train_masked(model, m, _batches(30), nn.functional.cross_entropy, sgd)
    tw = lt.prunable_weights(trained)
    for k in w:
        assert (tw[k][~m[k]] == 0).all()
        assert not torch.equal(tw[k][m[k]], w[k][m[k]])  # the survivors did train
    for p, q in zip(model.parameters(), before.parameters()):
        assert torch.equal(p, q), "train_masked changed its input model"


def test_momentum_revives_pruned_weights_without_the_mask_step():
    """The mistake the chapter warns about: zeroing weights once, then training with an optimizer that kept
    its momentum, moves them away from zero."""
    model = _net(6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in _batches(5):  # momentum builds up in the dense run
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    w = lt.prunable_weights(model)
    m = lt.prune_round(w, lt.full_masks(w), 0.5)
    lt.load_weights(model, lt.apply_masks(w, m))
    x, y = _batches(1, seed=1)[0]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for k, mod in dict(model.named_modules()).items():
        if k in m:
            mod.weight.grad.mul_(m[k])  # even with masked gradients ...
    opt.step()  # ... the old momentum moves them
    assert any((lt.prunable_weights(model)[k][~m[k]] != 0).any() for k in m)


def test_load_weights_checks_names_and_shapes():
    model = _net()
    w = lt.prunable_weights(model)
    with pytest.raises(ValueError, match="same layer names"):
        lt.load_weights(model, {"0": w["0"]})
    with pytest.raises(ValueError, match="model"):
        lt.prunable_weights("not a model")
    z = {k: torch.zeros_like(v) for k, v in w.items()}
    assert lt.load_weights(model, z) is model and (model[0].weight == 0).all()
