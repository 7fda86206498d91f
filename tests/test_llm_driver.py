"""The layer-wise driver on tiny random Llama and OPT models (built offline in milliseconds)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from pruning_lab.llm import check_sparsity, find_decoder_blocks, prunable_linears, prune_model  # noqa: E402
from pruning_lab.sparsegpt import HessianAccumulator, sparsegpt_prune  # noqa: E402
from pruning_lab.wanda import InputNormAccumulator, wanda_prune  # noqa: E402

VOCAB = 128


def tiny_llama(seed: int = 0, layers: int = 2):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_opt(seed: int = 0, layers: int = 2):
    torch.manual_seed(seed)
    cfg = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=layers, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=64,
    )
    return transformers.OPTForCausalLM(cfg).eval()


BUILDERS = {"llama": tiny_llama, "opt": tiny_opt}


@pytest.fixture(params=sorted(BUILDERS))
def arch(request):
    return request.param


@pytest.fixture
def calib():
    return torch.randint(0, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))


def _expected_zeros(method, w, sparsity, nm):
    d_out, d_in = w.shape
    if nm is not None:
        return d_out * d_in // nm[1] * (nm[1] - nm[0])
    if method == "wanda":
        return d_out * int(d_in * sparsity)
    return int(w.numel() * sparsity)  # per matrix (SparseGPT: one block of <= 128 columns here)


def _count_block_calls(model, method, calib, **kwargs):
    """Prune ``model`` and count, per decoder block, its forward calls and those of its mlp.down_proj."""
    _, blocks = find_decoder_blocks(model)
    block_calls, down_calls = [0] * len(blocks), [0] * len(blocks)
    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: block_calls.__setitem__(i, block_calls[i] + 1)))
        handles.append(block.mlp.down_proj.register_forward_hook(
            lambda m, a, o, i=i: down_calls.__setitem__(i, down_calls[i] + 1)))
    try:
        prune_model(model, method, 0.5, calibration=calib, progress=False, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return block_calls, down_calls


@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_exact_sparsity_shapes_finite(arch, method, pattern, calib):
    model = BUILDERS[arch]()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    nm = None if pattern == "unstructured" else tuple(map(int, pattern.split(":")))
    report = prune_model(model, method, 0.5, pattern, calib, progress=False)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    for name, lin in prunable_linears(model).items():
        w = lin.weight
        zeros = int((w == 0).sum())
        assert zeros == _expected_zeros(method, w, 0.5, nm), name
        if method == "wanda" and nm is None:  # per output row
            assert ((w == 0).sum(1) == int(w.shape[1] * 0.5)).all()
        if nm is not None:  # exactly N kept in every group of M consecutive inputs
            groups = (w.reshape(w.shape[0], -1, nm[1]) != 0).sum(-1)
            assert (groups == nm[0]).all(), name
    assert report["total_sparsity"] == pytest.approx(0.5)
    assert report["method"] == method and report["pattern"] == pattern
    assert set(report["layers"]) == set(prunable_linears(model))
    if nm is not None:
        assert report["nm_valid"] is True
    logits = model(input_ids=calib).logits
    assert torch.isfinite(logits).all()


def test_other_sparsities_and_magnitude_global(calib):
    model = tiny_llama()
    report = prune_model(model, "wanda", 0.3, calibration=calib, progress=False)
    for lin in prunable_linears(model).values():
        assert ((lin.weight == 0).sum(1) == int(lin.weight.shape[1] * 0.3)).all()
    model = tiny_llama()
    total = sum(lin.weight.numel() for lin in prunable_linears(model).values())
    report = prune_model(model, "magnitude_global", 0.6, progress=False)
    zeros = sum(int((lin.weight == 0).sum()) for lin in prunable_linears(model).values())
    assert zeros == int(total * 0.6)
    assert report["total_sparsity"] == pytest.approx(zeros / total)
    # global threshold: per-layer sparsities differ (different weight scales), unlike per-matrix magnitude
    assert len({round(v, 3) for v in report["layers"].values()}) > 1
    model = tiny_llama()
    prune_model(model, "sparsegpt", 0.0, calibration=calib, progress=False)
    assert check_sparsity(model)["total"] == 0.0


def _capture_block_inputs(block, store):
    def hook(module, args, kwargs):
        store.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    return block.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_recomputed_outputs_come_from_the_pruned_block(arch, method, calib):
    """What block 1 receives during pruning = block 0's output computed with block 0's PRUNED weights."""
    model = BUILDERS[arch]()
    _, blocks = find_decoder_blocks(model)
    with torch.no_grad():  # block 1's input in the DENSE model
        dense_in = []
        h = _capture_block_inputs(blocks[1], dense_in)
        model(input_ids=calib)
        h.remove()
    seen = []
    h = _capture_block_inputs(blocks[1], seen)
    prune_model(model, method, 0.5, calibration=calib, progress=False)
    h.remove()
    # the driver's first pass through block 1 (statistics; batch_size=1): one call per calibration window
    during = torch.cat(seen[: calib.shape[0]])  # (nsamples, seqlen, hidden)
    with torch.no_grad():  # block 1's input in the PRUNED model, by an ordinary forward pass
        after = []
        h = _capture_block_inputs(blocks[1], after)
        model(input_ids=calib)
        h.remove()
    torch.testing.assert_close(during, after[0], rtol=1e-5, atol=1e-5)
    assert (during - dense_in[0]).abs().max() > 1e-3  # and it is not the dense block's output


def _layer_inputs(model, block, calib):
    """Inputs of every linear of ``block`` on the dense model, one calibration window at a time."""
    inputs: dict[str, list] = {}
    handles = [
        lin.register_forward_hook(lambda mod, args, out, name=name: inputs.setdefault(name, []).append(args[0]))
        for name, lin in block.named_modules() if isinstance(lin, nn.Linear)
    ]
    with torch.no_grad():
        for i in range(calib.shape[0]):
            model(input_ids=calib[i : i + 1])
    for h in handles:
        h.remove()
    return inputs


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_block0_equals_the_per_matrix_function(arch, method, pattern, calib):
    """Block 0 of the driver = the library's per-matrix rule on statistics gathered by hand (this also checks
    that linears sharing an input, q/k/v and gate/up, get the right statistics)."""
    ref_model = BUILDERS[arch]()
    _, ref_blocks = find_decoder_blocks(ref_model)
    inputs = _layer_inputs(ref_model, ref_blocks[0], calib)
    nm = None if pattern == "unstructured" else (2, 4)
    expected = {}
    for name, lin in ref_blocks[0].named_modules():
        if not isinstance(lin, nn.Linear):
            continue
        acc = (HessianAccumulator if method == "sparsegpt" else InputNormAccumulator)(lin.in_features)
        for x in inputs[name]:
            acc.add_batch(x)
        n, m = nm if nm else (None, None)
        expected[name] = (
            sparsegpt_prune(lin.weight, acc.hessian, 0.5, n=n, m=m) if method == "sparsegpt"
            else wanda_prune(lin.weight, acc.sq_norms, 0.5, n=n, m=m)
        )
    model = BUILDERS[arch]()
    prune_model(model, method, 0.5, pattern, calib, progress=False)
    _, blocks = find_decoder_blocks(model)
    for name, lin in blocks[0].named_modules():
        if isinstance(lin, nn.Linear):
            torch.testing.assert_close(lin.weight, expected[name], rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(lin.weight == 0, expected[name] == 0), name


def test_batch_size_does_not_change_the_mask(calib):
    a, b = tiny_llama(), tiny_llama()
    prune_model(a, "wanda", 0.5, calibration=calib, progress=False, batch_size=1)
    prune_model(b, "wanda", 0.5, calibration=calib, progress=False, batch_size=4)
    for (name, la), lb in zip(prunable_linears(a).items(), prunable_linears(b).values()):
        torch.testing.assert_close(la.weight, lb.weight, rtol=0, atol=0, msg=name)


def test_magnitude_and_random_run_no_forward_pass():
    model = tiny_llama()

    def boom(*args, **kwargs):
        raise AssertionError("forward pass during data-free pruning")

    h = model.register_forward_pre_hook(boom)
    prune_model(model, "magnitude", 0.5, progress=False)
    prune_model(tiny_llama(), "random", 0.5, progress=False)
    h.remove()


def test_random_is_seeded():
    a, b, c = tiny_llama(), tiny_llama(), tiny_llama()
    prune_model(a, "random", 0.5, seed=3, progress=False)
    prune_model(b, "random", 0.5, seed=3, progress=False)
    prune_model(c, "random", 0.5, seed=4, progress=False)
    la, lb, lc = (list(prunable_linears(x).values())[0].weight for x in (a, b, c))
    assert torch.equal(la, lb)
    assert not torch.equal(la == 0, lc == 0)


def test_tf32_flag_and_training_mode_restored(calib):
    model = tiny_llama().train()
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        prune_model(model, "wanda", 0.5, calibration=calib, progress=True)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    assert model.training


def test_check_sparsity_counts_only_block_linears():
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to the embeddings: both excluded
        lin = model.model.layers[0].self_attn.q_proj
        lin.weight[:, :16] = 0.0  # a quarter of q_proj
    out = check_sparsity(model)
    assert out["layers"]["model.layers.0.self_attn.q_proj"] == pytest.approx(0.25)
    assert out["total"] == pytest.approx(lin.weight.numel() * 0.25 / out["params"])
    assert "nm_valid" not in out
    assert check_sparsity(model, "2:4")["nm_valid"] is False
    prune_model(model, "magnitude", pattern="2:4", progress=False)
    out = check_sparsity(model, "2:4")
    assert out["nm_valid"] is True and out["nm_invalid"] == []
    assert check_sparsity(model, "1:4")["nm_valid"] is False


def test_pruned_model_saves_and_loads_in_plain_transformers(tmp_path, calib):
    model = tiny_llama()
    prune_model(model, "sparsegpt", 0.5, "2:4", calib, progress=False)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert check_sparsity(loaded, "2:4")["nm_valid"]
    torch.testing.assert_close(loaded(input_ids=calib).logits, model(input_ids=calib).logits)


def test_accelerate_dispatched_model(calib):
    """A model dispatched with accelerate (hooks on every block) is pruned block by block."""
    accelerate = pytest.importorskip("accelerate")
    model = tiny_llama()
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = accelerate.dispatch_model(model, device_map=device_map, force_hooks=True)
    ref = tiny_llama()
    prune_model(model, "sparsegpt", 0.5, calibration=calib, progress=False)
    prune_model(ref, "sparsegpt", 0.5, calibration=calib, progress=False)
    for (name, a), b in zip(prunable_linears(model).items(), prunable_linears(ref).values()):
        torch.testing.assert_close(a.weight, b.weight, msg=name)


# --- bad input: ValueError naming the argument, nothing pruned ---------------------------------------------


@pytest.mark.parametrize("sparsity", [1.0, -0.1, float("nan"), 1.5])
def test_bad_sparsity(sparsity, calib):
    with pytest.raises(ValueError, match="sparsity"):
        prune_model(tiny_llama(), "wanda", sparsity, calibration=calib, progress=False)


@pytest.mark.parametrize("pattern", ["3:2", "0:4", "2-4", "2:3", "unstructred"])
def test_bad_pattern(pattern, calib):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="pattern"):
        prune_model(model, "sparsegpt", 0.5, pattern, calib, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_method_and_global_nm(calib):
    with pytest.raises(ValueError, match="method"):
        prune_model(tiny_llama(), "obs", 0.5, calibration=calib, progress=False)
    with pytest.raises(ValueError, match="pattern"):
        prune_model(tiny_llama(), "magnitude_global", 0.5, "2:4", progress=False)


@pytest.mark.parametrize(
    "bad",
    [None, torch.empty(0, 16, dtype=torch.long), torch.rand(4, 16), torch.randint(0, VOCAB, (16,)),
     torch.full((2, 8), VOCAB)],
    ids=["none", "empty", "float", "1d", "out-of-vocab"],
)
def test_bad_calibration(bad):
    with pytest.raises(ValueError, match="calibration"):
        prune_model(tiny_llama(), "sparsegpt", 0.5, calibration=bad, progress=False)


def test_bad_options(calib):
    for kwargs, name in [({"blocksize": 0}, "blocksize"), ({"percdamp": -1.0}, "percdamp"),
                         ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=name):
            prune_model(tiny_llama(), "sparsegpt", 0.5, calibration=calib, progress=False, **kwargs)


def test_no_decoder_blocks():
    with pytest.raises(ValueError, match="model"):
        prune_model(nn.Sequential(nn.Linear(4, 4)), "magnitude", 0.5, progress=False)
    with pytest.raises(ValueError, match="model"):
        check_sparsity(nn.Linear(4, 4))


def test_nonfinite_weights_rejected_before_pruning():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    first = model.model.layers[0].self_attn.q_proj.weight.clone()
    with pytest.raises(ValueError, match="model"):
        prune_model(model, "magnitude", 0.5, progress=False)
    assert torch.equal(first, model.model.layers[0].self_attn.q_proj.weight)


def test_nonfinite_activations(calib):
    model = tiny_llama()
    with torch.no_grad():  # inf embedding of a token in the calibration set: block 0's inputs are inf
        model.model.embed_tokens.weight[int(calib[0, 0])] = float("inf")
    q0 = model.model.layers[0].self_attn.q_proj.weight.clone()
    with pytest.raises(ValueError, match="`model`.*nothing was pruned"):
        prune_model(model, "wanda", 0.5, calibration=calib, progress=False)
    assert torch.equal(q0, model.model.layers[0].self_attn.q_proj.weight)

    model = tiny_llama()
    with torch.no_grad():  # block 1 turns finite inputs into inf: found mid-way, and the message says so
        model.model.layers[1].post_attention_layernorm.weight.fill_(float("inf"))
    with pytest.raises(ValueError, match="`model`.*ALREADY PRUNED"):
        prune_model(model, "sparsegpt", 0.5, calibration=calib, progress=False)


def test_disk_offloaded_weights_are_rejected(calib):
    model = tiny_llama()
    with torch.device("meta"):
        model.model.layers[1].mlp.up_proj = nn.Linear(64, 128, bias=False)
    with pytest.raises(ValueError, match="model"):
        prune_model(model, "sparsegpt", 0.5, calibration=calib, progress=False)


def test_one_statistics_pass_and_one_propagate_pass_per_block(calib):
    """No extra forward passes: block b runs nsamples times to gather statistics and nsamples times to feed
    block b+1 (the last block only the first); the statistics pass stops before the block's last linear."""
    model = tiny_llama(layers=3)
    n = calib.shape[0]
    block_calls, down_calls = _count_block_calls(model, "wanda", calib)
    assert block_calls == [3 * n, 2 * n, n]  # block 0 also sees the capture calls, stopped before it runs
    assert down_calls == [1 + n, 1 + n, 1]  # the statistics pass runs down_proj on the first window only


