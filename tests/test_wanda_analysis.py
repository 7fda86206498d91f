"""Chapter 5's helpers (pruning_lab.wanda_analysis) on tiny random Llama models built offline."""
from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from pruning_lab import wanda_analysis as wa  # noqa: E402
from pruning_lab.llm import find_decoder_blocks, prunable_linears, prune_model, restore_weights  # noqa: E402
from pruning_lab.magnitude import magnitude_prune  # noqa: E402
from pruning_lab.nm import check_nm  # noqa: E402
from pruning_lab.sparsegpt import HessianAccumulator, sparsegpt_prune  # noqa: E402
from pruning_lab.wanda import InputNormAccumulator, wanda_prune, wanda_scores  # noqa: E402

VOCAB = 128


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 64):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture
def calib():
    return torch.randint(0, VOCAB, (5, 24), generator=torch.Generator().manual_seed(1))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _inputs_by_hand(model, names, calib):
    """Every input of the named linears, window by window, from an ordinary forward of the model."""
    linears = prunable_linears(model)
    seen = {n: [] for n in names}
    handles = [linears[n].register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].detach().clone()))
               for n in names]
    with torch.no_grad():
        for i in range(calib.shape[0]):
            model(input_ids=calib[i : i + 1])
    for h in handles:
        h.remove()
    return seen


# ------------------------------------------------------------------------------------------ worked problem 3
def test_worked_problem_3_prunes_w6_w4_w3():
    w = torch.tensor([[0.8, 0.05, 1.5, 0.3, 0.01, 0.6]], dtype=torch.float64)
    norms = torch.tensor([1.0, 20.0, 0.5, 2.0, 100.0, 0.8], dtype=torch.float64)
    s = wanda_scores(w, norms**2)
    torch.testing.assert_close(s[0], torch.tensor([0.8, 1.0, 0.75, 0.6, 1.0, 0.48]))  # float32 scores
    pruned = wanda_prune(w, norms**2, 0.5)
    assert torch.nonzero(pruned[0] == 0).flatten().tolist() == [2, 3, 5]  # w3, w4, w6
    assert torch.nonzero(magnitude_prune(w, 0.5)[0] == 0).flatten().tolist() == [1, 3, 4]  # w2, w4, w5


# ------------------------------------------------------------------------------------------ collect_input_stats
def test_collect_input_stats_equals_hooks_by_hand(calib):
    model = tiny_llama()
    before = _state(model)
    names = ["model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj", "model.layers.0.mlp.up_proj"]
    stats = wa.collect_input_stats(model, calib, names, hessian=True)
    assert list(stats) == names and _same_state(model, before)
    seen = _inputs_by_hand(model, names, calib)
    for n in names:
        acc, hacc = InputNormAccumulator(seen[n][0].shape[-1]), HessianAccumulator(seen[n][0].shape[-1])
        for x in seen[n]:
            acc.add_batch(x)
            hacc.add_batch(x)
        torch.testing.assert_close(stats[n].sq_norms, acc.sq_norms)
        torch.testing.assert_close(stats[n].hessian, hacc.hessian)
        torch.testing.assert_close(stats[n].norms, acc.sq_norms.sqrt())
        assert stats[n].ntokens == calib.numel()
    # no hessian unless asked (or only for some layers); batching does not change the statistics
    other = wa.collect_input_stats(model, calib, names, batch_size=3, hessian=names[1:2])
    for n in names:
        assert (other[n].hessian is None) == (n != names[1])
        torch.testing.assert_close(other[n].sq_norms, stats[n].sq_norms, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="hessian"):
        wa.collect_input_stats(model, calib, names[:1], hessian=names[1:])


