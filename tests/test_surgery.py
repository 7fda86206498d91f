"""Structured pruning by surgery (Chapter 8) on tiny random Llama (grouped-query attention) and OPT models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from pruning_lab.llm.driver import find_decoder_blocks  # noqa: E402
from pruning_lab.llm.surgery import (  # noqa: E402
    channel_scores,
    ffn_keep_for_fraction,
    param_count,
    prune_ffn_channels,
    prune_heads,
    score_units,
    shrink,
)

VOCAB, HIDDEN, D_FF, HEADS, HD = 128, 64, 128, 4, 16


def tiny_llama(seed: int = 0, kv_heads: int = 2, bias: bool = False):
    """4 query heads of 16; ``kv_heads=2``: two groups of two (GQA); ``bias=True``: q/k/v/o biases (as Qwen2)."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=D_FF, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=kv_heads, max_position_embeddings=64, attention_bias=bias,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_opt(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=D_FF, num_hidden_layers=2, num_attention_heads=HEADS,
        max_position_embeddings=64, word_embed_proj_dim=HIDDEN,
    )
    return transformers.OPTForCausalLM(cfg).eval()


BUILDERS = {"llama": tiny_llama, "opt": tiny_opt}


@pytest.fixture
def calib():
    return torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))


def blocks(model):
    return find_decoder_blocks(model)[1]


def ffn_in(block):
    return [block.mlp.gate_proj, block.mlp.up_proj] if hasattr(block, "mlp") else [block.fc1]


def ffn_out(block):
    return block.mlp.down_proj if hasattr(block, "mlp") else block.fc2


def attn_out(block):
    return getattr(block.self_attn, "o_proj", None) or block.self_attn.out_proj


@torch.no_grad()
def logits(model, ids):
    return model(input_ids=ids).logits


def complement(removed, n):
    return [torch.tensor([j for j in range(n) if j not in r]) for r in removed]


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ exactness

@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_removing_zeroed_ffn_channels_is_exact(arch, calib):
    removed = [[0, 5, 77, 127], [3, 4, 64, 100]]  # different channels in each block, the same count
    zeroed = BUILDERS[arch]()
    with torch.no_grad():
        for block, r in zip(blocks(zeroed), removed):
            ffn_out(block).weight[:, r] = 0  # channel j's whole contribution is W_down[:, j] X_j
    small, report = prune_ffn_channels(zeroed, complement(removed, D_FF))
    close(logits(small, calib), logits(zeroed, calib))
    for block in blocks(small):
        for lin in ffn_in(block):
            assert lin.weight.shape == (D_FF - 4, HIDDEN) and lin.out_features == D_FF - 4
            assert lin.bias is None or lin.bias.shape == (D_FF - 4,)
        assert ffn_out(block).weight.shape == (HIDDEN, D_FF - 4) and ffn_out(block).in_features == D_FF - 4
    assert getattr(small.config, "intermediate_size" if arch == "llama" else "ffn_dim") == D_FF - 4
    if arch == "llama":
        assert all(b.mlp.intermediate_size == D_FF - 4 for b in blocks(small))
    # the Wanda-style criterion scores a zeroed column 0: keeping D_FF - 4 by score removes the same channels
    scores = score_units(channel_scores(zeroed, calib), "wanda")
    _, by_score = prune_ffn_channels(zeroed, D_FF - 4, scores=scores)
    assert by_score["ffn_kept"] == report["ffn_kept"] == [k.tolist() for k in complement(removed, D_FF)]


# (removed query heads per block, kv_heads_keep): one head of every group / one whole kv group per block
HEAD_CASES = [([[0, 3], [1, 2]], None), ([[2, 3], [0, 1]], 1)]


@pytest.mark.parametrize("removed, kv_keep", HEAD_CASES)
def test_removing_zeroed_heads_is_exact(removed, kv_keep, calib):
    zeroed = tiny_llama()
    with torch.no_grad():
        for block, r in zip(blocks(zeroed), removed):
            for h in r:
                block.self_attn.o_proj.weight[:, h * HD : (h + 1) * HD] = 0  # head h's columns of W_o
    small, report = prune_heads(zeroed, complement(removed, HEADS))
    close(logits(small, calib), logits(zeroed, calib))
    kv = 2 if kv_keep is None else 1
    for block in blocks(small):
        attn = block.self_attn
        assert attn.q_proj.weight.shape == (2 * HD, HIDDEN) and attn.o_proj.weight.shape == (HIDDEN, 2 * HD)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (kv * HD, HIDDEN)
        assert attn.num_key_value_groups == 2 // kv
    cfg = small.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, kv, HD)
    assert report["heads_kept"] == [k.tolist() for k in complement(removed, HEADS)]
    assert report["kv_heads_kept"] == ([[0, 1], [0, 1]] if kv == 2 else [[0], [1]])
    scores = score_units(channel_scores(zeroed, calib), "wanda")  # zeroed heads score 0
    _, by_score = prune_heads(zeroed, 2, scores=scores, kv_heads_keep=kv_keep)
    assert by_score["heads_kept"] == report["heads_kept"]