# ------------------------------------------------------------------ run_grid, snapshots, Wanda's group ablation
def test_run_grid_prunes_each_run_from_dense_and_leaves_the_model_dense(calib):
    from pruning_lab.llm import run_grid, snapshot_weights

    model = tiny_llama()
    before = snapshot_weights(model)
    tokens = torch.randint(0, VOCAB, (200,), generator=torch.Generator().manual_seed(3))
    rows = run_grid(model, [{"method": "magnitude"}, {"method": "wanda", "pattern": "2:4"},
                            {"method": "wanda", "label": "wanda layer", "wanda_group": "layer"}],
                    eval_tokens=tokens, seqlen=16, calibration=calib)
    assert [r["label"] for r in rows] == ["dense", "magnitude unstructured", "wanda 2:4", "wanda layer"]
    assert rows[0]["measured_sparsity"] == 0.0 and rows[0]["prune_time_s"] is None
    assert abs(rows[1]["measured_sparsity"] - 0.5) < 1e-3 and abs(rows[2]["measured_sparsity"] - 0.5) < 1e-3
    assert rows[2]["report"]["nm_valid"] and rows[3]["report"]["wanda_group"] == "layer"
    assert all(r["perplexity"] > 1 for r in rows)
    after = snapshot_weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the same run twice gives the same perplexity (each starts from the dense weights)
    again = run_grid(model, [{"method": "magnitude"}], eval_tokens=tokens, seqlen=16, dense=False)
    assert again[0]["perplexity"] == rows[1]["perplexity"]