def test_collect_input_stats_stops_after_the_last_needed_block(calib):
    model = tiny_llama(layers=3)
    _, blocks = find_decoder_blocks(model)
    calls = [0, 0, 0]
    hs = [b.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
          for i, b in enumerate(blocks)]
    stats = wa.collect_input_stats(model, calib, ["model.layers.0.self_attn.q_proj"])
    for h in hs:
        h.remove()
    assert calls == [calib.shape[0], 0, 0]
    everything = wa.collect_input_stats(model, calib)
    assert set(everything) == set(prunable_linears(model))
    torch.testing.assert_close(everything["model.layers.0.self_attn.q_proj"].sq_norms,
                               stats["model.layers.0.self_attn.q_proj"].sq_norms)


def test_collect_input_stats_bad_input(calib):
    model = tiny_llama()
    with pytest.raises(ValueError, match="layers"):
        wa.collect_input_stats(model, calib, ["model.layers.9.mlp.up_proj"])
    with pytest.raises(ValueError, match="layers"):
        wa.collect_input_stats(model, calib, "model.layers.0.mlp.up_proj")
    with pytest.raises(ValueError, match="calibration"):
        wa.collect_input_stats(model, torch.rand(2, 8))
    with pytest.raises(ValueError, match="batch_size"):
        wa.collect_input_stats(model, calib, batch_size=0)


# ------------------------------------------------------------------------------------------ reconstruction error
def test_reconstruction_error():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=g)
    x = torch.randn(3, 7, 10, generator=g)  # any leading dims
    p = magnitude_prune(w, 0.5)
    X = x.reshape(-1, 10).double()
    direct = float(((w.double() - p.double()) @ X.T).square().sum() / (w.double() @ X.T).square().sum())
    assert wa.reconstruction_error(w, p, x=x) == pytest.approx(direct, rel=1e-12)
    H = HessianAccumulator(10)
    H.add_batch(x)
    assert wa.reconstruction_error(w, p, gram=H.hessian) == pytest.approx(direct, rel=1e-5)  # scale cancels
    assert wa.reconstruction_error(w, w, x=x) == 0.0
    assert wa.reconstruction_error(w, torch.zeros_like(w), x=x) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pruned"):
        wa.reconstruction_error(w, p[:, :5], x=x)
    with pytest.raises(ValueError, match="`x`"):
        wa.reconstruction_error(w, p)
    with pytest.raises(ValueError, match="`x`"):
        wa.reconstruction_error(w, p, x=x, gram=H.hessian)
    with pytest.raises(ValueError, match="gram"):
        wa.reconstruction_error(w, p, gram=torch.eye(4))
    with pytest.raises(ValueError, match="x"):
        wa.reconstruction_error(w, p, x=torch.randn(4, 9))


# ------------------------------------------------------------------------------------------ several methods, one layer
def _layer_stats(seed=0, d_out=12, d_in=16, outliers=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_out, d_in, generator=g)
    x = torch.randn(40, d_in, generator=g)
    if outliers:
        x[:, 3] *= 30.0  # an outlier channel
    acc, hacc = InputNormAccumulator(d_in), HessianAccumulator(d_in)
    acc.add_batch(x)
    hacc.add_batch(x)
    return w, x, wa.InputStats(acc.sq_norms, acc.ntokens, hacc.hessian)


