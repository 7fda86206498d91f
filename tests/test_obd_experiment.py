"""Tests of pruning_lab.obd_experiment (the experiments of Chapter 2). Small models and few iterations: fast."""
from __future__ import annotations

import pytest
import torch

from pruning_lab.digits import DigitsMLP
from pruning_lab.obd_experiment import (
    CRITERIA,
    analyse_point,
    compare_seeds,
    coupled_pairs,
    early_numbers,
    figure_slider,
    image_loss_changes,
    layer_stats,
    mean_range,
    Table,
    png_bytes,
    prune_mask,
    rank_correlations,
    relu_rescale,
    rescaling_demo,
    rescaling_numbers,
    seed_numbers,
    set_growth,
    single_thread,
    spearman,
    sparsity_sweep,
    train_digits,
    trained_numbers,
    weight_name,
)
import pruning_lab.obd_experiment as ox


@pytest.fixture(scope="module")
def small():
    """A 64-4-10 tanh MLP after a few L-BFGS steps (310 parameters: exact Hessian in milliseconds)."""
    model = DigitsMLP(sizes=(64, 4, 10))
    theta = model.train(model.init(0), max_iter=30)
    return model, theta, analyse_point(model, theta)


# ------------------------------------------------------------------------------------------------ training
def test_train_digits_is_deterministic_and_validates():
    m1, t1 = train_digits(0, max_iter=3)
    _, t2 = train_digits(0, max_iter=3)
    assert m1.sizes == (64, 16, 10) and t1.shape == (m1.num_params,)
    assert torch.equal(t1, t2)
    with pytest.raises(ValueError, match="seed"):
        train_digits(-1)
    with pytest.raises(ValueError, match="max_iter"):
        train_digits(0, max_iter=0)
    with pytest.raises(ValueError, match="activation"):
        train_digits(0, max_iter=1, activation="gelu")


# ------------------------------------------------------------------------------------------------ analyse_point
def test_analyse_point_quantities(small):
    model, theta, p = small
    n = sum(shape[0] * shape[1] for _, shape, _ in model.slices)
    assert p.index.shape == (n,) and bool(model.is_weight[p.index].all())
    assert torch.equal(p.layer, model.layer_of[p.index])
    w, g, h = theta[p.index], p.grad[p.index], p.hessian.diagonal()[p.index]
    torch.testing.assert_close(p.weight, w)
    torch.testing.assert_close(p.hessian_diag, h)
    torch.testing.assert_close(p.magnitude, w.abs())
    torch.testing.assert_close(p.obd, 0.5 * h * w**2)
    torch.testing.assert_close(p.taylor, -g * w + 0.5 * h * w**2)
    torch.testing.assert_close(p.hessian, p.hessian.T)
    # the measured change of zeroing one weight, computed directly
    for k in (0, 7, n - 1):
        zeroed = theta.clone()
        zeroed[p.index[k]] = 0.0
        expected = model.loss(zeroed) - model.loss(theta)
        torch.testing.assert_close(p.actual[k], expected)
    assert p.grad_norm == pytest.approx(float(p.grad.norm()))
    assert 0.0 <= p.accuracy <= 1.0 and p.loss > p.data_loss


def test_analyse_point_does_not_mutate_and_validates(small):
    model, theta, _ = small
    before = theta.clone()
    p = analyse_point(model, theta)
    assert torch.equal(theta, before)
    assert p.theta is not theta
    with pytest.raises(ValueError, match="theta"):
        analyse_point(model, theta[:-1])
    with pytest.raises(ValueError, match="model"):
        analyse_point("not a model", theta)


def test_taylor_predicts_small_steps_near_exactly(small):
    """The quadratic prediction is exact up to third order: for a tiny weight the error is negligible."""
    _, _, p = small
    k = int(torch.argmin(p.magnitude))
    assert abs(float(p.taylor[k] - p.actual[k])) < 1e-9


