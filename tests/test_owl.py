"""pruning_lab.owl: outlier ratios and OWL's per-block sparsities (Yin et al. 2024)."""
import pytest
import torch

from pruning_lab import owl


def test_outlier_ratio_counts_entries_above_m_times_the_mean():
    a = torch.tensor([1.0] * 9 + [91.0])  # mean 10: only 91 exceeds 5 x 10
    assert owl.outlier_ratio([a], 5) == pytest.approx(0.1)
    assert owl.outlier_ratio([a], 10) == 0.0
    # over several matrices TOGETHER: one mean for the block
    assert owl.outlier_ratio([a[:5].reshape(1, 5), a[5:].reshape(5, 1)], 5) == pytest.approx(0.1)


def test_owl_sparsities_keep_the_mean_and_the_range():
    d = [0.01, 0.03, 0.02, 0.05]
    s = owl.owl_sparsities(d, 0.7, lam=0.08)
    assert sum(s) / len(s) == pytest.approx(0.7)
    assert max(s) - min(s) == pytest.approx(0.16)  # 2 lambda
    assert s.index(min(s)) == d.index(max(d)) and s.index(max(s)) == d.index(min(d))  # more outliers, fewer pruned
    assert owl.owl_sparsities([0.02] * 3, 0.5) == pytest.approx([0.5] * 3)  # equal ratios: uniform
    assert owl.owl_sparsities(d, 0.5, lam=0.0) == pytest.approx([0.5] * 4)


@pytest.mark.parametrize("call, word", [
    (lambda: owl.owl_sparsities([0.1], 1.2), "`sparsity`"),
    (lambda: owl.owl_sparsities([0.1, 0.2], 0.95, lam=0.08), "`lam`"),
    (lambda: owl.owl_sparsities([], 0.5), "`ratios`"),
    (lambda: owl.owl_sparsities([float("nan")], 0.5), "`ratios`"),
    (lambda: owl.outlier_ratio([], 5), "`scores`"),
    (lambda: owl.outlier_ratio([torch.ones(3)], 0), "`m`"),
    (lambda: owl.outlier_ratio([torch.tensor([1.0, float("inf")])]), "NaN or inf"),
])
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_block_outlier_ratios_on_a_tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # make block 1 full of outliers: 5% of its weights 20x larger
        for lin in (m for m in model.model.layers[1].modules() if isinstance(m, torch.nn.Linear)):
            lin.weight[torch.rand(lin.weight.shape, generator=gen) < 0.05] *= 20
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calib = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    d = owl.block_outlier_ratios(model, calib, 5)
    assert len(d) == 3 and all(0 <= x < 1 for x in d)
    assert d[1] > max(d[0], d[2])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    s = owl.owl_sparsities(d, 0.5)
    assert s[1] == min(s)