def test_prune_layer_methods_match_the_per_matrix_rules():
    w, x, st = _layer_stats()
    w0 = w.clone()
    out = wa.prune_layer_methods(w, st, 0.5, methods=wa.LAYER_METHODS)
    assert torch.equal(w, w0)
    torch.testing.assert_close(out["magnitude"].weight, magnitude_prune(w, 0.5))
    torch.testing.assert_close(out["wanda"].weight, wanda_prune(w, st.sq_norms, 0.5))
    torch.testing.assert_close(out["wanda_layer"].weight, wanda_prune(w, st.sq_norms, 0.5, group="layer"))
    torch.testing.assert_close(out["sparsegpt"].weight, sparsegpt_prune(w, st.hessian, 0.5))
    for meth, r in out.items():
        assert int((~r.keep).sum()) == w.numel() // 2, meth
        assert torch.equal(r.weight == 0, ~r.keep) or meth != "sparsegpt"
        assert r.error == pytest.approx(wa.reconstruction_error(w, r.weight, x=x), rel=1e-4)
    assert ((~out["wanda"].keep).sum(1) == 8).all()  # per row
    # the outlier channel is kept by Wanda in every row, not by magnitude
    assert int(out["wanda"].keep[:, 3].sum()) >= 11 > int(out["magnitude"].keep[:, 3].sum())
    # the output error: SparseGPT (with its update) < Wanda < magnitude on this layer
    assert out["sparsegpt"].error < out["wanda"].error < out["magnitude"].error
    nm = wa.prune_layer_methods(w, st, methods=["wanda", "sparsegpt", "magnitude"], n=2, m=4)
    for r in nm.values():
        assert check_nm(r.weight, 2, 4) and int(r.keep.sum()) == w.numel() // 2


def test_prune_layer_methods_bad_input():
    w, x, st = _layer_stats()
    with pytest.raises(ValueError, match="methods"):
        wa.prune_layer_methods(w, st, methods=["obs"])
    with pytest.raises(ValueError, match="stats"):
        wa.prune_layer_methods(w, wa.InputStats(st.sq_norms, st.ntokens))
    with pytest.raises(ValueError, match="stats"):
        wa.prune_layer_methods(w[:, :8], st)
    with pytest.raises(ValueError, match="sparsity"):
        wa.prune_layer_methods(w, st, 1.2)


