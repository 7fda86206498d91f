"""Checkers for Chapter 5 (Wanda: pruning by weights and activations).

Expected outputs come from :mod:`pruning_lab.wanda` (scores, per-row and N:M masks) and
:mod:`pruning_lab.wanda_analysis` (one step of the layer-wise driver), the implementations the chapter teaches.
The driver-step cases are decoder blocks of tiny random Llama models built from a config (offline, milliseconds).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import wanda as ref
from .. import wanda_analysis as wa
from ..magnitude import magnitude_prune
from ..masks import mask_lowest
from ..nm import nm_mask
from ._core import Case, Checker, register, seeded_generator as _gen

# The row of Exercise 1, the checkers' first case (not the worked problem of Section 5.3): one output row, six
# inputs, and the input norms ||X_j||_2.
W_EX = torch.tensor([[0.8, 0.05, 1.5, 0.3, 0.01, 0.6]], dtype=torch.float64)
NORMS_EX = torch.tensor([1.0, 20.0, 0.5, 2.0, 100.0, 0.8], dtype=torch.float64)
SQ_EX = NORMS_EX**2  # the statistic Wanda accumulates: sum over tokens of x_j^2
# ... extended by two inputs so that it splits into two groups of four (for 2:4)
W_EX8 = torch.tensor([[0.8, 0.05, 1.5, 0.3, 0.01, 0.6, 0.2, 0.9]], dtype=torch.float64)
SQ_EX8 = torch.tensor([1.0, 20.0, 0.5, 2.0, 100.0, 0.8, 3.0, 0.1], dtype=torch.float64) ** 2
W_EX8_ROWS = torch.cat([W_EX8, torch.tensor([[0.3, -0.9, 0.1, 0.4, -0.02, 1.1, 0.5, -0.7],
                                             [-1.2, 0.02, 0.6, -0.25, 0.03, 0.35, -0.15, 2.0],
                                             [0.05, 0.4, -0.8, 0.9, 0.015, -0.5, 1.3, 0.1]], dtype=torch.float64)])


def _layer(seed: int, d_out: int, d_in: int, dtype=torch.float64, *, quantized: bool = False):
    """A random weight and the squared input norms of random calibration inputs with a few outlier channels."""
    g = _gen(seed)
    w = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    if quantized:  # few distinct magnitudes, like the 4-bit embedded model: many exact ties
        w = torch.round(w * 2) / 4
    x = torch.randn(32, d_in, generator=g, dtype=dtype)
    x[:, torch.randperm(d_in, generator=g)[: max(1, d_in // 8)]] *= 20.0  # outlier features
    return w, x.square().sum(0)


def _scores(w, sq):
    """Wanda's score in the dtype of ``w`` (the library computes it in float32)."""
    return ref.wanda_scores(w, sq).to(w.dtype)


def _as_bool_tensor(got, shape) -> bool:
    return isinstance(got, torch.Tensor) and got.dtype == torch.bool and tuple(got.shape) == tuple(shape)


def _close(got, other) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == other.shape and got.dtype == other.dtype
            and torch.allclose(got, other, rtol=1e-5, atol=1e-8))


# ----------------------------------------------------------------------------- 0. by hand: the row of Exercise 1
def _kept_cases() -> list[Case]:
    pruned_mag = ~mask_lowest(W_EX.abs(), 0.5, group="row")[0]
    kept_wanda = ref.wanda_prune(W_EX, SQ_EX, 0.5)[0] != 0
    return [Case("the row of Exercise 1: W = [0.8, 0.05, 1.5, 0.3, 0.01, 0.6], ||X|| = [1, 20, 0.5, 2, 100, 0.8], 50%",
                 expected=int((pruned_mag & kept_wanda).sum()))]


def _kept_hint(case: Case, got) -> str | None:
    if isinstance(got, int) and not isinstance(got, bool):
        if got == 3:
            return "both criteria remove w4 (|w4| = 0.3 is small and ||X_4|| = 2 is modest): Wanda keeps only w5 and w2."
        if got == 1:
            return "magnitude removes w5, w2 and w4. Score w2 too: 0.05 * 20 = 1.0 is among Wanda's highest."
        if got == 0:
            return "compute the scores |w_j| * ||X_j||: w5 (0.01 * 100) scores 1.0, far from the lowest."
    return None


