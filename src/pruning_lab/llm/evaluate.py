"""Perplexity with the papers' protocol (Chapter 1).

Cut the held-out token stream into non-overlapping windows of ``seqlen`` tokens, **drop the incomplete tail**,
run each window on its own (no context carried over), and average the next-token negative log-likelihood over
every predicted token::

    windows  w_1 .. w_K,  K = floor(N / seqlen)            (tokens [K, seqlen])
    NLL      = mean over k and t = 1 .. seqlen-1 of  -log p(w_k[t] | w_k[:t])
    PPL      = exp(NLL)

Every window predicts ``seqlen - 1`` tokens, so this equals the reference code's
``exp(sum_k seqlen * loss_k / (K * seqlen))``. The context length matters: the same model scores differently at
512 and 2048 tokens, so always report ``seqlen`` with a perplexity.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["perplexity", "nll_per_window", "eval_windows"]


def eval_windows(tokens: Tensor, seqlen: int, *, max_windows: int | None = None) -> Tensor:
    """Non-overlapping windows ``[K, seqlen]``, ``K = floor(len / seqlen)`` (tail dropped), at most
    ``max_windows`` of them (the first ones) (Chapter 1)."""
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise ValueError(f"`seqlen` must be an integer >= 2 (one token of context, one to predict); got {seqlen!r}")
    if not isinstance(tokens, Tensor):
        raise ValueError(f"`tokens` must be a LongTensor of token ids; got {type(tokens).__name__}")
    if tokens.dim() == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]  # accept tokenizer(..., return_tensors="pt").input_ids as is
    if tokens.dim() != 1 or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"`tokens` must be a 1-D integer tensor; got dtype {tokens.dtype}, shape {tuple(tokens.shape)}")
    k = tokens.numel() // seqlen
    if max_windows is not None:
        if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
            raise ValueError(f"`max_windows` must be a positive integer or None; got {max_windows!r}")
        k = min(k, max_windows)
    if k == 0:
        raise ValueError(f"`tokens` has {tokens.numel()} tokens: fewer than one window of `seqlen`={seqlen}")
    return tokens[: k * seqlen].reshape(k, seqlen).long()


def _model_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None:
        return emb.weight.device
    return next(model.parameters()).device


@torch.no_grad()
def nll_per_window(model: nn.Module, windows: Tensor, *, batch_size: int = 1) -> Tensor:
    """Sum of next-token NLLs of each window, float64 ``[K]`` (each over ``seqlen - 1`` predictions) (Chapter 1).

    The cross-entropy is computed in float32 from the model's logits, then summed in float64.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    was_training = model.training
    model.eval()
    dev = _model_device(model)
    sums = torch.empty(windows.shape[0], dtype=torch.float64)
    try:
        for i in range(0, windows.shape[0], batch_size):
            batch = windows[i : i + batch_size].to(dev)  # (b, seqlen)
            logits = model(input_ids=batch, use_cache=False).logits  # (b, seqlen, vocab)
            b, t, v = logits.shape
            # position t predicts token t+1; the last position predicts nothing (ignored): no copy of the logits
            target = torch.full((b, t), -100, dtype=torch.long, device=logits.device)
            target[:, :-1] = batch[:, 1:].to(logits.device)
            nll = nn.functional.cross_entropy(
                logits.reshape(b * t, v).float(), target.reshape(b * t), reduction="none", ignore_index=-100
            ).reshape(b, t)[:, :-1]  # (b, seqlen-1)
            if not torch.isfinite(nll).all():
                raise ValueError("`model` produced NaN or inf logits on the evaluation windows")
            sums[i : i + b] = nll.double().sum(dim=1).cpu()
            del logits, nll
    finally:
        if was_training:
            model.train()
    return sums


def perplexity(
    model: nn.Module,
    tokens: Tensor,
    seqlen: int,
    *,
    batch_size: int | None = None,
    max_windows: int | None = None,
) -> float:
    """``exp(mean next-token NLL)`` over non-overlapping ``seqlen``-token windows of ``tokens`` (Chapter 1).

    ``tokens``: 1-D LongTensor (or ``[1, N]``). Windows are ``tokens[k*seqlen:(k+1)*seqlen]``; the incomplete
    tail is dropped; ``max_windows`` keeps only the first ones. Each window is scored independently and every
    one of its ``seqlen - 1`` predictions counts equally. ``batch_size`` windows go through the model together
    (default: as many as fit in 1024 tokens, so the ``[batch, seqlen, vocab]`` logits stay small on a CPU; the
    result does not depend on it beyond float rounding).
    Deterministic: the same model and tokens give the same number.
    """
    windows = eval_windows(tokens, seqlen, max_windows=max_windows)  # (K, seqlen)
    if batch_size is None:
        batch_size = max(1, 1024 // seqlen)
    sums = nll_per_window(model, windows, batch_size=batch_size)
    return math.exp(float(sums.sum()) / (windows.shape[0] * (seqlen - 1)))