def test_run_grid_rejects_bad_runs(calib):
    from pruning_lab.llm import run_grid

    model = tiny_llama()
    tokens = torch.randint(0, VOCAB, (64,))
    with pytest.raises(ValueError, match="runs\\[0\\]"):
        run_grid(model, [{"pattern": "2:4"}], eval_tokens=tokens, seqlen=16)
    with pytest.raises(ValueError, match="unknown keys"):
        run_grid(model, [{"method": "magnitude", "sparsty": 0.3}], eval_tokens=tokens, seqlen=16)
    with pytest.raises(ValueError, match="wanda_group"):
        prune_model(model, "wanda", 0.5, calibration=calib, wanda_group="global")


def test_wanda_layer_group_ranks_the_whole_matrix():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, generator=g)
    norms = torch.rand(16, generator=g) * 10
    out = wanda_prune(w, norms, 0.5, group="layer")
    assert int((out == 0).sum()) == 64
    s = w.abs() * norms.sqrt()
    assert s[out == 0].max() <= s[out != 0].min()
    with pytest.raises(ValueError, match="group"):
        wanda_prune(w, norms, 0.5, group="global")


# ------------------------------------------------------------------ a new method is one small class
def test_builtin_method_names_unchanged():
    from pruning_lab.llm.driver import METHOD_CLASSES, METHODS

    assert METHODS == ("magnitude", "magnitude_global", "random", "wanda", "sparsegpt")
    assert tuple(METHOD_CLASSES) == METHODS


