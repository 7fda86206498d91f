"""Masks for the kinds of sparsity (Chapter 1): unstructured (magnitude, random), rows, columns, blocks, N:M."""
import pytest
import torch

from pruning_lab.magnitude import magnitude_prune, random_prune
from pruning_lab.masks import mask_lowest
from pruning_lab.nm import check_nm, nm_mask
from pruning_lab.structured import (
    KINDS,
    block_mask,
    column_mask,
    magnitude_mask,
    mask_sparsity,
    random_mask,
    removal_order,
    row_mask,
    sparsity_mask,
)


def _w(shape=(8, 16), seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- unstructured: magnitude ------------------------------------------------------------------------------------


def test_magnitude_mask_removes_exactly_k_smallest_with_ties_by_index():
    w = torch.tensor([[0.5, -0.1, 0.1, 2.0], [-0.1, 0.3, 0.1, -3.0]])
    keep = magnitude_mask(w, k=3)
    assert keep.dtype == torch.bool and keep.shape == w.shape
    # |w| = 0.1 four times (flat indices 1, 2, 4, 6): the three lowest indices go, index 6 stays
    assert (~keep).flatten().nonzero().flatten().tolist() == [1, 2, 4]
    assert magnitude_mask(w, k=0).all()
    assert (~magnitude_mask(w, k=8)).all()


def test_magnitude_mask_uses_absolute_values():
    w = torch.tensor([-5.0, -4.0, 0.1, 3.0])
    assert (~magnitude_mask(w, k=1)).nonzero().flatten().tolist() == [2]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.3, 0.5, 0.77, 0.9])
def test_magnitude_mask_equals_the_library_rules(sparsity):
    w = torch.randint(-3, 4, (12, 20), generator=torch.Generator().manual_seed(1)).float()  # many exact ties
    keep = magnitude_mask(w, sparsity)
    assert torch.equal(keep, mask_lowest(w.abs(), sparsity))
    assert torch.equal(w.masked_fill(~keep, 0.0), magnitude_prune(w, sparsity))
    assert int((~keep).sum()) == int(w.numel() * sparsity)
    k = int(w.numel() * sparsity)
    assert torch.equal(magnitude_mask(w, k=k), keep)


def test_magnitude_mask_leaves_its_input_alone_and_accepts_lists():
    w = _w()
    before = w.clone()
    magnitude_mask(w, 0.5)
    assert torch.equal(w, before)
    assert magnitude_mask([[1.0, -2.0], [0.5, 3.0]], k=1).tolist() == [[True, True], [False, True]]


# --- unstructured: random ---------------------------------------------------------------------------------------


def test_random_mask_exact_count_seeded_and_nested():
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = random_mask((10, 30), 0.5, generator=g(0))
    assert a.shape == (10, 30) and a.dtype == torch.bool and int((~a).sum()) == 150
    assert torch.equal(a, random_mask((10, 30), 0.5, generator=g(0)))
    assert not torch.equal(a, random_mask((10, 30), 0.5, generator=g(1)))
    b = random_mask((10, 30), 0.8, generator=g(0))  # same scores, more removed: a superset of a's removals
    assert ((~a) <= (~b)).all()
    assert torch.equal(random_mask((10, 30), k=150, generator=g(0)), a)


