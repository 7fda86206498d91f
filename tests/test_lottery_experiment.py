"""The batched lottery-ticket experiment of Chapter 6 (small configurations: seconds)."""
import numpy as np
import pytest
import torch

from pruning_lab import lottery as lt
from pruning_lab import lottery_experiment as lx


@pytest.fixture(scope="module")
def small():
    cfg = lx.small_config()
    return cfg, lx.load_data(cfg), lx.run(cfg)


def test_splits_are_disjoint_and_sized(small):
    cfg, data, _ = small
    assert len(data.y_test) == cfg.n_test and len(data.y_val) == cfg.n_val
    assert len(data.y_train) == 1797 - cfg.n_test - cfg.n_val
    rows = lambda X: {tuple(r.tolist()) for r in X}  # noqa: E731
    train, val, test = rows(data.X_train), rows(data.X_val), rows(data.X_test)  # the 1,797 images are distinct
    assert not (train & val or train & test or val & test)
    assert 0.0 <= float(data.X_train.min()) and float(data.X_train.max()) <= 1.0


def test_remaining_follows_the_per_layer_rates(small):
    cfg, _, res = small
    sizes = [(20, 64), (10, 20), (10, 10)]
    kept = [o * i for o, i in sizes]
    for level in res.levels[1:]:
        kept = [k - round(r * k) for k, r in zip(kept, cfg.rates)]
        assert level.remaining == pytest.approx(sum(kept) / sum(o * i for o, i in sizes))
        assert level.layer_remaining == pytest.approx(tuple(k / (o * i) for k, (o, i) in zip(kept, sizes)))


def test_arms_use_the_masks_they_claim(small):
    _, _, res = small
    for level in res.levels[1:]:
        m = level.masks
        assert all(torch.equal(a, b) for a, b in zip(m["ticket"], m["reinit"]))
        for arm in ("random_mask", "one_shot", "rewind", "no_reset"):
            assert [int(x.sum()) for x in m[arm]] == [int(x.sum()) for x in m["ticket"]]
        assert not all(torch.equal(a, b) for a, b in zip(m["ticket"], m["random_mask"]))


def test_ticket_masks_are_imp_rounds_of_the_trained_ticket(small):
    cfg, _, res = small
    rates = dict(zip(lx.LAYERS, cfg.rates))
    for prev, cur in zip(res.levels[:-1], res.levels[1:]):
        w = dict(zip(lx.LAYERS, prev.ticket_trained))
        m = dict(zip(lx.LAYERS, prev.masks["ticket" if prev.remaining < 1 else "dense"]))
        new = lt.prune_round(w, m, rates)
        assert all(torch.equal(new[k], x) for k, x in zip(lx.LAYERS, cur.masks["ticket"]))


def test_stat_and_early_stopping(small):
    cfg, _, res = small
    x, mean, std = res.stat("ticket")
    assert x[0] == 1.0 and len(x) == cfg.rounds + 1 and (x[1:] < x[:-1]).all()
    assert ((0 <= mean) & (mean <= 1)).all() and (std >= 0).all()
    _, es, _ = res.stat("reinit", "es_iter")
    assert ((es >= cfg.eval_every) & (es <= cfg.iterations)).all()
    with pytest.raises(ValueError, match="what"):
        res.stat("ticket", "loss")
    with pytest.raises(ValueError, match="arm"):
        res.stat("winner")


def test_controls_every_other_level():
    cfg = lx.small_config(control_every=2, rounds=3, iterations=20, eval_every=10)
    res = lx.run(cfg)
    assert [sorted(lv.test_acc) for lv in res.levels[1:]] == [
        ["no_reset", "rewind", "ticket"], sorted(lx.ARMS), sorted(lx.ARMS)]  # levels 2 and 3 (the last)
    x, mean, _ = res.stat("one_shot")
    assert len(x) == len(mean) == 3 and x[0] == 1.0
    assert res.values("ticket").shape == (4, 2)