# ------------------------------------------------------------------------------------------------ statistics
def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (200,), generator=g).double()  # many ties
    y = x + torch.randn(200, generator=g, dtype=torch.float64) * 3
    assert spearman(x, y) == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [10, 20, 300]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="constant"):
        spearman([1, 1, 1], [1, 2, 3])


def test_rank_correlations_and_layer_stats(small):
    _, _, p = small
    r = rank_correlations(p)
    assert set(r) == {"magnitude", "obd", "taylor"}
    assert all(-1.0 <= v <= 1.0 for v in r.values())
    st = layer_stats(p)
    assert st["count"].tolist() == [256.0, 40.0]
    torch.testing.assert_close(st["mean_abs_w"][1], p.magnitude[p.layer == 1].mean())
    sel = p.layer == 1
    assert rank_correlations(p, sel)["obd"] == pytest.approx(spearman(p.obd[sel], p.actual[sel]))
    with pytest.raises(ValueError, match="point"):
        rank_correlations(None)
    with pytest.raises(ValueError, match="where"):
        rank_correlations(p, sel[:-1])


# ------------------------------------------------------------------------------------------------ pruning
@pytest.mark.parametrize("criterion", CRITERIA)
def test_prune_mask_counts(small, criterion):
    model, _, p = small
    prune = prune_mask(p, 0.5, criterion)
    assert prune.dtype == torch.bool and prune.shape == p.theta.shape
    assert not bool(prune[~model.is_weight].any()), "biases are never pruned"
    n = p.index.numel()
    if criterion == "magnitude_per_layer":
        for k in (0, 1):
            sel = p.index[p.layer == k]
            assert int(prune[sel].sum()) == int(sel.numel() * 0.5)
    else:
        assert int(prune.sum()) == int(n * 0.5)
        scores = p.magnitude if criterion == "magnitude" else p.obd
        kept = ~prune[p.index]
        assert scores[~kept].max() <= scores[kept].min()
    assert not bool(prune_mask(p, 0.0, criterion).any())


def test_prune_mask_validates(small):
    _, _, p = small
    with pytest.raises(ValueError, match="criterion"):
        prune_mask(p, 0.5, "random")
    with pytest.raises(ValueError, match="sparsity"):
        prune_mask(p, 1.0, "obd")


def test_sparsity_sweep(small):
    model, theta, p = small
    out = sparsity_sweep(model, p, [0.0, 0.5, 0.9])
    assert set(out) == set(CRITERIA)
    for c, r in out.items():
        assert r["data_loss"].shape == (3,) and r["accuracy"].shape == (3,)
        assert r["layer_fraction"].shape == (3, 2)
        assert r["data_loss"][0].item() == pytest.approx(float(model.data_loss(theta)))
        assert r["layer_fraction"][0].tolist() == [0.0, 0.0]
    torch.testing.assert_close(out["magnitude_per_layer"]["layer_fraction"][1],
                               torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="sparsities"):
        sparsity_sweep(model, p, [])
    with pytest.raises(ValueError, match="criteria"):
        sparsity_sweep(model, p, [0.5], criteria=["random"])
    with pytest.raises(ValueError, match="point"):
        sparsity_sweep(model, theta, [0.5])


# ------------------------------------------------------------------------------------------------ sets
def test_coupled_pairs(small):
    model, theta, p = small
    out = coupled_pairs(model, p, k=5)
    assert out["pair"].shape == (5, 2)
    rho = out["rho"]
    assert bool((rho.abs() <= 1 + 1e-12).all()) and bool((rho.abs()[:-1] >= rho.abs()[1:]).all())
    H, g = p.hessian, p.grad
    for (i, j), q, s, r in zip(out["pair"].tolist(), out["quadratic"], out["obd_sum"], rho):
        w_i, w_j = theta[i], theta[j]
        # single-weight terms + the cross term that the sum of saliencies leaves out
        expected = -g[i] * w_i - g[j] * w_j + 0.5 * H[i, i] * w_i**2 + 0.5 * H[j, j] * w_j**2 + H[i, j] * w_i * w_j
        torch.testing.assert_close(q, expected)
        torch.testing.assert_close(s, 0.5 * H[i, i] * w_i**2 + 0.5 * H[j, j] * w_j**2)
        torch.testing.assert_close(r, H[i, j] / (H[i, i] * H[j, j]).sqrt())
    # the batched measurement equals the library's one-set measurement
    from pruning_lab.hessian import set_delta

    for (i, j), act in zip(out["pair"].tolist(), out["actual"]):
        prune = torch.zeros_like(theta, dtype=torch.bool)
        prune[[i, j]] = True
        torch.testing.assert_close(act, set_delta(model.loss, theta, prune), rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="k"):
        coupled_pairs(model, p, k=0)


