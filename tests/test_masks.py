import pytest
import torch

from pruning_lab.masks import apply_mask, mask_lowest, num_pruned


def test_exact_count_with_ties_and_index_order():
    s = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, 0.5])
    keep = mask_lowest(s, 0.5)
    assert (~keep).sum() == 3
    # 0.5 first, then the ties in index order
    assert (~keep).nonzero().flatten().tolist() == [0, 1, 5]


def test_row_groups_prune_the_same_count_per_row():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 10, generator=g)
    keep = mask_lowest(s, 0.3, group="row")
    assert ((~keep).sum(dim=1) == 3).all()
    keep_t = mask_lowest(s, 0.3)
    assert (~keep_t).sum() == num_pruned(70, 0.3) == 21


def test_zero_sparsity_keeps_everything_and_apply_mask_is_pure():
    w = torch.randn(3, 4)
    assert mask_lowest(w.abs(), 0.0).all()
    keep = mask_lowest(w.abs(), 0.5)
    before = w.clone()
    out = apply_mask(w, keep)
    assert torch.equal(w, before) and (out[~keep] == 0).all()
    apply_mask(w, keep, inplace=True)
    assert (w[~keep] == 0).all()


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "half", True])
def test_bad_sparsity(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        mask_lowest(torch.ones(4), sparsity)


def test_bad_group_and_shapes():
    with pytest.raises(ValueError, match="group"):
        mask_lowest(torch.ones(4), 0.5, group="column")
    with pytest.raises(ValueError, match="scores"):
        mask_lowest(torch.ones(4), 0.5, group="row")
    with pytest.raises(ValueError, match="keep"):
        apply_mask(torch.ones(4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep"):
        apply_mask(torch.ones(4), torch.ones(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_lowest_k_equals_a_stable_sort_with_many_ties(dtype):
    from pruning_lab.masks import lowest_k

    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 4, (5, 37), generator=g).to(dtype)  # lots of ties
    for k in (0, 1, 9, 18, 36, 37):
        expected = torch.zeros(5, 37, dtype=torch.bool)
        expected.scatter_(1, torch.sort(s.float(), dim=1, stable=True).indices[:, :k], True)
        assert torch.equal(lowest_k(s, k), expected), k
    with pytest.raises(ValueError, match="k"):
        lowest_k(s, 38)