def test_batched_training_equals_one_network_at_a_time():
    cfg = lx.small_config(iterations=20, eval_every=10)
    data = lx.load_data(cfg)
    sizes = lx._sizes(cfg, 64)
    W, b = lx._init(sizes, [0, 1])
    masks = [torch.rand(w.shape, generator=torch.Generator().manual_seed(3)) < 0.6 for w in W]
    both = lx.train_batched(W, b, masks, data, [0, 1], cfg)
    for s in (0, 1):
        one = lx.train_batched([w[s:s + 1] for w in W], [c[s:s + 1] for c in b], [m[s:s + 1] for m in masks],
                               data, [s], cfg)
        for x, y in zip(both.W, one.W):
            torch.testing.assert_close(x[s], y[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(both.val_loss[:, s], one.val_loss[:, 0], rtol=1e-4, atol=1e-5)
    for w, m in zip(both.W, masks):
        assert (w[~m] == 0).all()


def test_early_stopping_is_the_minimum_validation_loss():
    cfg = lx.small_config(iterations=60, eval_every=10)
    data = lx.load_data(cfg)
    W, b = lx._init(lx._sizes(cfg, 64), [0, 1, 2])
    run = lx.train_batched(W, b, [torch.ones_like(w, dtype=torch.bool) for w in W], data, [0, 1, 2], cfg)
    assert torch.equal(run.es_iter, run.iters[run.val_loss.argmin(0)])
    assert ((run.test_acc > 0) & (run.test_acc <= 1)).all()


def test_train_batched_does_not_modify_its_inputs():
    cfg = lx.small_config(iterations=20, eval_every=10)
    data = lx.load_data(cfg)
    W, b = lx._init(lx._sizes(cfg, 64), [0])
    W0 = [w.clone() for w in W]
    lx.train_batched(W, b, [torch.ones_like(w, dtype=torch.bool) for w in W], data, [0], cfg)
    assert all(torch.equal(x, y) for x, y in zip(W, W0))


@pytest.mark.parametrize("kw, word", [(dict(dataset="cifar"), "dataset"), (dict(arms=("ticket", "x")), "arms"),
                                      (dict(rewind_iteration=15), "rewind_iteration"),
                                      (dict(iterations=45), "iterations"), (dict(rates=(0.2,)), "rates"),
                                      (dict(control_every=0), "control_every")])
def test_bad_config(kw, word):
    with pytest.raises(ValueError, match=word):
        lx.small_config(**kw)


def test_paper_config_and_mnist_loader(monkeypatch):
    cfg = lx.LotteryConfig.paper(n_val=10, n_test=10)
    assert (cfg.dataset, cfg.iterations, cfg.batch, cfg.lr) == ("mnist", 50_000, 60, 1.2e-3)
    assert (lx.LotteryConfig(dataset="mnist").n_test, lx.LotteryConfig().n_test) == (10000, 500)

    class Fake:
        data = np.random.default_rng(0).integers(0, 256, size=(50, 784)).astype(float)
        target = np.array([str(i % 10) for i in range(50)], dtype=object)

    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", lambda *a, **k: Fake)
    data = lx.load_data(cfg)
    assert data.X_train.shape == (30, 784) and float(data.X_train.max()) <= 1.0
    assert data.y_train.dtype == torch.long


def test_paired_differences(small):
    cfg, _, res = small
    x, d, hw = lx.paired(res, "ticket", "dense")
    assert len(x) == cfg.rounds and (hw >= 0).all()
    manual = res.levels[2].test_acc["ticket"].double() - res.levels[0].test_acc["dense"].double()
    assert d[1] == pytest.approx(manual.mean().item())
    _, d2, _ = lx.paired(res, "ticket", "reinit", level=2)
    manual = res.levels[2].test_acc["ticket"].double() - res.levels[2].test_acc["reinit"].double()
    assert d2.item() == pytest.approx(manual.mean().item())
    x0, d0, hw0 = lx.paired(res, "ticket", "ticket")
    assert (d0 == 0).all() and (hw0 == 0).all()
