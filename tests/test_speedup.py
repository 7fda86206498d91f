"""pruning_lab.speedup: Amdahl, the bandwidth bound, crossovers and timing (Chapter 8)."""
import math

import pytest

from pruning_lab import speedup as sp


def test_amdahl_worked_problem_and_limits():
    assert sp.amdahl(0.7, 2) == pytest.approx(1 / 0.65)  # seed 001, problem 5: 1.54x
    assert round(sp.amdahl(0.7, 2), 2) == 1.54
    assert sp.amdahl(0.0, 10) == 1.0 and sp.amdahl(1.0, 3) == pytest.approx(3.0)
    assert sp.amdahl(0.5, 0.5) < 1  # a slowdown of the accelerated part
    assert sp.amdahl_limit(0.7) == pytest.approx(1 / 0.3) and sp.amdahl_limit(1.0) == math.inf
    assert sp.amdahl(0.7, 1e9) == pytest.approx(sp.amdahl_limit(0.7))


def test_fraction_needed_inverts_amdahl():
    for f in (0.1, 0.5, 0.9):
        for s in (1.5, 2.0, 4.0):
            assert sp.fraction_needed(sp.amdahl(f, s), s) == pytest.approx(f)
    assert sp.fraction_needed(1.0, 2.0) == 0.0
    with pytest.raises(ValueError, match="cannot be reached"):
        sp.fraction_needed(3.0, 2.0)
    with pytest.raises(ValueError, match="cannot be reached"):
        sp.fraction_needed(1.5, 0.5)


@pytest.mark.parametrize("call, word", [(lambda: sp.amdahl(1.2, 2), "`f`"), (lambda: sp.amdahl(0.5, 0), "`s`"),
                                        (lambda: sp.amdahl(float("nan"), 2), "`f`"),
                                        (lambda: sp.amdahl(True, 2), "`f`"),
                                        (lambda: sp.bytes_per_weight("coo"), "`fmt`"),
                                        (lambda: sp.time_call(lambda: None, repeats=2), "repeats")])
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_bandwidth_bound_counts_the_metadata():
    assert sp.bytes_per_weight("2:4") == pytest.approx(1.125)  # 1 byte of values + 1 bit of metadata
    assert sp.bandwidth_speedup("2:4") == pytest.approx(2 / 1.125)  # 1.78x, not 2x
    assert sp.bandwidth_speedup("structured", density=0.5) == pytest.approx(2.0)
    assert sp.bandwidth_speedup("csr", density=0.5) == pytest.approx(2 / 3)  # fp16 + int32 index: slower
    assert sp.bandwidth_speedup("csr", density=1 / 6) == pytest.approx(2.0)


def test_crossover_interpolates():
    xs = [0.5, 0.7, 0.9, 0.99]
    assert sp.crossover(xs, [1, 1, 1, 1], [3, 2, 0.5, 0.1]) == pytest.approx(0.7 + 0.2 * 1 / 1.5)
    assert sp.crossover(xs, [1, 1, 1, 1], [2, 2, 2, 2]) is None
    assert sp.crossover(xs, [1, 1, 1, 1], [0.5, 0.4, 0.3, 0.2]) == 0.5
    with pytest.raises(ValueError, match="increasing"):
        sp.crossover([0.5, 0.5], [1, 1], [1, 1])


def test_time_call_reports_a_spread():
    calls = []
    out = sp.time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and out["repeats"] == 5
    assert out["min"] <= out["median"] <= out["max"] and out["iqr"] >= 0


def test_summarize_and_ratio_spread():
    out = sp.summarize([3.0, 1.0, 2.0])
    assert (out["median"], out["min"], out["max"], out["repeats"]) == (2.0, 1.0, 3.0, 3)
    r = sp.ratio_spread({"median": 4.0, "min": 3.0, "max": 5.0}, {"median": 2.0, "min": 1.5, "max": 2.5})
    assert r == {"median": 2.0, "low": 3.0 / 2.5, "high": 5.0 / 1.5}
    with pytest.raises(ValueError, match="`times`"):
        sp.summarize([1.0, 2.0])


def test_decode_time_bound_is_bytes_over_bandwidth():
    # 134.5M fp32 weights read once per token at 50 GB/s: 10.76 ms; 2:4 fp16 reads 1.125 bytes per weight
    assert sp.decode_time_bound(134.5e6, 4, 50) == pytest.approx(10.76)
    assert sp.decode_time_bound(1e9, sp.bytes_per_weight("2:4"), 1000) == pytest.approx(1.125)
    with pytest.raises(ValueError, match="bandwidth_gb_s"):
        sp.decode_time_bound(1e6, 2, 0)


def test_memory_bandwidth_is_positive_and_checks_its_size():
    out = sp.memory_bandwidth(1 << 22, repeats=3)
    assert out["read_gb_s"] > 0 and out["copy_gb_s"] > 0 and out["nbytes"] == 1 << 22
    with pytest.raises(ValueError, match="nbytes"):
        sp.memory_bandwidth(1000)


def test_csr_sweep_checks_its_products_and_finds_a_crossover():
    out = sp.csr_sweep(64, 48, 4, [0.5, 0.9, 0.99], repeats=3)
    assert out["sparsities"] == [0.5, 0.9, 0.99] and len(out["dense"]) == len(out["csr"]) == 3
    assert out["crossover"] is None or 0.5 <= out["crossover"] <= 0.99
    w = sp._sparse_weight(10, 20, 0.7, __import__("torch").Generator().manual_seed(0))
    assert int((w == 0).sum()) == 140  # exactly int(200 * 0.7) zeros
    with pytest.raises(ValueError, match="tokens"):
        sp.csr_sweep(4, 4, 0, [0.5])
    with pytest.raises(ValueError, match="sparsities"):
        sp.csr_sweep(4, 4, 1, [1.5])


def test_describe_ratio_reports_no_difference_inside_the_spread():
    assert sp.describe_ratio({"median": 1.5, "low": 1.4, "high": 1.6}) == "1.50x faster (1.40x to 1.60x)"
    assert sp.describe_ratio({"median": 1.02, "low": 0.97, "high": 1.05}).startswith("no measurable difference")
    assert sp.describe_ratio({"median": 0.5, "low": 0.45, "high": 0.55})== "2.00x slower (a speedup of 0.45x to 0.55x)"