register(Checker(
    name="ch05.kept_by_wanda", chapter=5, kind="value",
    summary="the row of Exercise 1 at 50%: how many of the 3 weights magnitude removes does Wanda keep?",
    make_cases=_kept_cases, hint=_kept_hint,
))


# ----------------------------------------------------------------------------- 1. Wanda scores
def _scores_cases() -> list[Case]:
    names = ("weight", "input_sq_norms")
    w_signs = torch.tensor([[0.8, 0.05, 1.5, 0.3, 0.01, 0.6], [-0.8, 0.05, -1.5, 0.3, -0.01, -0.6]],
                           dtype=torch.float64)
    cases = [
        Case("the row of Exercise 1", (W_EX, SQ_EX), expected=_scores(W_EX, SQ_EX), arg_names=names),
        Case("the row of Exercise 1 with negative weights", (w_signs, SQ_EX), expected=_scores(w_signs, SQ_EX),
             arg_names=names),
    ]
    for seed, (d_out, d_in), dtype in [(1, (5, 8), torch.float64), (2, (6, 6), torch.float64),
                                       (3, (4, 12), torch.float32)]:
        w, sq = _layer(seed, d_out, d_in, dtype)
        cases.append(Case(f"random {d_out}x{d_in} layer, {str(dtype)[6:]} (seed {seed})", (w, sq),
                          expected=_scores(w, sq), arg_names=names))
    return cases


def _scores_hint(case: Case, got) -> str | None:
    w, sq = case.args
    if not isinstance(got, torch.Tensor):
        return None
    if got.shape == (w.shape[1], w.shape[1]) != tuple(w.shape):
        return ("the norms multiply the columns (input j), not the rows: broadcast `input_sq_norms` along the "
                "last axis, e.g. input_sq_norms[None, :] or just weight.abs() * norms.")
    if got.shape != w.shape or got.dtype != w.dtype:
        return None
    norms = sq.sqrt()
    if _close(got, w.abs() * sq):
        return "Wanda multiplies by the norm ||X_j||_2 = sqrt(sum of squares): take the square root of input_sq_norms."
    if _close(got, w.square() * sq):
        return ("that is the square of the score (the output error w^2 ||X_j||^2); Wanda's score is its square "
                "root |w| * ||X_j||. The ranking is the same, the values are not.")
    if _close(got, w * norms):
        return "take |W_ij|: a negative weight matters as much as a positive one."
    if _close(got, w.abs()):
        return "the activation factor ||X_j||_2 is missing: that is plain magnitude."
    if w.shape[0] == w.shape[1] and _close(got, w.abs() * norms[:, None]):
        return "the norms belong to the input channels j, i.e. the columns of W, not the rows."
    return None


register(Checker(
    name="ch05.wanda_scores", chapter=5, kind="function",
    summary="Wanda scores S_ij = |W_ij| * ||X_j||_2 from the weight and the squared input norms",
    make_cases=_scores_cases, hint=_scores_hint,
))


# ----------------------------------------------------------------------------- 2. per-row mask with exact k
def _mask_cases() -> list[Case]:
    names = ("weight", "input_sq_norms", "sparsity")
    # rows on very different scales: per-layer ranking would strip row 0 and spare row 2
    w_rows = torch.tensor([[0.1, -0.2, 0.05, 0.3, 0.15, -0.1],
                           [1.0, 0.5, -2.0, 0.7, 0.2, 1.5],
                           [5.0, -3.0, 4.0, 6.0, -2.0, 3.5]], dtype=torch.float64)
    sq_rows = torch.tensor([4.0, 1.0, 9.0, 1.0, 0.25, 16.0], dtype=torch.float64)
    cases = [
        Case("the row of Exercise 1 at 50%", (W_EX, SQ_EX, 0.5), expected=ref.wanda_prune(W_EX, SQ_EX, 0.5) != 0,
             arg_names=names),
        Case("three rows on different scales, 50%", (w_rows, sq_rows, 0.5),
             expected=mask_lowest(_scores(w_rows, sq_rows), 0.5, group="row"), arg_names=names),
        Case("the row of Exercise 1 at 30%: int(6 * 0.3) = 1 per row", (W_EX, SQ_EX, 0.3),
             expected=mask_lowest(_scores(W_EX, SQ_EX), 0.3, group="row"), arg_names=names),
    ]
    w, sq = _layer(11, 6, 8, quantized=True)
    sq = torch.ones_like(sq)  # equal norms: the scores tie wherever the (4-bit-like) magnitudes tie
    cases.append(Case("quantized weights, equal norms: many exact ties, 50%", (w, sq, 0.5),
                      expected=mask_lowest(_scores(w, sq), 0.5, group="row"), arg_names=names))
    for seed, (d_out, d_in), s, dtype in [(12, (5, 7), 0.5, torch.float64), (13, (8, 16), 0.7, torch.float32)]:
        w, sq = _layer(seed, d_out, d_in, dtype)
        cases.append(Case(f"random {d_out}x{d_in} layer at {s:.0%}, {str(dtype)[6:]} (seed {seed})", (w, sq, s),
                          expected=mask_lowest(_scores(w, sq), s, group="row"), arg_names=names))
    return cases