@pytest.mark.parametrize("data", [False, True], ids=["data-free", "data-driven"])
def test_a_new_method_is_one_small_registered_class(monkeypatch, calib, data):
    """A subclass of PruneMethod registered by name runs through the same loop as the built-in methods: here
    |W_ij| alone (must equal "magnitude") and |W_ij| ||X_j|| per row (must equal "wanda")."""
    from pruning_lab.llm.driver import METHOD_CLASSES, PruneMethod
    from pruning_lab.magnitude import magnitude_prune

    class ByMagnitude(PruneMethod):
        def prune(self, weight, stats):
            return magnitude_prune(weight, self.cfg.sparsity, n=self.cfg.n, m=self.cfg.m)

    class ByWanda(PruneMethod):
        needs_data = True
        accumulator = InputNormAccumulator

        def prune(self, weight, stats):
            return wanda_prune(weight, stats.sq_norms, self.cfg.sparsity, n=self.cfg.n, m=self.cfg.m)

    monkeypatch.setitem(METHOD_CLASSES, "mine", ByWanda if data else ByMagnitude)
    mine, ref = tiny_llama(), tiny_llama()
    report = prune_model(mine, "mine", 0.5, "2:4", calib, progress=False)
    prune_model(ref, "wanda" if data else "magnitude", 0.5, "2:4", calib, progress=False)
    for (name, a), b in zip(prunable_linears(mine).items(), prunable_linears(ref).values()):
        assert torch.equal(a.weight, b.weight), name
    assert report["method"] == "mine" and report["nm_valid"] is True
    assert ("nsamples" in report) is data and "wanda_group" not in report
    monkeypatch.undo()
    with pytest.raises(ValueError, match="method"):
        prune_model(tiny_llama(), "mine", 0.5, progress=False)