def test_multi_head_attention_with_biases_drops_k_v_too(calib):
    """num_key_value_heads == num_attention_heads (g = 1) and q/k/v/o biases: a head takes its k/v rows along."""
    zeroed = tiny_llama(kv_heads=HEADS, bias=True)
    with torch.no_grad():
        for block in blocks(zeroed):
            block.self_attn.o_proj.weight[:, HD : 2 * HD] = 0  # head 1
    scores = [torch.tensor([1.0, 0.0, 1.0, 1.0])] * 2
    small, report = prune_heads(zeroed, 3, scores=scores)
    close(logits(small, calib), logits(zeroed, calib))
    attn = blocks(small)[0].self_attn
    assert attn.k_proj.weight.shape == (3 * HD, HIDDEN) and attn.k_proj.bias.shape == (3 * HD,)
    assert attn.q_proj.bias.shape == (3 * HD,) and attn.o_proj.bias.shape == (HIDDEN,)
    assert report["kv_heads_kept"] == [[0, 2, 3]] * 2
    assert (small.config.num_attention_heads, small.config.num_key_value_heads) == (3, 3)


def test_qwen2_biases_and_explicit_head_dim(calib, tmp_path):
    """Qwen2: q/k/v biases, and a config without head_dim (recomputed as hidden_size // heads unless written)."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=D_FF, num_hidden_layers=2,
                                   num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64)
    assert getattr(cfg, "head_dim", None) is None
    zeroed = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for block in blocks(zeroed):
            block.self_attn.o_proj.weight[:, 2 * HD : 3 * HD] = 0  # head 2 (group 1)
            block.self_attn.o_proj.weight[:, 0:HD] = 0  # head 0 (group 0)
    small, _ = prune_heads(zeroed, [torch.tensor([1, 3])] * 2)
    assert blocks(small)[0].self_attn.q_proj.bias.shape == (2 * HD,)
    close(logits(small, calib), logits(zeroed, calib))
    small.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.head_dim == HD and blocks(reloaded)[0].self_attn.head_dim == HD
    close(logits(reloaded, calib), logits(zeroed, calib))


# ------------------------------------------------------------------------- reload, generate, report

@pytest.mark.parametrize("kv_keep", [None, 1])
def test_save_reload_and_generate_with_kv_cache(kv_keep, calib, tmp_path):
    model = tiny_llama()
    scores = score_units(channel_scores(model, calib), "activation")
    small, report = shrink(model, ffn_keep=48, heads_keep=2, kv_heads_keep=kv_keep, scores=scores)
    small.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    close(logits(reloaded, calib), logits(small, calib))
    kv = 2 if kv_keep is None else 1
    assert (reloaded.config.intermediate_size, reloaded.config.num_attention_heads,
            reloaded.config.num_key_value_heads, reloaded.config.head_dim) == (48, 2, kv, HD)
    assert report["after"] == {"intermediate_size": 48, "num_attention_heads": 2, "num_key_value_heads": kv}
    assert report["before"] == {"intermediate_size": D_FF, "num_attention_heads": HEADS, "num_key_value_heads": 2}
    prompt = calib[:1, :5]
    gen = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        cached = small.generate(prompt, use_cache=True, **gen)
        assert torch.equal(cached, small.generate(prompt, use_cache=False, **gen))
        assert torch.equal(cached, reloaded.generate(prompt, use_cache=True, **gen))
    assert cached.shape == (1, 9)


def test_opt_ffn_reloads_and_opt_heads_raise(calib, tmp_path):
    model = tiny_opt()
    scores = score_units(channel_scores(model, calib), "activation")
    small, _ = shrink(model, ffn_keep=40, scores=scores)
    small.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.ffn_dim == 40
    close(logits(reloaded, calib), logits(small, calib))
    with pytest.raises(ValueError, match="OPT.*head_dim"):
        shrink(model, ffn_keep=40, heads_keep=2, scores=scores)


def test_inputs_untouched_and_inplace(calib):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    scores = score_units(channel_scores(model, calib), "wanda")
    saved = [s.clone() for s in scores["ffn"]]
    small, _ = shrink(model, ffn_keep=64, heads_keep=2, scores=scores)
    assert small is not model
    assert model.config.to_dict() == cfg and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(a, b) for a, b in zip(scores["ffn"], saved))
    same, _ = shrink(model, ffn_keep=64, scores=scores, inplace=True)
    assert same is model and model.config.intermediate_size == 64
    assert blocks(model)[0].mlp.down_proj.weight.shape == (HIDDEN, 64)


# ---------------------------------------------------------------------------------------------- scores

@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_channel_scores_match_hand_computation(arch, calib):
    model = BUILDERS[arch]()
    seen: dict[tuple[str, int], list] = {}
    handles = [lin.register_forward_pre_hook(
        lambda mod, args, key=(kind, b): seen.setdefault(key, []).append(args[0].reshape(-1, mod.in_features)))
        for b, block in enumerate(blocks(model)) for kind, lin in (("ffn", ffn_out(block)), ("attn", attn_out(block)))]
    logits(model, calib)
    for h in handles:
        h.remove()
    stats = channel_scores(model, calib, batch_size=2)
    act, wanda = score_units(stats, "activation"), score_units(stats, "wanda")
    assert stats["ntokens"] == calib.numel() and stats["head_dim"] == HD
    for b, block in enumerate(blocks(model)):
        x_ffn = torch.cat(seen["ffn", b]).double()  # (tokens, d_ff)
        x_att = torch.cat(seen["attn", b]).double()  # (tokens, heads * hd)
        torch.testing.assert_close(stats["ffn_sq_norms"][b].double(), (x_ffn**2).sum(0), rtol=1e-5, atol=1e-6)
        w_down, w_o = ffn_out(block).weight.detach().double(), attn_out(block).weight.detach().double()
        for j in (0, 1, 77):  # ||X_j||_2 and sum_i |W_down[i, j]| ||X_j||_2
            norm = x_ffn[:, j].norm()
            assert float(act["ffn"][b][j]) == pytest.approx(float(norm), rel=1e-5)
            assert float(wanda["ffn"][b][j]) == pytest.approx(float(w_down[:, j].abs().sum() * norm), rel=1e-5)
        for h in range(HEADS):
            cols = slice(h * HD, (h + 1) * HD)
            assert float(act["heads"][b][h]) == pytest.approx(float(x_att[:, cols].norm()), rel=1e-5)
            expect = sum(float(w_o[:, j].abs().sum() * x_att[:, j].norm()) for j in range(h * HD, (h + 1) * HD))
            assert float(wanda["heads"][b][h]) == pytest.approx(expect, rel=1e-5)
    one = channel_scores(model, calib, batch_size=1)
    for a, b in zip(one["attn_sq_norms"], stats["attn_sq_norms"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_top_scoring_kept_ties_to_lower_index():
    model = tiny_llama()
    ffn = [torch.zeros(D_FF), torch.ones(D_FF)]
    ffn[0][[10, 20, 30]] = torch.tensor([3.0, 2.0, 2.0])
    assert prune_ffn_channels(model, 4, scores=ffn)[1]["ffn_kept"] == [[0, 10, 20, 30], [0, 1, 2, 3]]
    heads = [torch.tensor([1.0, 5.0, 5.0, 2.0]), torch.tensor([3.0, 3.0, 3.0, 3.0])]  # groups (0, 1), (2, 3)
    assert prune_heads(model, 2, scores=heads)[1]["heads_kept"] == [[1, 2], [0, 2]]  # the best of each group
    by_group = prune_heads(model, 2, scores=heads, kv_heads_keep=1)[1]  # group masses 6 < 7; 6 = 6 -> group 0
    assert by_group["heads_kept"] == [[2, 3], [0, 1]] and by_group["kv_heads_kept"] == [[1], [0]]
    assert prune_heads(model, 1, scores=heads, kv_heads_keep=1)[1]["heads_kept"] == [[1], [0]]  # 5 = 5 -> group 0


# ------------------------------------------------------------------------------------ parameter budget

def test_param_count_and_ffn_keep_for_fraction(calib):
    model = tiny_llama()
    per_block = 2 * HIDDEN * HIDDEN + 2 * (2 * HD) * HIDDEN + 3 * HIDDEN * D_FF  # q, o; k, v; gate, up, down
    assert param_count(model) == 2 * per_block == 73728
    assert param_count(model, "all") == sum(p.numel() for p in model.parameters())
    keep = ffn_keep_for_fraction(model, 0.5)  # r = 0.5 * 73728 / (3 * 64 * 2 blocks) = 96 channels removed
    assert keep == 32
    small, report = prune_ffn_channels(model, keep, scores=[torch.ones(D_FF)] * 2)
    assert report["params_before"]["blocks"] == 73728 and report["params_after"]["blocks"] == 73728 // 2
    assert param_count(small) == 73728 // 2
    assert report["params_before"]["all"] - report["params_after"]["all"] == 73728 // 2
    assert ffn_keep_for_fraction(model, 0.66) == 1  # the FFN holds 2/3 of the block parameters
    assert ffn_keep_for_fraction(tiny_opt(), 0.25) == D_FF - round(0.25 * param_count(tiny_opt()) / (129 * 2))


# ---------------------------------------------------------------------------------------------- errors

def _broken_llama():
    model = tiny_llama()
    blocks(model)[1].mlp.down_proj = nn.Identity()
    return model


ONES_FFN, ONES_HEADS = [torch.ones(D_FF)] * 2, [torch.ones(HEADS)] * 2
ERRORS = [
    (lambda m: prune_ffn_channels(m, 0, scores=ONES_FFN), "ffn_keep"),
    (lambda m: prune_ffn_channels(m, D_FF + 1, scores=ONES_FFN), r"ffn_keep.*\[1, 128\]"),
    (lambda m: prune_ffn_channels(m, True, scores=ONES_FFN), "ffn_keep"),
    (lambda m: prune_ffn_channels(m, 8), "scores"),
    (lambda m: prune_ffn_channels(m, 8, scores=[torch.ones(D_FF - 1)] * 2), r"scores.*\(128,\)"),
    (lambda m: prune_ffn_channels(m, 8, scores=ONES_FFN[:1]), "scores"),
    (lambda m: prune_ffn_channels(m, 8, scores=[torch.ones(D_FF), torch.full((D_FF,), float("nan"))]), "scores"),
    (lambda m: prune_ffn_channels(m, [torch.tensor([0, 0]), torch.tensor([1, 2])]), "ffn_keep.*distinct"),
    (lambda m: prune_ffn_channels(m, [torch.tensor([0, 128]), torch.tensor([1, 2])]), "ffn_keep"),
    (lambda m: prune_ffn_channels(m, [torch.tensor([0, 1]), torch.tensor([2])]), "same length"),
    (lambda m: prune_heads(m, 3, scores=ONES_HEADS), "heads_keep.*multiple"),
    (lambda m: prune_heads(m, 0, scores=ONES_HEADS), "heads_keep"),
    (lambda m: prune_heads(m, HEADS + 1, scores=ONES_HEADS), "heads_keep"),
    (lambda m: prune_heads(m, 4, scores=ONES_HEADS, kv_heads_keep=1), "at most 2"),
    (lambda m: prune_heads(m, 2, scores=ONES_HEADS, kv_heads_keep=3), "kv_heads_keep"),
    (lambda m: prune_heads(m, 2, scores=[torch.ones(3)] * 2), "scores"),
    (lambda m: prune_heads(m, [torch.tensor([0, 1, 2])] * 2), "same number of query heads"),
    (lambda m: prune_heads(m, [torch.tensor([0, 1]), torch.tensor([0, 2])]), "same number of key/value groups"),
    (lambda m: prune_heads(m, [torch.tensor([0, 2])] * 2, kv_heads_keep=2), "kv_heads_keep"),
    (lambda m: shrink(m), "ffn_keep"),
    (lambda m: channel_scores(m, None), "calibration"),
    (lambda m: shrink(m, ffn_keep=8, scores={"ffn": ONES_FFN}, inplace=1), "inplace"),
    (lambda m: score_units({}, "activation"), "stats"),
    (lambda m: score_units({}, "magnitude"), "criterion"),
    (lambda m: channel_scores(m, torch.zeros(2, 4)), "calibration"),
    (lambda m: channel_scores(m, torch.zeros(2, 4, dtype=torch.long), batch_size=0), "batch_size"),
    (lambda m: param_count(m, "linears"), "which"),
    (lambda m: ffn_keep_for_fraction(m, 0.7), "fraction.*66.7%"),
    (lambda m: ffn_keep_for_fraction(m, 1.0), "fraction"),
    (lambda m: ffn_keep_for_fraction(m, True), "fraction"),
    (lambda m: prune_ffn_channels(_broken_llama(), 8, scores=ONES_FFN), "unsupported architecture"),
]


@pytest.mark.parametrize("call, match", ERRORS)
def test_value_errors(call, match):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        call(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
