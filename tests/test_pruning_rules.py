"""Per-matrix pruning rules: SparseGPT equals sequential OBS; exact sparsity; N:M validity; bad input."""
import pytest
import torch

from pruning_lab.magnitude import global_magnitude_masks, magnitude_prune, random_prune
from pruning_lab.nm import check_nm, nm_mask, parse_pattern
from pruning_lab.sparsegpt import (HessianAccumulator, hessian_from_inputs, inverse_hessian_factor, sparsegpt_prune,
                                   sparsegpt_prune_shared)
from pruning_lab.wanda import InputNormAccumulator, wanda_prune, wanda_scores


def _layer(d_out, d_in, tokens, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    X = torch.randn(tokens, d_in, generator=g, dtype=dtype) @ torch.randn(d_in, d_in, generator=g, dtype=dtype)
    return W, X


def naive_sequential_obs(W, H, prune, percdamp=0.01):
    """Row by row, column by column: OBS with the full inverse, downdated after every visited column."""
    d_out, d_in = W.shape
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += percdamp * torch.diag(H).mean() * torch.eye(d_in, dtype=H.dtype)
    out = W.clone()
    out[:, dead] = 0
    for r in range(d_out):
        w = out[r].clone()
        Hinv = torch.linalg.inv(H)
        for j in range(d_in):
            if prune[r, j]:
                w = w - w[j] / Hinv[j, j] * Hinv[:, j]  # OBS update: w_j becomes 0
                w[j] = 0.0
            Hinv = Hinv - torch.outer(Hinv[:, j], Hinv[j, :]) / Hinv[j, j]  # column j is frozen from now on
        out[r] = w
    return out


@pytest.mark.parametrize("d_out, d_in, blocksize, nm", [(6, 16, 4, None), (5, 24, 8, None), (4, 16, 8, (2, 4)),
                                                        (3, 32, 128, (4, 8)), (7, 20, 128, None),
                                                        # several sub-blocks of 32 columns, and partial ones
                                                        (5, 100, 128, None), (4, 80, 48, None), (3, 96, 64, (2, 4))])
def test_sparsegpt_equals_naive_sequential_obs(d_out, d_in, blocksize, nm):
    W, X = _layer(d_out, d_in, 64, seed=d_in)
    H = X.T @ X
    kw = {"n": nm[0], "m": nm[1]} if nm else {}
    out = sparsegpt_prune(W, H, 0.5, blocksize=blocksize, **kw)
    ref = naive_sequential_obs(W, H, prune=(out == 0))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    if nm:
        assert check_nm(out, *nm)
    else:
        assert int((out == 0).sum()) == sum(int(d_out * (min(i + blocksize, d_in) - i) * 0.5)
                                            for i in range(0, d_in, blocksize))


@pytest.mark.parametrize("nm, dtype", [(None, torch.float32), ((2, 4), torch.float32), (None, torch.float64),
                                       ((4, 8), torch.float64)])
def test_shared_hessian_equals_separate_calls(nm, dtype):
    """q/k/v (or gate/up) pruned together with one H: each keeps its own per-block mask count, same result."""
    g = torch.Generator().manual_seed(5)
    Ws = [torch.randn(r, 72, generator=g, dtype=dtype) for r in (9, 3, 3)]
    X = torch.randn(200, 72, generator=g, dtype=dtype) * torch.rand(72, generator=g, dtype=dtype)
    X[:, 7] = 0  # a dead input
    H = X.T @ X
    kw = {"n": nm[0], "m": nm[1]} if nm else {}
    before = [w.clone() for w in Ws]
    together = sparsegpt_prune_shared(Ws, H, 0.6, blocksize=32, **kw)
    for w, w0, t in zip(Ws, before, together):
        alone = sparsegpt_prune(w, H, 0.6, blocksize=32, **kw)
        assert t.dtype == dtype and t.shape == w.shape
        assert torch.equal(t == 0, alone == 0)
        torch.testing.assert_close(t, alone, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
        assert torch.equal(w, w0)  # inputs untouched
    if nm is None:  # each matrix loses exactly its own count in each block (not a share of a pooled count)
        for w, t in zip(Ws, together):
            assert int((t == 0).sum()) == sum(int(w.shape[0] * (min(i + 32, 72) - i) * 0.6) for i in range(0, 72, 32))


@pytest.mark.parametrize("weights, match", [([], "weights"), (torch.ones(2, 4), "weights"),
                                            ([torch.ones(2, 4), torch.ones(2, 5)], "d_in"),
                                            ([torch.ones(2, 4), torch.ones(2, 4, dtype=torch.float64)], "dtype"),
                                            ([torch.ones(2, 4), torch.ones(4)], "2-D")])
def test_shared_bad_input(weights, match):
    with pytest.raises(ValueError, match=match):
        sparsegpt_prune_shared(weights, torch.eye(4))


def test_factor_is_the_upper_cholesky_factor_of_the_inverse():
    _, X = _layer(1, 40, 90, seed=11)
    H = X.T @ X
    U, dead = inverse_hessian_factor(H, percdamp=0.01)
    Hd = H + 0.01 * torch.diag(H).mean() * torch.eye(40, dtype=H.dtype)
    assert not dead.any() and torch.equal(U, U.triu()) and bool((torch.diagonal(U) > 0).all())
    torch.testing.assert_close(U, torch.linalg.cholesky(torch.linalg.inv(Hd), upper=True), rtol=1e-9, atol=1e-12)


def test_cholesky_rows_are_the_downdated_inverses():
    _, X = _layer(1, 6, 40, seed=3)
    H = 2 * X.T @ X
    U, _ = inverse_hessian_factor(H, percdamp=0.0)
    Hinv = torch.linalg.inv(H)
    for j in range(6):
        row = Hinv[j, j:] / Hinv[j, j].sqrt()
        torch.testing.assert_close(U[j, j:], row)
        Hinv = Hinv - torch.outer(Hinv[:, j], Hinv[j, :]) / Hinv[j, j]


def test_on_the_layer_objective_sparsegpt_beats_wanda_beats_magnitude():
    W, X = _layer(32, 64, 512, seed=1, dtype=torch.float32)
    X = X * torch.logspace(-1, 1, 64)[torch.randperm(64, generator=torch.Generator().manual_seed(0))]  # outliers
    H = hessian_from_inputs(X)
    err = lambda Wp: ((W - Wp) @ X.T).square().sum().item()  # noqa: E731
    assert err(sparsegpt_prune(W, H, 0.5)) < err(wanda_prune(W, X.square().sum(0), 0.5))
    assert err(wanda_prune(W, X.square().sum(0), 0.5)) < err(magnitude_prune(W, 0.5))


def test_sparsegpt_dead_inputs_scale_invariance_and_purity():
    W, X = _layer(4, 16, 64, seed=2, dtype=torch.float32)
    X[:, 3] = 0
    H = hessian_from_inputs(X)
    Wc, Hc = W.clone(), H.clone()
    out = sparsegpt_prune(W, H, 0.5, blocksize=8)
    assert (out[:, 3] == 0).all() and torch.equal(W, Wc) and torch.equal(H, Hc)
    torch.testing.assert_close(sparsegpt_prune(W, 7.0 * H, 0.5, blocksize=8), out, rtol=1e-4, atol=1e-5)
    assert out.dtype == W.dtype


def test_accumulators_match_direct_formulas():
    _, X = _layer(1, 8, 50, seed=4, dtype=torch.float32)
    acc, nacc = HessianAccumulator(8), InputNormAccumulator(8)
    for chunk in X.split(7):
        acc.add_batch(chunk.reshape(1, -1, 8))
        nacc.add_batch(chunk)
    torch.testing.assert_close(acc.hessian, hessian_from_inputs(X), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nacc.sq_norms, X.square().sum(0))
    assert acc.nsamples == nacc.ntokens == 50
    with pytest.raises(ValueError, match="x"):
        acc.add_batch(torch.ones(3, 5))
    with pytest.raises(ValueError, match="x"):
        nacc.add_batch(torch.full((2, 8), float("nan")))


def test_wanda_matches_the_papers_worked_problem():
    # Chapter 5 worked problem: scores [0.8, 1.0, 0.75, 0.6, 1.0, 0.48]; at 50% prune w6, w4, w3
    W = torch.tensor([[0.8, 0.05, 1.5, 0.3, 0.01, 0.6]], dtype=torch.float64)
    norms = torch.tensor([1, 20, 0.5, 2, 100, 0.8], dtype=torch.float64)
    torch.testing.assert_close(wanda_scores(W, norms**2)[0].double(),
                               torch.tensor([0.8, 1.0, 0.75, 0.6, 1.0, 0.48], dtype=torch.float64))
    out = wanda_prune(W, norms**2, 0.5)
    assert (out[0] == 0).nonzero().flatten().tolist() == [2, 3, 5]


@pytest.mark.parametrize("fn", ["magnitude", "random", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_exact_sparsity(fn, sparsity):
    W, X = _layer(16, 32, 64, seed=5, dtype=torch.float32)
    out = {"magnitude": lambda: magnitude_prune(W, sparsity),
           "random": lambda: random_prune(W, sparsity, generator=torch.Generator().manual_seed(0)),
           "wanda": lambda: wanda_prune(W, X.square().sum(0), sparsity),
           "sparsegpt": lambda: sparsegpt_prune(W, hessian_from_inputs(X), sparsity, blocksize=32)}[fn]()
    zeros = (out == 0)
    if fn in ("wanda", "sparsegpt"):
        assert (zeros.sum(1) == int(32 * sparsity)).all() if fn == "wanda" else zeros.sum() == int(512 * sparsity)
    else:
        assert zeros.sum() == int(512 * sparsity)


@pytest.mark.parametrize("fn", ["magnitude", "random", "wanda", "sparsegpt"])
@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_nm_patterns(fn, n, m):
    W, X = _layer(8, 32, 64, seed=6, dtype=torch.float32)
    out = {"magnitude": lambda: magnitude_prune(W, n=n, m=m),
           "random": lambda: random_prune(W, n=n, m=m, generator=torch.Generator().manual_seed(0)),
           "wanda": lambda: wanda_prune(W, X.square().sum(0), n=n, m=m),
           "sparsegpt": lambda: sparsegpt_prune(W, hessian_from_inputs(X), n=n, m=m, blocksize=32)}[fn]()
    assert check_nm(out, n, m)
    assert ((out.reshape(8, -1, m) == 0).sum(-1) == m - n).all()


def test_nm_is_along_the_input_dimension_and_ties_are_by_index():
    s = torch.tensor([[1.0, 1.0, 1.0, 1.0, 4.0, 3.0, 2.0, 1.0]])
    assert nm_mask(s, 2, 4).tolist() == [[False, False, True, True, True, True, False, False]]
    assert not check_nm(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), 2, 4)
    assert parse_pattern("2:4") == (2, 4) and parse_pattern("unstructured") is None


def test_global_magnitude_exact_count_with_ties():
    a = torch.tensor([[0.1, 0.5], [0.5, 0.9]])
    b = torch.tensor([[0.5, 0.2, 2.0]])
    masks = global_magnitude_masks([a, b], 0.5)  # 7 weights -> prune 3: 0.1, 0.2 and the first 0.5
    assert sum(int((~mk).sum()) for mk in masks) == 3
    assert (~masks[0]).tolist() == [[True, True], [False, False]] and (~masks[1]).tolist() == [[False, True, False]]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sparsegpt_prune(torch.ones(2, 4), torch.eye(3)), "hessian"),
        (lambda: sparsegpt_prune(torch.ones(2, 4), torch.eye(4), 1.0), "sparsity"),
        (lambda: sparsegpt_prune(torch.ones(2, 6), torch.eye(6), n=2, m=4), "m"),
        (lambda: sparsegpt_prune(torch.ones(2, 8), torch.eye(8), n=5, m=4), "n"),
        (lambda: sparsegpt_prune(torch.ones(2, 8), torch.eye(8), blocksize=0), "blocksize"),
        (lambda: sparsegpt_prune(torch.ones(2, 8), torch.eye(8), n=2, m=4, blocksize=6), "blocksize"),
        (lambda: sparsegpt_prune(torch.ones(2, 4), torch.eye(4), percdamp=-1), "percdamp"),
        (lambda: sparsegpt_prune(torch.ones(2, 4) * float("nan"), torch.eye(4)), "weight"),
        (lambda: wanda_prune(torch.ones(2, 4), torch.ones(3)), "input_sq_norms"),
        (lambda: wanda_prune(torch.ones(2, 4), -torch.ones(4)), "input_sq_norms"),
        (lambda: wanda_prune(torch.ones(2, 4), torch.ones(4), -0.5), "sparsity"),
        (lambda: magnitude_prune(torch.ones(4), 0.5), "weight"),
        (lambda: magnitude_prune(torch.ones(2, 4), n=2), "n"),
        (lambda: random_prune(torch.ones(2, 4), 1.2), "sparsity"),
        (lambda: parse_pattern("3:2"), "`pattern`"),
        (lambda: parse_pattern("0:4"), "`pattern`"),
        (lambda: parse_pattern("half"), "pattern"),
        (lambda: global_magnitude_masks([], 0.5), "weights"),
        (lambda: hessian_from_inputs(torch.ones(0, 3)), "x"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_singular_hessian_gets_more_dampening_with_a_warning():
    H = torch.zeros(4, 4)
    H[0, 0] = 1.0
    H[1, 1] = -1.0  # not positive semi-definite
    with pytest.warns(RuntimeWarning, match="dampening"):
        inverse_hessian_factor(H, percdamp=0.01)


def test_accumulators_can_defer_the_finiteness_check_to_the_end():
    for cls in (HessianAccumulator, InputNormAccumulator):
        acc = cls(4, check_each_batch=False)
        acc.add_batch(torch.ones(3, 4))
        acc.check_finite()  # fine so far
        acc.add_batch(torch.tensor([[1.0, float("inf"), 0.0, 0.0]]))  # accepted without a check...
        acc.add_batch(torch.ones(2, 4))
        with pytest.raises(ValueError, match="NaN or inf"):  # ...but the result says so
            acc.check_finite()
        with pytest.raises(ValueError, match="NaN or inf"):
            cls(4).add_batch(torch.full((1, 4), float("nan")))


def test_all_finite_handles_overflowing_sums():
    from pruning_lab._validate import all_finite

    assert all_finite(torch.full((4,), 3e38))  # the sum overflows, the entries are finite
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))
    assert all_finite(torch.empty(0))


# ------------------------------------------------------------------ SparseGPT's column order (Chapter 4)
def _problem(seed=0, d_out=6, d_in=16, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, d_in, dtype=torch.float64)
    return torch.randn(d_out, d_in, generator=g, dtype=torch.float64), x.T @ x


def test_column_order_natural_is_the_default_and_a_permutation_is_undone():
    from pruning_lab.sparsegpt import column_order, sparsegpt_prune

    w, h = _problem()
    base = sparsegpt_prune(w, h, 0.5, blocksize=4)
    assert torch.equal(sparsegpt_prune(w, h, 0.5, blocksize=4, order="natural"), base)
    assert torch.equal(sparsegpt_prune(w, h, 0.5, blocksize=4, order=torch.arange(16)), base)
    perm = column_order("act", h)
    assert torch.equal(perm, torch.sort(h.diagonal(), descending=True, stable=True).indices)
    got = sparsegpt_prune(w, h, 0.5, blocksize=4, order="act")
    # the same as pruning the permuted problem in its natural order, then un-permuting the columns
    ref = sparsegpt_prune(w[:, perm], h[perm][:, perm], 0.5, blocksize=4)[:, torch.argsort(perm)]
    assert torch.equal(got, ref)
    for order in ("act", "random"):
        out = sparsegpt_prune(w, h, 0.5, blocksize=4, order=order)
        assert int((out == 0).sum()) == 48 and not torch.equal(out, base)
    assert torch.equal(w, _problem()[0])  # input untouched


@pytest.mark.parametrize("kw, word", [(dict(order="sideways"), "`order`"), (dict(order=torch.zeros(16)), "`order`"),
                                      (dict(order="act", n=2, m=4), "unstructured")])
def test_column_order_bad_input(kw, word):
    from pruning_lab.sparsegpt import sparsegpt_prune

    w, h = _problem()
    with pytest.raises(ValueError, match=word):
        sparsegpt_prune(w, h, 0.5, blocksize=4, **kw)
