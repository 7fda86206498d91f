"""pruning_lab.llm.latency: prefill / decode timing and the share f of the linears, on a tiny random Llama."""
from __future__ import annotations

import time

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pruning_lab.llm import latency as lat  # noqa: E402
from pruning_lab.llm import prunable_linears  # noqa: E402


def tiny_llama(layers: int = 2):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_decoding_with_the_cache_gives_the_full_forward_logits():
    model = tiny_llama()
    prepare = lat.decode_steps(model, prompt=6, new_tokens=3)
    run = prepare()
    seen = []
    handle = model.lm_head.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[1]))
    run()
    handle.remove()
    assert seen == [1, 1, 1]  # one token per forward: the cache is used
    # greedy decoding through our loop equals greedy decoding without a cache
    ids = lat._prompt(model, 6, 0)
    with torch.no_grad():
        toks = ids
        for _ in range(4):
            nxt = model(input_ids=toks, use_cache=False).logits[:, -1:].argmax(-1)
            toks = torch.cat([toks, nxt], 1)
    cache_name = lat._cache_kwarg(model)
    cache = lat._new_cache(model)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **{cache_name: cache})
        got = [out.logits[:, -1:].argmax(-1)]
        for _ in range(3):
            out = model(input_ids=got[-1], use_cache=True, **{cache_name: cache})
            got.append(out.logits[:, -1:].argmax(-1))
    assert torch.equal(torch.cat(got, 1), toks[:, 6:])


def test_prefill_keeps_only_the_last_logits():
    model = tiny_llama()
    shapes = []
    handle = model.lm_head.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    lat.prefill_step(model, 10)()
    handle.remove()
    assert shapes == [(1, 1, 128)] or (not lat._forward_kwargs(model) and shapes == [(1, 10, 128)])


def test_timings_report_a_spread():
    model = tiny_llama()
    for out in (lat.time_prefill(model, 8, repeats=3), lat.time_decode(model, 4, 2, repeats=3),
                lat.linears_time(model, 4, repeats=3)):
        assert out["repeats"] == 3 and 0 < out["min"] <= out["median"] <= out["max"]


def test_noop_linears_zero_the_outputs_and_restore_the_modules():
    model = tiny_llama()
    before = prunable_linears(model)
    x = torch.randn(2, 3, 64)
    with lat.noop_linears(model):
        inside = prunable_linears(model)
        assert inside == {}  # none of them is an nn.Linear any more
        q = model.model.layers[0].self_attn.q_proj
        assert torch.equal(q(x), torch.zeros(2, 3, q.out_features))
        lat.prefill_step(model, 5)()  # the model still runs
    after = prunable_linears(model)
    assert list(after) == list(before) and all(after[k] is before[k] for k in before)


def test_linear_share_sees_slow_linears():
    """Make every prunable linear sleep 50 ms: then most of the step's time is theirs (a margin for a loaded
    machine, where the rest of the tiny model's forward can take tens of milliseconds)."""
    model = tiny_llama(layers=1)
    share = lat.linear_share(model, lat.prefill_step(model, 8))
    assert 0 < share["f"] < 1 and share["lm_head"] > 0
    assert share["f"] + share["lm_head"] + share["other"] == pytest.approx(1.0)
    assert all(not name.startswith("pruning_lab::") for name, _ in share["ops"])
    handles = [m.register_forward_hook(lambda *a: time.sleep(0.05)) for m in prunable_linears(model).values()]
    try:
        slow = lat.linear_share(model, lat.prefill_step(model, 8))
    finally:
        for h in handles:
            h.remove()
    assert slow["f"] > 0.75 and slow["f"] > share["f"]


@pytest.mark.parametrize("call, word", [
    (lambda m: lat.prefill_step(m, 0), "`tokens`"),
    (lambda m: lat.decode_steps(m, 4, 0), "`new_tokens`"),
    (lambda m: lat.decode_steps(m, True, 2), "`prompt`"),
    (lambda m: lat.linears_time(m, -1), "`tokens`"),
])
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call(tiny_llama(layers=1))


def test_interleaved_alternates_the_candidates():
    order = []
    out = lat.interleaved([lambda: order.append("a") or 0.1, lambda: order.append("b") or 0.2], repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert [o["median"] for o in out] == [0.1, 0.2] and all(o["repeats"] == 3 for o in out)
    with pytest.raises(ValueError, match="repeats"):
        lat.interleaved([lambda: 0.1], repeats=2)


def test_compare_and_samplers():
    model = tiny_llama(layers=1)
    for kind in ("prefill", "decode", "linears"):
        a, b = lat.compare(model, model, kind, 4, new_tokens=2, repeats=3)
        assert a["median"] > 0 and b["median"] > 0
    with pytest.raises(ValueError, match="`kind`"):
        lat.sampler(model, "train", 4)


def test_predict_and_measure_gives_a_prediction_and_a_measurement():
    dense = tiny_llama(layers=1)
    for kind in ("prefill", "decode"):
        row = lat.predict_and_measure(dense, dense, kind, 6, new_tokens=2, repeats=3)
        assert 0 <= row["f_noop"] <= 1 and isinstance(row["f_profiler"], float)
        assert row["predicted"] > 0 and row["measured"]["low"] <= row["measured"]["median"] <= row["measured"]["high"]
    assert prunable_linears(dense)  # the no-op linears were put back
    with pytest.raises(ValueError, match="`kind`"):
        lat.predict_and_measure(dense, dense, "linears", 4)