def test_set_growth(small):
    model, theta, p = small
    out = set_growth(model, p, [0.0, 0.3])
    assert out["quadratic"][0].item() == 0.0 and out["actual"][0].item() == 0.0
    prune = prune_mask(p, 0.3, "obd")
    expected = p.obd[prune[p.index]].sum()
    torch.testing.assert_close(out["obd_sum"][1], expected)
    with pytest.raises(ValueError, match="criterion"):
        set_growth(model, p, [0.3], criterion="oracle")


# ------------------------------------------------------------------------------------------------ rescaling
def test_relu_rescale_preserves_the_function():
    model = DigitsMLP(sizes=(64, 4, 10), activation="relu")
    theta = model.train(model.init(1), max_iter=10)
    before = theta.clone()
    out = relu_rescale(model, theta, 3.0)
    assert torch.equal(theta, before)
    torch.testing.assert_close(model.logits(out), model.logits(theta))
    (w1, _, b1), (w2, _, b2) = model.slices
    torch.testing.assert_close(out[w1], 3.0 * theta[w1])
    torch.testing.assert_close(out[b1], 3.0 * theta[b1])
    torch.testing.assert_close(out[w2], theta[w2] / 3.0)
    assert torch.equal(out[b2], theta[b2])
    with pytest.raises(ValueError, match="alpha"):
        relu_rescale(model, theta, 0.0)
    with pytest.raises(ValueError, match="model"):
        tanh = DigitsMLP(sizes=(64, 4, 10))
        relu_rescale(tanh, tanh.init(0), 2.0)


def test_rescaling_demo_obd_invariant_magnitude_not():
    out = rescaling_demo(3.0, 0.5, max_iter=20)
    assert out["max_logit_diff"] < 1e-10
    assert out["obd_overlap"] == 1.0 and out["obd_max_rel_diff"] < 1e-8
    assert out["mag_overlap"] < 1.0
    assert out["original"]["obd"] == out["rescaled"]["obd"]
    assert out["original"]["data_loss"] == pytest.approx(out["rescaled"]["data_loss"], rel=1e-12)
    # magnitude now removes more of layer 2, whose weights look 3x smaller
    assert out["rescaled"]["magnitude"]["layer_fraction"][1] > out["original"]["magnitude"]["layer_fraction"][1]
    with pytest.raises(ValueError, match="sparsity"):
        rescaling_demo(3.0, 0.0)


# ------------------------------------------------------------------------------------------------ seeds
def test_image_loss_changes_average_to_the_data_loss_change(small):
    model, theta, p = small
    prune = prune_mask(p, 0.5, "obd")
    changes = image_loss_changes(model, theta, prune)
    assert changes.shape == (model.y.numel(),)
    with torch.no_grad():
        expected = model.data_loss(theta.masked_fill(prune, 0.0)) - model.data_loss(theta)
    torch.testing.assert_close(changes.mean(), expected)
    assert image_loss_changes(model, theta, torch.zeros_like(prune)).abs().max() == 0
    with pytest.raises(ValueError, match="prune"):
        image_loss_changes(model, theta, prune[:-1])