# ------------------------------------------------------------------ sequential (GPTQ's "true-sequential" order)
GROUPS = {  # the groups of one block in call order: layers that share an input form one group
    "llama": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
              ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]],
    "opt": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.out_proj"], ["fc1"], ["fc2"]],
}


def test_call_groups_follow_the_call_order_and_the_shared_inputs(arch, calib):
    from pruning_lab.llm.driver import _block0_inputs, _call_groups

    model = BUILDERS[arch]()
    _, blocks = find_decoder_blocks(model)
    lins = {name: mod for name, mod in blocks[0].named_modules() if isinstance(mod, nn.Linear)}
    with torch.no_grad():
        inps, kw = _block0_inputs(model, blocks, calib, 2)
        groups = _call_groups(blocks[0], lins, inps, kw, torch.device("cpu"), 2)
    assert [sorted(g) for g in groups] == [sorted(g) for g in GROUPS[arch]]
    assert all(g[name] is lins[name] for g in groups for name in g)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_sequential_false_is_the_default_bit_for_bit(arch, method, calib):
    a, b = BUILDERS[arch](), BUILDERS[arch]()
    ra = prune_model(a, method, 0.5, calibration=calib, progress=False)
    rb = prune_model(b, method, 0.5, calibration=calib, progress=False, sequential=False)
    for (name, la), lb in zip(prunable_linears(a).items(), prunable_linears(b).values()):
        assert torch.equal(la.weight, lb.weight), name
    assert ra["sequential"] is False and rb["sequential"] is False


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sequential_valid_sparsity_differs_and_first_group_equals_default(arch, method, pattern, calib):
    """Every group is calibrated on the outputs of the groups already pruned: the first group of block 0 (q/k/v,
    calibrated on the dense block's inputs) is the default's; a later group differs."""
    nm = None if pattern == "unstructured" else (2, 4)
    default, seq = BUILDERS[arch](), BUILDERS[arch]()
    prune_model(default, method, 0.5, pattern, calib, progress=False)
    report = prune_model(seq, method, 0.5, pattern, calib, progress=False, sequential=True)
    assert report["sequential"] is True and report["total_sparsity"] == pytest.approx(0.5)
    if nm is not None:
        assert report["nm_valid"] is True
    for name, lin in prunable_linears(seq).items():
        assert int((lin.weight == 0).sum()) == _expected_zeros(method, lin.weight, 0.5, nm), name
    assert torch.isfinite(seq(input_ids=calib).logits).all()
    path, _ = find_decoder_blocks(seq)
    d, s = prunable_linears(default), prunable_linears(seq)
    for name in GROUPS[arch][0]:  # q/k/v of block 0: identical
        assert torch.equal(d[f"{path}.0.{name}"].weight, s[f"{path}.0.{name}"].weight), name
    later = [f"{path}.0.{name}" for group in GROUPS[arch][1:] for name in group]
    assert any(not torch.equal(d[k].weight, s[k].weight) for k in later)  # block 0 already differs
    assert any(not torch.equal(d[k].weight, s[k].weight) for k in d)