def _mask_hint(case: Case, got) -> str | None:
    w, sq, s = case.args
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(w.shape):
        return None
    if got.dtype != torch.bool:
        return "return a boolean keep-mask (True = kept), e.g. scores >= threshold or a mask filled with scatter_."
    expected = case.expected
    scores = _scores(w, sq)
    k = int(w.shape[1] * s)
    pruned_per_row = (~got).sum(1)
    if torch.equal(got, mask_lowest(-scores, s, group="row")):
        both = " (Or the mask is inverted: True must mean KEPT. At 50% the two slips look alike.)"
        return "you pruned the highest scores: prune the LOWEST and keep the highest." + (
            both if torch.equal(got, ~expected) else "")
    if torch.equal(got, ~expected):
        return "True must mean KEPT: you returned the pruned positions (invert the mask)."
    if torch.equal(got, mask_lowest(scores, s, group="tensor")):
        return "you ranked the whole matrix; Wanda compares the weights within each output row (group per row)."
    if torch.equal(got, mask_lowest(w.abs(), s, group="row")):
        return "ranked by |W_ij| alone: multiply by the input norms ||X_j||_2 = sqrt(input_sq_norms)."
    if (pruned_per_row == pruned_per_row[0]).all() and int(pruned_per_row[0]) != k:
        return (f"every row lost {int(pruned_per_row[0])} weights instead of int(d_in * sparsity) = {k}: the count is "
                "rounded down (int), not rounded to the nearest (round) or up (ceil).")
    if (pruned_per_row > k).any():
        r = int(torch.nonzero(pruned_per_row > k)[0])
        return (f"row {r} lost {int(pruned_per_row[r])} weights instead of int(d_in * sparsity) = {k}: a threshold "
                "with <= removes every weight tied with the k-th score. Sort and take exactly k (stable sort).")
    if (pruned_per_row < k).any():
        r = int(torch.nonzero(pruned_per_row < k)[0])
        return (f"row {r} lost {int(pruned_per_row[r])} weights instead of {k} = int(d_in * sparsity) (rounded down); "
                "with ties, a strict < threshold keeps too many.")
    if torch.equal(pruned_per_row, expected.logical_not().sum(1)):
        return ("right number per row, but not the right weights among equal scores: prune the LOWER index first "
                "(torch.sort(..., stable=True) or argsort(stable=True)).")
    return None


register(Checker(
    name="ch05.wanda_mask", chapter=5, kind="function",
    summary="Wanda keep-mask: each output row loses exactly int(d_in * sparsity) of its lowest scores",
    make_cases=_mask_cases, hint=_mask_hint,
))