def test_trained_numbers(small):
    model, theta, p = small
    out = trained_numbers(model, p, growth_sparsities=[0.3], sweep_sparsities=[0.5], pairs_k=5)
    corr = rank_correlations(p)
    assert out["spearman obd"] == corr["obd"] and out["spearman magnitude"] == corr["magnitude"]
    growth = set_growth(model, p, [0.3])
    assert out["growth ratio 0.3"] == pytest.approx(float(growth["actual"][0] / growth["quadratic"][0]))
    changes = image_loss_changes(model, theta, prune_mask(p, 0.3, "obd"))
    top2 = float(changes.sort(descending=True).values[:2].sum())
    assert out["growth top images share 0.3"] == pytest.approx(top2 / float(changes.sum()))
    assert out["growth ratio without top images 0.3"] == pytest.approx(
        (float(growth["actual"][0]) - top2 / model.y.numel()) / float(growth["quadratic"][0]))
    one = trained_numbers(model, p, growth_sparsities=[0.3], sweep_sparsities=[0.5], pairs_k=5, top_images=1)
    assert one["growth top images share 0.3"] == pytest.approx(float(changes.max() / changes.sum()))
    sweep = sparsity_sweep(model, p, [0.5])
    for c in CRITERIA:
        assert out[f"{c} accuracy 0.5"] == float(sweep[c]["accuracy"][0])
        assert out[f"{c} layer 2 removed 0.5"] == float(sweep[c]["layer_fraction"][0, 1])
    assert out["magnitude_per_layer layer 1 removed 0.5"] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="sparsities"):
        trained_numbers(model, p, growth_sparsities=[], sweep_sparsities=[0.5])
    with pytest.raises(ValueError, match="top_images"):
        trained_numbers(model, p, growth_sparsities=[0.3], sweep_sparsities=[0.5], top_images=0)


def test_early_and_rescaling_numbers(small):
    model, theta, p = small
    out = early_numbers(p)
    assert out["early spearman taylor"] == rank_correlations(p)["taylor"]
    assert out["early helpful fraction"] == pytest.approx(float((p.actual < 0).double().mean()))
    demo = {"mag_overlap": 0.8, "original": {"magnitude": {"accuracy": 0.9, "layer_fraction": [0.5, 0.2]},
                                            "obd": {"accuracy": 0.95, "layer_fraction": [0.5, 0.3]}},
            "rescaled": {"magnitude": {"accuracy": 0.7, "layer_fraction": [0.4, 0.9]},
                         "obd": {"accuracy": 0.95, "layer_fraction": [0.5, 0.3]}}}
    assert rescaling_numbers(demo) == {
        "rescale magnitude overlap": 0.8, "rescale obd accuracy": 0.95,
        "rescale magnitude accuracy original": 0.9, "rescale magnitude layer 2 original": 0.2,
        "rescale magnitude accuracy rescaled": 0.7, "rescale magnitude layer 2 rescaled": 0.9}
    with pytest.raises(ValueError, match="early"):
        early_numbers(demo)
    with pytest.raises(ValueError, match="demo"):
        rescaling_numbers({"original": {}})


def test_seed_numbers_composes_the_three_parts(small, monkeypatch):
    model, theta, p = small
    demo = {"mag_overlap": 0.5, "original": {"magnitude": {"accuracy": 0.9, "layer_fraction": [0.5, 0.2]},
                                            "obd": {"accuracy": 0.95, "layer_fraction": [0.5, 0.3]}},
            "rescaled": {"magnitude": {"accuracy": 0.7, "layer_fraction": [0.4, 0.9]},
                         "obd": {"accuracy": 0.95, "layer_fraction": [0.5, 0.3]}}}
    calls = []
    monkeypatch.setattr(ox, "train_digits", lambda seed, max_iter: calls.append((seed, max_iter)) or (model, theta))
    monkeypatch.setattr(ox, "rescaling_demo", lambda alpha, sparsity, seed, max_iter: demo)
    out = seed_numbers(7, growth_sparsities=[0.3], sweep_sparsities=[0.5], pairs_k=5, early_iter=3)
    assert calls == [(7, 2000), (7, 3)]
    expected = trained_numbers(model, p, growth_sparsities=[0.3], sweep_sparsities=[0.5], pairs_k=5)
    expected.update(early_numbers(p))
    expected.update(rescaling_numbers(demo))
    assert out == pytest.approx(expected)