def test_sparsegpt_with_a_diagonal_hessian_is_wanda_per_layer():
    """The chapter's derivation: OBS with H = diag(2 ||X_j||^2), no dampening, one block = Wanda's scores
    ranked over the whole matrix, and no weight update; per N:M group it is Wanda's N:M mask."""
    w, x, st = _layer_stats(seed=3)
    w, sq = w.double(), st.sq_norms.double()
    H = torch.diag(2 * sq / st.ntokens)
    sgpt = sparsegpt_prune(w, H, 0.5, percdamp=0.0, blocksize=w.shape[1])
    torch.testing.assert_close(sgpt, wanda_prune(w, sq, 0.5, group="layer"), rtol=0, atol=1e-12)
    sgpt24 = sparsegpt_prune(w, H, n=2, m=4, percdamp=0.0)
    torch.testing.assert_close(sgpt24, wanda_prune(w, sq, n=2, m=4), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ one driver step
def test_block_inputs_are_the_dense_block_inputs(calib):
    model = tiny_llama(layers=3)
    before = _state(model)
    _, blocks = find_decoder_blocks(model)
    for b in (0, 2):
        seen = []
        h = blocks[b].register_forward_pre_hook(
            lambda m, a, k: seen.append((a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True)
        with torch.no_grad():
            model(input_ids=calib)
        h.remove()
        x, kw = wa.block_inputs(model, calib, b)
        torch.testing.assert_close(x, seen[0], rtol=1e-5, atol=1e-5)
        assert isinstance(kw, dict) and "position_embeddings" in kw
    assert _same_state(model, before)
    with pytest.raises(ValueError, match="block"):
        wa.block_inputs(model, calib, 3)


def test_chained_steps_reproduce_prune_model(calib):
    """wanda_prune_block + wanda_block_step over every block = prune_model(model, "wanda") exactly."""
    ref = tiny_llama(layers=3)
    prune_model(ref, "wanda", 0.5, calibration=calib, progress=False)
    model = tiny_llama(layers=3)
    before = _state(model)
    _, blocks = find_decoder_blocks(model)
    _, ref_blocks = find_decoder_blocks(ref)
    x, kw = wa.block_inputs(model, calib, 0)
    for b, block in enumerate(blocks):
        pruned = wa.wanda_prune_block(block, x, kw, 0.5)
        for (name, lin), ref_lin in zip(pruned.named_modules(), ref_blocks[b].modules()):
            if isinstance(lin, nn.Linear):
                torch.testing.assert_close(lin.weight, ref_lin.weight, rtol=0, atol=0, msg=f"block {b} {name}")
        nxt = wa.wanda_block_step(block, x, kw, 0.5)
        torch.testing.assert_close(nxt, wa.block_outputs(pruned, x, kw), rtol=0, atol=0)
        x = nxt
    assert _same_state(model, before)  # the steps pruned copies only


def test_block_step_options_and_errors(calib):
    model = tiny_llama()
    x, kw = wa.block_inputs(model, calib, 0)
    block = find_decoder_blocks(model)[1][0]
    for kwargs in ({}, {"group": "layer"}, {"n": 2, "m": 4}):
        pruned = wa.wanda_prune_block(block, x, kw, 0.3 if not kwargs else 0.5, **kwargs)
        for lin in pruned.modules():
            if isinstance(lin, nn.Linear):
                w = lin.weight
                if "n" in kwargs:
                    assert check_nm(w, 2, 4)
                elif kwargs:
                    assert int((w == 0).sum()) == int(w.numel() * 0.5)
                else:
                    assert ((w == 0).sum(1) == int(w.shape[1] * 0.3)).all()
    dense = wa.block_outputs(block, x, kw)
    assert (wa.wanda_block_step(block, x, kw, 0.5) - dense).abs().max() > 1e-4
    torch.testing.assert_close(wa.wanda_block_step(block, x, kw, 0.0), dense)
    with pytest.raises(ValueError, match="block"):
        wa.wanda_block_step("block", x, kw)
    with pytest.raises(ValueError, match="inputs"):
        wa.wanda_block_step(block, x[0], kw)
    with pytest.raises(ValueError, match="block_kwargs"):
        wa.wanda_block_step(block, x, None)
    with pytest.raises(ValueError, match="group"):
        wa.wanda_block_step(block, x, kw, group="global")
    with pytest.raises(ValueError, match="m"):
        wa.wanda_block_step(block, x, kw, n=2, m=3)


# ------------------------------------------------------------------------------------------ comparison groups
def test_wanda_weights_from_stats_groups(calib):
    model = tiny_llama()
    before = _state(model)
    stats = wa.collect_input_stats(model, calib)
    linears = prunable_linears(model)
    for group in ("row", "layer"):
        new = wa.wanda_weights_from_stats(model, stats, 0.5, group=group)
        for n, w in new.items():
            torch.testing.assert_close(w, wanda_prune(linears[n].weight, stats[n].sq_norms, 0.5, group=group))
    glob = wa.wanda_weights_from_stats(model, stats, 0.5, group="global")
    assert _same_state(model, before)
    # one threshold: exactly int(total * s) zeros in all, the lowest scores of the whole model
    scores = torch.cat([wanda_scores(linears[n].weight, stats[n].sq_norms).reshape(-1) for n in stats])
    pruned = torch.cat([(glob[n] == 0).reshape(-1) for n in stats])
    k = int(scores.numel() * 0.5)
    assert int(pruned.sum()) == k
    assert scores[pruned].max() <= scores[~pruned].min()
    fractions = [float((glob[n] == 0).float().mean()) for n in stats]
    assert max(fractions) - min(fractions) > 0.05  # layers lose different fractions
    restore_weights(model, glob)
    assert all(torch.equal(linears[n].weight, glob[n]) for n in stats)
    with pytest.raises(ValueError, match="group"):
        wa.wanda_weights_from_stats(model, stats, group="block")
    with pytest.raises(ValueError, match="stats"):
        wa.wanda_weights_from_stats(model, {"model.layers.7.mlp.up_proj": stats["model.layers.0.mlp.up_proj"]})
    with pytest.raises(ValueError, match="stats"):
        wa.wanda_weights_from_stats(model, {})
