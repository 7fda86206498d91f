"""Paired comparisons over calibration seeds and evaluation windows (pruning_lab.paired)."""
import math

import pytest
import torch

from pruning_lab.paired import paired_bootstrap, paired_differences, ppl_ratio, verdict


def test_differences_are_b_minus_a_and_shapes_are_checked():
    d = paired_differences([[1.0, 2.0], [3.0, 4.0]], [[1.5, 2.0], [3.0, 5.0]])
    assert d.dtype == torch.float64 and d.tolist() == [[0.5, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="same"):
        paired_differences([[1.0, 2.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"\[seeds, windows\]"):
        paired_differences([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        paired_differences([[1.0, float("nan")]], [[1.0, 2.0]])


def test_a_clear_difference_is_resolved_and_noise_is_not():
    g = torch.Generator().manual_seed(1)
    noise = 0.05 * torch.randn(3, 8, generator=g, dtype=torch.float64)
    clear = paired_bootstrap(0.5 + noise)
    assert clear["low"] > 0.4 and clear["high"] < 0.6 and verdict(clear) == "lower"
    assert verdict(paired_bootstrap(-0.5 + noise)) == "higher"
    assert verdict(paired_bootstrap(noise)) == "no measurable difference"
    assert math.isclose(clear["mean"], float((0.5 + noise).mean()))
    assert clear["seeds"] == 3 and clear["windows"] == 8 and len(clear["per_seed"]) == 3


def test_one_disagreeing_seed_blocks_a_verdict():
    d = torch.tensor([[0.5, 0.6, 0.55, 0.5], [0.4, 0.5, 0.45, 0.5], [-0.01, -0.02, -0.01, -0.02]],
                     dtype=torch.float64)
    boot = paired_bootstrap(d)
    assert boot["per_seed"][2] < 0 and verdict(boot) == "no measurable difference"


def test_the_interval_covers_the_mean_and_is_deterministic_and_ratio():
    d = torch.tensor([[0.1, 0.3, 0.2, 0.25], [0.15, 0.2, 0.35, 0.1]], dtype=torch.float64)
    a, b = paired_bootstrap(d, seed=3), paired_bootstrap(d, seed=3)
    assert a == b and a["low"] <= a["mean"] <= a["high"]
    r, lo, hi = ppl_ratio(a)
    assert math.isclose(r, math.exp(a["mean"])) and lo <= r <= hi


def test_bad_arguments():
    d = torch.zeros(2, 3, dtype=torch.float64)
    for kwargs, match in [({"n_boot": 10}, "n_boot"), ({"ci": 1.5}, "ci"), ({"ci": 95}, "ci")]:
        with pytest.raises(ValueError, match=match):
            paired_bootstrap(d, **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(torch.zeros(3))