def test_compare_seeds_verdicts_match_measured_claims():
    from pruning_lab.measured import Measured

    m = Measured("unused", folder="/nonexistent")
    lower = compare_seeds([0.30, 0.27, 0.28], [0.50, 0.44, 0.48], rounding=0.01)
    assert lower["verdict"] == "lower" and lower["diff"] == pytest.approx(0.19)
    m.order("a < b", [lower["mean_a"], lower["mean_b"]], lower["tol"])
    with pytest.raises(AssertionError):
        m.same("a = b", lower["mean_a"], lower["mean_b"], lower["tol"])
    # one seed reverses the order: inside the spread
    same = compare_seeds([0.297, 0.269, 0.285], [0.447, 0.323, 0.284], rounding=0.01)
    assert same["verdict"] == "no measurable difference"
    m.same("a = b", same["mean_a"], same["mean_b"], same["tol"])
    with pytest.raises(AssertionError):
        m.order("a < b", [same["mean_a"], same["mean_b"]], same["tol"])
    assert compare_seeds([2.0, 2.1], [1.0, 1.1])["verdict"] == "higher"
    assert compare_seeds([1.0], [1.005], rounding=0.01)["verdict"] == "no measurable difference"
    assert compare_seeds([1.0], [1.05], rounding=0.01)["verdict"] == "lower"
    with pytest.raises(ValueError, match="one value per seed"):
        compare_seeds([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="rounding"):
        compare_seeds([1.0], [2.0], rounding=1.5)
    with pytest.raises(ValueError, match="finite"):
        compare_seeds([float("nan")], [1.0])


def test_mean_range():
    assert mean_range([0.495, 0.436, 0.481], ".3f") == "0.471 (0.436–0.495)"
    assert mean_range([2.0]) == "2 (2–2)"
    with pytest.raises(ValueError, match="values"):
        mean_range([])


# ------------------------------------------------------------------------------------------------ presentation
def test_table_png_and_slider():
    tab = Table(["a", "b"], [[1, "x<y"], [2.5, "z"]])
    assert tab._repr_markdown_().splitlines() == ["| a | b |", "|---|---|", "| 1 | x<y |", "| 2.5 | z |"]
    assert "<td>x&lt;y</td>" in tab._repr_html_() and tab._repr_html_().startswith("<table")
    assert repr(tab).splitlines() == ["a    b", "---  ---", "1    x<y", "2.5  z"]
    with pytest.raises(ValueError, match="rows"):
        Table(["a", "b"], [[1]])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = []
    for k in range(2):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, k])
        frames.append(png_bytes(fig))
    assert all(f[:8] == b"\x89PNG\r\n\x1a\n" for f in frames)
    box = figure_slider(frames, ["a", "b"], "pick", title="demo")
    slider, stack = box.children[1], box.children[2]
    assert stack.selected_index == 0 and len(stack.children) == 2
    assert slider.index == 0 and [label for label, _ in slider.options] == ["a", "b"]
    # (the slider -> stack link is a jslink: it runs in the browser, so it needs no kernel)
    with pytest.raises(ValueError, match="labels"):
        figure_slider(frames, ["a"], "pick")


def test_weight_name():
    model = DigitsMLP()
    assert weight_name(model, 0) == "unit 0 ← pixel (0, 0)"
    assert weight_name(model, 642) == "unit 10 ← pixel (0, 2)"
    assert weight_name(model, 1024) == "bias of unit 0"
    assert weight_name(model, 1040 + 16 * 3 + 5) == "class 3 ← unit 5"
    assert weight_name(model, model.num_params - 1) == "bias of class 9"
    with pytest.raises(ValueError, match="position"):
        weight_name(model, model.num_params)


def test_single_thread_restores_the_setting():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with single_thread():
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
