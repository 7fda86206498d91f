"""Held-out evaluation texts of three kinds (prose, code, legal) for Chapter 1: offline, deterministic, checksummed
and disjoint from the calibration split."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch

import pruning_lab.llm as llm
from pruning_lab.llm import data as llm_data


class CharTokenizer:
    """A stand-in tokenizer (one token per byte)."""

    backend_tokenizer = None

    def __call__(self, text, return_tensors=None, verbose=True):
        return SimpleNamespace(input_ids=torch.tensor([list(text.encode("utf-8"))], dtype=torch.long))

    def get_vocab(self):
        return {chr(i): i for i in range(256)}


def _paragraphs(text: str) -> set[str]:
    return {p.strip() for p in llm_data._PARAGRAPH.split(text) if len(p.strip()) >= llm_data.MIN_DEDUP_CHARS}


def test_three_kinds_exported_and_non_trivial():
    corpus = llm.held_out_corpus()
    assert set(corpus.texts) == {"prose", "code", "legal"} == set(llm_data.HELD_OUT_KINDS)
    for kind, text in corpus.texts.items():
        assert len(text) > 10_000, kind  # enough for several 512-token windows
        assert corpus.sha256[kind] == hashlib.sha256(text.encode()).hexdigest()
    assert "def " in corpus.texts["code"] and "class " in corpus.texts["code"]
    assert "licen" in corpus.texts["legal"].lower()
    assert corpus.texts["prose"] == llm.embedded_text().evaluation  # the held-out prose is the evaluation split
    assert "sha256" in corpus.summary() and "legal" in corpus.summary()


def test_held_out_texts_are_disjoint_from_calibration_and_from_each_other():
    corpus = llm.held_out_corpus()
    calib = llm.embedded_text().calibration
    calib_par = _paragraphs(calib)
    for kind, text in corpus.texts.items():
        assert not _paragraphs(text) & calib_par, kind
    kinds = list(corpus.texts)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            assert not _paragraphs(corpus.texts[a]) & _paragraphs(corpus.texts[b]), (a, b)
    # the code modules are not those of the calibration split, and the licence left the calibration split
    assert not set(llm_data.HELD_OUT_STDLIB_FILES) & set(llm_data.STDLIB_FILES)
    assert not any(k.startswith("licence:") for k in llm.embedded_text().documents)
    first_licence_line = next(line for line in corpus.texts["legal"].splitlines() if len(line.strip()) > 30)
    assert first_licence_line not in calib
    for doc in corpus.documents["code"]:
        assert doc.split(":", 1)[1] in llm_data.HELD_OUT_STDLIB_FILES


def test_deterministic_and_cached(tmp_path, monkeypatch):
    first = llm.held_out_corpus()
    llm_data._HELD_OUT_CACHE = None
    again = llm.held_out_corpus()
    assert again.texts == first.texts and again.sha256 == first.sha256
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path))
    tok = CharTokenizer()
    tokens = llm.held_out_texts(tok)
    assert list(tokens) == ["prose", "code", "legal"]
    for kind, ids in tokens.items():
        assert ids.dtype == torch.long and ids.dim() == 1
        assert bytes(ids.tolist()) == first.texts[kind].encode()
    assert len(list(tmp_path.glob("heldout-*.pt"))) == 1
    again_tokens = llm.held_out_texts(tok)  # from the cache
    assert all(torch.equal(again_tokens[k], tokens[k]) for k in tokens)
    assert torch.equal(tokens["prose"], llm.eval_tokens(tok))
    uncached = llm.held_out_texts(tok, cache=False)
    assert all(torch.equal(uncached[k], tokens[k]) for k in tokens)


def test_existing_split_keeps_its_rules():
    text = llm.embedded_text()
    kinds = {(k.split(":")[0], split) for k, split in text.documents.items()}
    assert kinds == {("topic", "calibration"), ("topic", "evaluation"), ("code", "calibration")}


def test_legal_text_falls_back_when_cpython_ships_no_licence(monkeypatch, tmp_path):
    fake = tmp_path / "COPYING"
    fake.write_text("Permission is hereby granted, free of charge, to any person obtaining a copy.\n" * 300)
    monkeypatch.setattr(llm_data, "_legal_candidates", lambda: [tmp_path / "missing.txt", fake])
    monkeypatch.setattr(llm_data, "_HELD_OUT_CACHE", None)
    corpus = llm.held_out_corpus()
    assert corpus.documents["legal"] == [f"legal:{fake}"]
    assert corpus.texts["legal"].startswith("Permission is hereby granted")
    monkeypatch.setattr(llm_data, "_legal_candidates", lambda: [tmp_path / "missing.txt"])
    monkeypatch.setattr(llm_data, "_HELD_OUT_CACHE", None)
    with pytest.raises(FileNotFoundError, match="legal"):
        llm.held_out_corpus()
    monkeypatch.setattr(llm_data, "_HELD_OUT_CACHE", None)