def test_random_mask_is_what_random_prune_removes():
    w = _w((16, 24), seed=3)
    keep = random_mask(w.shape, 0.4, generator=torch.Generator().manual_seed(7))
    expected = random_prune(w, 0.4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(w.masked_fill(~keep, 0.0), expected)


def test_random_mask_recipe_is_lowest_uniform_scores():
    scores = torch.rand((5, 6), generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    keep = random_mask((5, 6), k=11, generator=torch.Generator().manual_seed(2))
    assert torch.equal(keep, magnitude_mask(scores, k=11))


def test_random_mask_is_uniform_over_positions():
    counts = torch.zeros(4, 5)
    g = torch.Generator().manual_seed(0)
    for _ in range(2000):
        counts += (~random_mask((4, 5), k=5, generator=g)).float()
    freq = counts / 2000  # each position removed with probability 5/20
    assert (freq - 0.25).abs().max() < 0.05


def test_removal_order_prefixes_are_the_masks():
    w = torch.randint(-3, 4, (9, 14), generator=torch.Generator().manual_seed(11)).float()  # ties
    order = removal_order(w.abs())
    assert order.dtype == torch.int64 and sorted(order.tolist()) == list(range(w.numel()))
    for k in (0, 1, 40, 63, 126):
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[order[:k]] = False
        assert torch.equal(keep.reshape(w.shape), magnitude_mask(w, k=k)), k
    scores = torch.rand(w.shape, generator=torch.Generator().manual_seed(5))
    keep = torch.ones(w.numel(), dtype=torch.bool)
    keep[removal_order(scores)[:50]] = False
    assert torch.equal(keep.reshape(w.shape), random_mask(w.shape, k=50, generator=torch.Generator().manual_seed(5)))


# --- structured: rows, columns, blocks --------------------------------------------------------------------------


def test_row_mask_removes_whole_rows_of_lowest_norm():
    w = torch.tensor([[3.0, 0.0], [0.1, 0.1], [1.0, -1.0], [0.0, 0.2]])  # row norms 3, 0.14, 1.41, 0.2
    keep = row_mask(w, 0.5)
    assert keep.tolist() == [[True, True], [False, False], [True, True], [False, False]]


def test_column_mask_removes_whole_columns_of_lowest_norm():
    w = _w((6, 10), seed=4)
    keep = column_mask(w, 0.3)
    removed = (~keep).all(dim=0)
    assert int(removed.sum()) == 3 and torch.equal(keep, ~removed.expand_as(keep))
    norms = w.norm(dim=0)
    assert norms[removed].max() <= norms[~removed].min()
    assert torch.equal(column_mask(w, 0.3), row_mask(w.T, 0.3).T)


def test_group_ties_prune_the_lower_index_first():
    w = torch.ones(4, 3)
    assert row_mask(w, 0.5).all(dim=1).tolist() == [False, False, True, True]
    assert column_mask(w, 0.4).all(dim=0).tolist() == [False, True, True]


def test_block_mask_removes_whole_blocks():
    w = _w((8, 12), seed=5)
    keep = block_mask(w, 0.5, block=(2, 4))
    blocks = keep.reshape(4, 2, 3, 4).permute(0, 2, 1, 3).reshape(12, 8)  # (block, entries)
    assert (blocks.all(dim=1) | (~blocks).all(dim=1)).all()  # every block is all kept or all removed
    assert int((~blocks.all(dim=1)).sum()) == 6
    norms = w.reshape(4, 2, 3, 4).permute(0, 2, 1, 3).reshape(12, 8).norm(dim=1)
    gone = ~blocks.all(dim=1)
    assert norms[gone].max() <= norms[~gone].min()
    # a block as tall as the matrix is a column group; a block one row high and the full width is a row
    assert torch.equal(block_mask(w, 0.5, block=(8, 1)), column_mask(w, 0.5))
    assert torch.equal(block_mask(w, 0.25, block=(1, 12)), row_mask(w, 0.25))


def test_block_mask_head_groups():
    """An attention head of a query projection is a block of head_dim consecutive rows."""
    w = _w((12, 6), seed=6)
    keep = block_mask(w, 0.5, block=(4, 6))  # 3 heads of 4 rows: one head removed
    assert int((~keep).all(dim=1).sum()) == 4


def test_nm_kind_reuses_nm_mask():
    w = _w((4, 16), seed=8)
    keep = sparsity_mask(w, "2:4")
    assert torch.equal(keep, nm_mask(w.abs(), 2, 4))
    assert check_nm(w.masked_fill(~keep, 0.0), 2, 4)
    assert torch.equal(sparsity_mask(w, "N:M", n=1, m=4), nm_mask(w.abs(), 1, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_dispatcher_every_kind(kind):
    w = _w((8, 16), seed=9)
    keep = sparsity_mask(w, kind, 0.5, block=(2, 4), n=2, m=4)
    assert keep.shape == w.shape and keep.dtype == torch.bool
    assert mask_sparsity(keep) == pytest.approx(0.5)
    assert torch.equal(sparsity_mask(w, "unstructured", 0.5), magnitude_mask(w, 0.5))


def test_structured_error_is_at_least_unstructured():
    w = _w((32, 64), seed=10)
    err = {kind: float((w - w.masked_fill(~sparsity_mask(w, kind, 0.5, block=(4, 4)), 0.0)).norm())
           for kind in ("unstructured", "2:4", "block", "row", "column")}
    assert err["unstructured"] == min(err.values())  # keeping the largest entries minimises the error


def test_mask_sparsity():
    assert mask_sparsity(torch.tensor([True, False, False, True])) == 0.5
    with pytest.raises(ValueError, match="keep"):
        mask_sparsity(torch.ones(3))


# --- bad input --------------------------------------------------------------------------------------------------


def test_bad_arguments_name_the_argument():
    w = _w((8, 12))
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, 1.2)
    with pytest.raises(ValueError, match="exactly one of `sparsity` and `k`"):
        magnitude_mask(w)
    with pytest.raises(ValueError, match="exactly one of `sparsity` and `k`"):
        magnitude_mask(w, 0.5, k=3)
    with pytest.raises(ValueError, match="`k`"):
        magnitude_mask(w, k=97)
    with pytest.raises(ValueError, match="`k`"):
        magnitude_mask(w, k=2.0)
    with pytest.raises(ValueError, match="shape"):
        random_mask((3, -1), 0.5)
    with pytest.raises(ValueError, match="shape"):
        random_mask("3x4", 0.5)
    with pytest.raises(ValueError, match="weight"):
        row_mask(torch.ones(5), 0.5)
    with pytest.raises(ValueError, match="block"):
        block_mask(w, 0.5, block=(3, 5))
    with pytest.raises(ValueError, match="block"):
        block_mask(w, 0.5, block=(0, 4))
    with pytest.raises(ValueError, match="kind"):
        sparsity_mask(w, "diagonal", 0.5)
    with pytest.raises(ValueError, match="m"):
        sparsity_mask(w, "2:5")
    with pytest.raises(ValueError, match="weight"):
        magnitude_mask(torch.tensor([1.0, float("nan")]), 0.5)