# ----------------------------------------------------------------------------- 3. N:M Wanda mask
def _nm_cases() -> list[Case]:
    names = ("weight", "input_sq_norms", "n", "m")
    cases = [Case("the row of Exercise 1 + two inputs (row 0) and three more rows, 2:4", (W_EX8_ROWS, SQ_EX8, 2, 4),
                  expected=ref.wanda_prune(W_EX8_ROWS, SQ_EX8, n=2, m=4) != 0, arg_names=names)]
    for seed, (d_out, d_in), (n, m), dtype in [(21, (4, 16), (2, 4), torch.float64), (22, (3, 16), (4, 8), torch.float32),
                                               (23, (6, 12), (1, 3), torch.float64)]:
        w, sq = _layer(seed, d_out, d_in, dtype)
        cases.append(Case(f"random {d_out}x{d_in} layer, {n}:{m} (seed {seed})", (w, sq, n, m),
                          expected=nm_mask(_scores(w, sq), n, m), arg_names=names))
    w, sq = _layer(24, 4, 8, quantized=True)
    sq = torch.ones_like(sq)
    cases.append(Case("quantized weights, equal norms (ties), 2:4", (w, sq, 2, 4),
                      expected=nm_mask(_scores(w, sq), 2, 4), arg_names=names))
    return cases


def _nm_hint(case: Case, got) -> str | None:
    w, sq, n, m = case.args
    if not _as_bool_tensor(got, w.shape):
        if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(w.shape):
            return "return a boolean keep-mask (True = kept)."
        return None
    scores = _scores(w, sq)
    d_out, d_in = w.shape
    if torch.equal(got, ~case.expected):
        return "True must mean KEPT: you returned the pruned positions."
    kept_per_group = got.reshape(d_out, -1, m).sum(-1)
    if n != m - n and (kept_per_group == m - n).all():
        return (f"you kept M-N = {m - n} per group: in N:M, N is the number of weights KEPT in every group of M "
                "(2:4 keeps 2). Some code uses n for the zeros; not this book.")
    if torch.equal(got, nm_mask(w.abs(), n, m)):
        return "ranked by |W_ij| alone: the N:M groups are ranked by the Wanda score |W_ij| * ||X_j||_2."
    if d_out % m == 0 and torch.equal(got, nm_mask(scores.T.contiguous(), n, m).T):
        return "the groups run along the INPUT dimension: M consecutive entries of the same row, not of a column."
    strided = scores.reshape(d_out, m, -1).transpose(1, 2)  # group g = columns g, g + d_in/m, ...
    keep_strided = nm_mask(strided.reshape(d_out, -1), n, m).reshape(d_out, -1, m).transpose(1, 2).reshape(d_out, d_in)
    if torch.equal(got, keep_strided):
        return ("the groups are CONSECUTIVE columns j, ..., j+M-1: reshape the scores to (d_out, d_in // M, M), "
                "not to (d_out, M, d_in // M).")
    if (kept_per_group == n).all():
        return ("N kept per group, but not always the right ones: keep the N highest scores; among equal scores "
                "prune the lower index first (a stable sort).")
    return None


register(Checker(
    name="ch05.wanda_nm_mask", chapter=5, kind="function",
    summary="N:M Wanda keep-mask: in every group of M consecutive inputs of a row keep the N highest scores",
    make_cases=_nm_cases, hint=_nm_hint,
))


# ----------------------------------------------------------------------------- 4. one step of the layer-wise driver
class _BlockKwargs(dict):
    """The keyword arguments of a decoder block, with a short repr for the grader's messages."""

    def __repr__(self) -> str:
        def short(v):
            if isinstance(v, torch.Tensor):
                return f"tensor{list(v.shape)}"
            if isinstance(v, (tuple, list)):
                return "(" + ", ".join(short(x) for x in v) + ")"
            return repr(v)

        return "{" + ", ".join(f"{k!r}: {short(v)}" for k, v in self.items()) + "}"


def _short_repr(block: nn.Module) -> nn.Module:
    """Give ``block`` a one-line repr in the grader's messages (a subclass of its own class: same behaviour)."""
    cls = type(block)
    linears = [f"{n.rsplit('.', 1)[-1]} {m.out_features}x{m.in_features}"
               for n, m in block.named_modules() if isinstance(m, nn.Linear)]
    text = f"{cls.__name__}(linears: {', '.join(linears)})"
    block.__class__ = type(cls.__name__, (cls,), {"__repr__": lambda self: text, "__module__": cls.__module__,
                                                  "__qualname__": cls.__qualname__})
    return block


def _tiny_llama(seed: int, hidden: int, layers: int = 2):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


_STEP_CASES: list[Case] | None = None