def test_sequential_statistics_come_from_the_pruned_earlier_groups(calib):
    """o_proj of block 0 under sequential=True = the per-matrix rule on o_proj's inputs computed by a forward
    pass through block 0 with its q/k/v already pruned (by hand, on all calibration windows)."""
    seq, ref = tiny_llama(), tiny_llama()
    prune_model(seq, "wanda", 0.5, calibration=calib, progress=False, sequential=True)
    attn_ref, attn_seq = ref.model.layers[0].self_attn, seq.model.layers[0].self_attn
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj"):  # the pruned first group, copied into the dense model
            getattr(attn_ref, name).weight.copy_(getattr(attn_seq, name).weight)
    acc = InputNormAccumulator(attn_ref.o_proj.in_features)
    h = attn_ref.o_proj.register_forward_pre_hook(lambda mod, args: acc.add_batch(args[0]))
    with torch.no_grad():
        for i in range(calib.shape[0]):
            ref(input_ids=calib[i : i + 1])
    h.remove()
    expected = wanda_prune(attn_ref.o_proj.weight, acc.sq_norms, 0.5)
    torch.testing.assert_close(attn_seq.o_proj.weight, expected, rtol=0, atol=0)


def test_sequential_runs_one_statistics_pass_per_group(calib):
    """Per block: one probe of the first batch (the call order), then one pass over all windows per group, each
    stopping at its group's last linear from the second window on; then one propagate pass."""
    model = tiny_llama(layers=2)
    n = calib.shape[0]
    block_calls, down_calls = _count_block_calls(model, "sparsegpt", calib, sequential=True)
    # block 0: n capture calls, 1 probe, 4 group passes of n, n propagate; block 1: no propagate
    assert block_calls == [n + 1 + 4 * n + n, 1 + 4 * n]
    # down_proj runs on the probe, the first window of each group pass and every propagated window
    assert down_calls == [1 + 4 + n, 1 + 4]


