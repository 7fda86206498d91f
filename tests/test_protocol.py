"""The book's one LLM protocol (pruning_lab.llm.protocol)."""
import pytest
import torch
from torch import nn

from pruning_lab.llm import PROTOCOL, Protocol
from pruning_lab.llm import protocol as protocol_module


def test_the_protocol_is_the_books_and_describes_itself():
    assert (PROTOCOL.calib_windows, PROTOCOL.calib_seqlen, PROTOCOL.eval_windows, PROTOCOL.eval_seqlen) == \
        (8, 256, 4, 512)
    assert len(PROTOCOL.seeds) >= 3  # spreads over at least three calibration seeds
    assert PROTOCOL.calib_tokens == 2048 and PROTOCOL.eval_tokens == 2048
    assert PROTOCOL.describe() == "8 x 256 calibration tokens, 4 x 512 held-out"


def test_with_changes_one_setting_and_validates():
    p = PROTOCOL.with_(calib_windows=32)
    assert p.calib_windows == 32 and p.eval_windows == PROTOCOL.eval_windows and PROTOCOL.calib_windows == 8
    with pytest.raises(ValueError, match="calib_seqlen"):
        PROTOCOL.with_(calib_seqlen=0)
    with pytest.raises(ValueError, match="unknown"):
        PROTOCOL.with_(windows=3)
    with pytest.raises(ValueError, match="seeds"):
        Protocol(seeds=())
    with pytest.raises(ValueError, match="eval_windows"):
        Protocol(eval_windows=True)


def test_calibration_and_perplexity_use_the_settings(monkeypatch):
    seen = {}

    def fake_windows(tok, n, seqlen, *, source, seed):
        seen["calib"] = (n, seqlen, source, seed)
        return torch.zeros(n, seqlen, dtype=torch.long)

    def fake_ppl(model, tokens, seqlen, *, max_windows):
        seen["ppl"] = (seqlen, max_windows)
        return 1.0

    monkeypatch.setattr("pruning_lab.llm.data.calibration_windows", fake_windows)
    monkeypatch.setattr("pruning_lab.llm.evaluate.perplexity", fake_ppl)
    p = Protocol(calib_windows=3, calib_seqlen=16, eval_windows=2, eval_seqlen=32)
    assert p.calibration(object(), seed=2).shape == (3, 16) and seen["calib"] == (3, 16, "embedded", 2)
    assert p.perplexity(nn.Identity(), torch.zeros(100, dtype=torch.long)) == 1.0 and seen["ppl"] == (32, 2)
    assert protocol_module.PROTOCOL is PROTOCOL