def _step_cases() -> list[Case]:
    """Blocks of tiny random Llama models (built once per session: they never change)."""
    global _STEP_CASES
    if _STEP_CASES is None:
        names = ("block", "inputs", "block_kwargs", "sparsity")
        cases = []
        for label, seed, hidden, block, sparsity in [
            ("tiny Llama (hidden 64), block 0, 50%", 0, 64, 0, 0.5),
            ("tiny Llama (hidden 64), block 1 on the dense outputs of block 0, 30%", 0, 64, 1, 0.3),
            ("tiny Llama (hidden 32), block 0, 60%", 1, 32, 0, 0.6),
        ]:
            model = _tiny_llama(seed, hidden)
            calib = torch.randint(0, 96, (4, 16), generator=_gen(100 + seed))
            x, kw = wa.block_inputs(model, calib, block)
            blk = _short_repr(model.model.layers[block])
            kw = _BlockKwargs(kw)
            cases.append(Case(label, (blk, x, kw, sparsity), expected=wa.wanda_block_step(blk, x, kw, sparsity),
                              arg_names=names))
        _STEP_CASES = cases
    return _STEP_CASES


def _pruned_copy(block, rule):
    """A copy of ``block`` whose linears are replaced by ``rule(name, linear) -> new weight``."""
    out = copy.deepcopy(block)
    with torch.no_grad():
        for name, lin in out.named_modules():
            if isinstance(lin, nn.Linear):
                lin.weight.copy_(rule(name, lin))
    return out


def _sequential_step(block, x, kw, s):
    """The slip: statistics of each linear gathered AFTER the earlier linears of the block were pruned."""
    out = copy.deepcopy(block)
    for name, lin in out.named_modules():
        if isinstance(lin, nn.Linear):
            acc = ref.InputNormAccumulator(lin.in_features)
            h = lin.register_forward_pre_hook(lambda mod, a, acc=acc: acc.add_batch(a[0]))
            wa.block_outputs(out, x, kw)
            h.remove()
            with torch.no_grad():
                lin.weight.copy_(ref.wanda_prune(lin.weight, acc.sq_norms, s))
    return wa.block_outputs(out, x, kw)


def _step_hint(case: Case, got) -> str | None:
    block, x, kw, s = case.args
    if not isinstance(got, torch.Tensor):
        return "return the pruned block's outputs as one tensor [nsamples, seqlen, hidden] (torch.cat the windows)."
    if got.shape != x.shape:
        return "one output per calibration window: the result has the shape of `inputs` [nsamples, seqlen, hidden]."

    def close(other):
        return got.dtype == other.dtype and torch.allclose(got, other, rtol=1e-4, atol=1e-5)

    if close(wa.block_outputs(block, x, kw)):
        return ("these are the outputs of the DENSE block: after pruning, run the calibration inputs through the "
                "pruned block again (the propagate pass).")
    if close(wa.wanda_block_step(block, x, kw, s, group="layer")):
        return "you ranked each whole matrix; Wanda compares the weights within each output row."
    if close(wa.block_outputs(_pruned_copy(block, lambda n, lin: magnitude_prune(lin.weight, s)), x, kw)):
        return "the block was pruned by |W| alone: collect the input norms with hooks and use the Wanda score."
    if close(_sequential_step(block, x, kw, s)):
        return ("the statistics of later layers (o_proj, the MLP) came from a block whose earlier layers were already "
                "pruned: collect EVERY layer's statistics in ONE pass over the dense block, then prune them all.")
    if close(wa.block_outputs(wa.wanda_prune_block(block, x[:1], kw, s), x, kw)):
        return "the statistics must add up x_j^2 over ALL calibration windows, not just the first (or the last)."
    if close(wa.block_outputs(wa.wanda_prune_block(block, x[-1:], kw, s), x, kw)):
        return "the statistics must add up x_j^2 over ALL calibration windows, not just the last one."
    return None


register(Checker(
    name="ch05.block_step", chapter=5, kind="function",
    summary="one step of the layer-wise driver: Wanda statistics by hooks, prune a copy, return its outputs",
    make_cases=_step_cases, hint=_step_hint, rtol=1e-4, atol=1e-5,
))