def test_sequential_leaves_an_uncalled_linear_dense_with_a_warning(calib):
    model = tiny_llama()
    model.model.layers[1].mlp.unused = nn.Linear(64, 64)  # never called by the block's forward
    before = model.model.layers[1].mlp.unused.weight.clone()
    with pytest.warns(RuntimeWarning, match="unused was not called"):
        prune_model(model, "wanda", 0.5, calibration=calib, progress=False, sequential=True)
    assert torch.equal(before, model.model.layers[1].mlp.unused.weight)
    assert (model.model.layers[1].mlp.down_proj.weight == 0).float().mean() == 0.5


@pytest.mark.parametrize("bad", [1, 0, "yes", None, 1.0])
def test_bad_sequential(bad, calib):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="sequential"):
        prune_model(model, "wanda", 0.5, calibration=calib, progress=False, sequential=bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sequential_is_ignored_by_data_free_methods():
    a, b = tiny_llama(), tiny_llama()
    prune_model(a, "magnitude", 0.5, progress=False)
    report = prune_model(b, "magnitude", 0.5, progress=False, sequential=True)
    for (name, la), lb in zip(prunable_linears(a).items(), prunable_linears(b).values()):
        assert torch.equal(la.weight, lb.weight), name
    assert "sequential" not in report


# ------------------------------------------------------------------ a sparsity per block (OWL, Chapter 5)
@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt"])
def test_per_block_sparsity_prunes_each_block_to_its_own_target(arch, method, calib):
    model = BUILDERS[arch](layers=3)
    targets = [0.3, 0.5, 0.7]
    report = prune_model(model, method, targets, calibration=calib, progress=False)
    _, blocks = find_decoder_blocks(model)
    for b, block in enumerate(blocks):
        for lin in (m for m in block.modules() if isinstance(m, nn.Linear)):
            w = lin.weight.detach()
            assert int((w == 0).sum()) == _expected_zeros(method, w, targets[b], None), (b, method)
    assert report["sparsity"] == pytest.approx(0.5) and report["block_sparsities"] == targets
    assert report["total_sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_equal_per_block_sparsities_equal_the_uniform_run_bit_for_bit(method, calib):
    a, b = tiny_llama(layers=2), tiny_llama(layers=2)
    prune_model(a, method, 0.5, calibration=calib, progress=False)
    rb = prune_model(b, method, [0.5, 0.5], calibration=calib, progress=False)
    for (na, wa), (nb, wb) in zip(prunable_linears(a).items(), prunable_linears(b).items()):
        assert torch.equal(wa.weight, wb.weight), na
    assert rb["block_sparsities"] == [0.5, 0.5]


def test_uniform_report_has_no_block_sparsities(calib):
    report = prune_model(tiny_llama(), "magnitude", 0.5, progress=False)
    assert "block_sparsities" not in report


@pytest.mark.parametrize("sparsity, match", [
    ([0.5], "one per decoder block"),            # 2 blocks
    ([0.5, 0.5, 0.5], "one per decoder block"),
    ([0.5, 1.0], r"sparsity\[1\]"),
    ([0.5, "x"], r"sparsity\[1\]"),
    ([], "one per decoder block"),
])
def test_per_block_sparsity_bad_input(sparsity, match, calib):
    model = tiny_llama()
    before = {n: lin.weight.clone() for n, lin in prunable_linears(model).items()}
    with pytest.raises(ValueError, match=match):
        prune_model(model, "wanda", sparsity, calibration=calib, progress=False)
    assert all(torch.equal(before[n], lin.weight) for n, lin in prunable_linears(model).items())


def test_per_block_sparsity_needs_unstructured_and_a_per_matrix_method(calib):
    with pytest.raises(ValueError, match="pattern"):
        prune_model(tiny_llama(), "wanda", [0.5, 0.5], "2:4", calib, progress=False)
    with pytest.raises(ValueError, match="magnitude_global"):
        prune_model(tiny_llama(), "magnitude_global", [0.5, 0.5], progress=False)
