"""Structured pruning by surgery: remove FFN channels and attention heads so the matrices really shrink (Chapter 8).

Masks (Chapters 1-7) leave every matrix its size; here the removed units are cut out, and the result is a smaller
*dense* model whose config says so: ``save_pretrained`` writes it and plain ``from_pretrained`` loads it.

**FFN channels.** A Llama MLP computes ``y = W_down (act(W_gate x) * (W_up x))`` with ``W_gate, W_up``
``[d_ff, d]`` and ``W_down`` ``[d, d_ff]``. Channel ``j`` is row ``j`` of ``W_gate`` and ``W_up`` (axis 0) and
column ``j`` of ``W_down`` (axis 1); its whole contribution to ``y`` is ``W_down[:, j] * X_j``, so removing it is
exactly zeroing that column. OPT: rows of ``fc1`` (and its bias), columns of ``fc2``.

**Attention heads.** The attention output is ``W_o concat_h(o_h)``: head ``h`` owns rows ``h*hd:(h+1)*hd`` of
``W_q`` (axis 0) and the same columns of ``W_o`` (axis 1), ``hd = head_dim``. With grouped-query attention
(``n_kv`` key/value heads, ``g = n_heads / n_kv`` query heads per group) query head ``h`` reads kv head
``h // g``; after surgery the kept query heads must still be laid out as equal consecutive groups, so every kept
kv group keeps the same number of query heads; a kv group with no query head left loses its rows of ``W_k`` and
``W_v`` too.

**Which units.** The same count in every block (the config holds one ``intermediate_size`` and one
``num_attention_heads``), per block the highest-scoring ones, from one calibration pass:

- ``"activation"`` (Minitron; Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
  Distillation"): channel ``j`` scores ``||X_j||_2``, the L2 norm over calibration tokens of the input of
  ``W_down``; head ``h`` scores ``sqrt(sum_{j in h} ||X_j||^2)`` over its slice of the input of ``W_o``.
- ``"wanda"`` (Wanda's ``|W_ij| ||X_j||`` of Sun et al. 2024 summed over the structure): channel ``j`` scores
  ``sum_i |W_down[i, j]| ||X_j||_2``; head ``h`` the same sum over its columns of ``W_o``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .._validate import check_choice
from ..wanda import InputNormAccumulator
from .driver import _check_calibration, _input_device, find_decoder_blocks

__all__ = ["CRITERIA", "channel_scores", "score_units", "prune_ffn_channels", "prune_heads", "shrink",
           "param_count", "ffn_keep_for_fraction"]

CRITERIA = ("activation", "wanda")

#: Where the units live in a decoder block, by layout. ``ffn_in`` lose rows, ``ffn_out`` loses columns.
_LAYOUTS = {
    "llama": {"ffn_in": ("mlp.gate_proj", "mlp.up_proj"), "ffn_out": "mlp.down_proj", "ffn_config": "intermediate_size",
              "attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "attn_out": "self_attn.o_proj"},
    "opt": {"ffn_in": ("fc1",), "ffn_out": "fc2", "ffn_config": "ffn_dim",
            "attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "attn_out": "self_attn.out_proj"},
}


def _get(block: nn.Module, path: str) -> nn.Module | None:
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def _layout(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``("llama" | "opt", blocks)``; ``ValueError`` naming ``model`` for any other block layout."""
    _, blocks = find_decoder_blocks(model)
    for name, lay in _LAYOUTS.items():
        paths = (*lay["ffn_in"], lay["ffn_out"], *lay["attn"], lay["attn_out"])
        if all(isinstance(_get(b, p), nn.Linear) for b in blocks for p in paths):
            return name, blocks
    raise ValueError(
        f"`model` ({type(model).__name__}) has an unsupported architecture: surgery knows the Llama family "
        "(mlp.gate_proj/up_proj/down_proj, self_attn.q/k/v/o_proj: Llama, Mistral, Qwen2, SmolLM) and OPT "
        "(fc1, fc2, self_attn.q/k/v/out_proj) dense blocks"
    )


def _heads(model: nn.Module, layout: str, blocks: nn.ModuleList) -> tuple[int, int, int]:
    """``(n_heads, n_kv, head_dim)`` from the config, checked against the first block's ``W_o``."""
    cfg = model.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    hd = int(blocks[0].self_attn.head_dim)
    if _get(blocks[0], _LAYOUTS[layout]["attn_out"]).in_features != n_heads * hd:
        raise ValueError(f"`model`: its config says {n_heads} heads of {hd}, its output projection disagrees")
    return n_heads, n_kv, hd


# ----------------------------------------------------------------------------------------------- scores

@torch.no_grad()
def channel_scores(model: nn.Module, calibration: Tensor, *, batch_size: int = 1) -> dict[str, Any]:
    """Statistics for :func:`score_units`, from ONE pass of the whole model over ``calibration`` (Chapter 8).

    ``calibration``: token ids ``[nsamples, seqlen]``. Forward pre-hooks on every block's FFN output projection
    (``mlp.down_proj``; OPT ``fc2``) and attention output projection (``o_proj``; OPT ``out_proj``) accumulate
    ``sq_norms[j] = sum over all calibration tokens t of X_tj^2`` (:class:`~pruning_lab.wanda.InputNormAccumulator`).
    Returns, per block (lists indexed by block): ``"ffn_sq_norms"`` ``[d_ff]`` and ``"attn_sq_norms"``
    ``[n_heads * head_dim]`` (float32, CPU), ``"ffn_weight_abs"`` ``[d_ff]`` = ``sum_i |W_down[i, j]|`` (the column
    sums over axis 0) and ``"attn_weight_abs"`` the same for ``W_o``; plus ``"layout"``, ``"head_dim"``,
    ``"num_key_value_heads"`` and ``"ntokens"``. Runs in eval mode (the training flag is restored); weights untouched.
    """
    layout, blocks = _layout(model)
    if calibration is None:
        raise ValueError("`calibration` is required: a LongTensor [nsamples, seqlen] of token ids")
    calibration = _check_calibration(calibration, model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    n_heads, n_kv, hd = _heads(model, layout, blocks)
    lins = {(kind, b): _get(block, _LAYOUTS[layout][kind])
            for b, block in enumerate(blocks) for kind in ("ffn_out", "attn_out")}
    accs = {key: InputNormAccumulator(lin.in_features, check_each_batch=False) for key, lin in lins.items()}
    handles = [lin.register_forward_pre_hook(lambda mod, args, acc=accs[key]: acc.add_batch(args[0]))
               for key, lin in lins.items()]
    was_training = model.training
    model.eval()
    device = _input_device(model)
    try:
        for i in range(0, calibration.shape[0], batch_size):
            model(input_ids=calibration[i : i + batch_size].to(device), use_cache=False)  # (b, seqlen)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for acc in accs.values():
        acc.check_finite()
    out: dict[str, Any] = {"layout": layout, "head_dim": hd, "num_key_value_heads": n_kv,
                           "ntokens": int(calibration.numel())}
    for kind, key in (("ffn_out", "ffn"), ("attn_out", "attn")):
        out[f"{key}_sq_norms"] = [accs[kind, b].sq_norms.cpu() for b in range(len(blocks))]
        out[f"{key}_weight_abs"] = [lins[kind, b].weight.detach().abs().float().sum(0).cpu()  # [d_in]
                                    for b in range(len(blocks))]
    return out


def score_units(stats: dict[str, Any], criterion: str = "activation") -> dict[str, list[Tensor]]:
    """``{"ffn": [Tensor[d_ff] per block], "heads": [Tensor[n_heads] per block]}`` (Chapter 8).

    ``stats`` from :func:`channel_scores`; ``||X_j|| = sqrt(sq_norms[j])``. ``"activation"`` (Minitron):
    channel ``||X_j||``, head ``sqrt(sum_{j in h} ||X_j||^2)``. ``"wanda"``: channel ``sum_i |W_down[i, j]| ||X_j||``,
    head ``sum_{j in h} sum_i |W_o[i, j]| ||X_j||``. Head ``h`` owns input features ``h*hd:(h+1)*hd`` of ``W_o``.
    """
    check_choice(criterion, "criterion", CRITERIA)
    keys = ("head_dim", "ffn_sq_norms", "ffn_weight_abs", "attn_sq_norms", "attn_weight_abs")
    if not isinstance(stats, dict) or any(k not in stats for k in keys):
        raise ValueError(f"`stats` must be the dict returned by channel_scores (keys {list(keys)})")
    hd = stats["head_dim"]

    def unit(sq: Tensor, wabs: Tensor) -> Tensor:  # per input feature j: ||X_j|| or sum_i |W_ij| ||X_j||, [d_in]
        return sq.sqrt() if criterion == "activation" else wabs * sq.sqrt()

    ffn = [unit(sq, w) for sq, w in zip(stats["ffn_sq_norms"], stats["ffn_weight_abs"])]
    if criterion == "activation":  # the norm of the head's slice: sqrt of the summed squares
        heads = [sq.view(-1, hd).sum(1).sqrt() for sq in stats["attn_sq_norms"]]  # (n_heads, hd) -> [n_heads]
    else:
        heads = [unit(sq, w).view(-1, hd).sum(1) for sq, w in zip(stats["attn_sq_norms"], stats["attn_weight_abs"])]
    return {"ffn": ffn, "heads": heads}


# ---------------------------------------------------------------------------------- which units to keep

def _top_k(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest ``scores`` (ties: the lower index is kept), in increasing order."""
    return torch.sort(scores, descending=True, stable=True).indices[:k].sort().values


def _count(value: Any, name: str, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValueError(f"`{name}` must be an integer in [1, {hi}] ({what}); got {value!r}")
    return value


def _check_scores(scores: Any, key: str, n_blocks: int, n_units: int) -> list[Tensor]:
    """``scores[key]`` of :func:`score_units`: one finite tensor ``[n_units]`` per block."""
    if not isinstance(scores, (list, tuple)) or len(scores) != n_blocks or not all(
            isinstance(s, Tensor) and s.shape == (n_units,) and bool(torch.isfinite(s).all()) for s in scores):
        raise ValueError(f"`scores['{key}']` must be a list of {n_blocks} finite tensors of shape ({n_units},), one "
                         f"per block (score_units(...)['{key}']); it is required when the count is an int")
    return [s.detach().float().cpu() for s in scores]


def _check_indices(keep: Any, name: str, n_blocks: int, n_units: int) -> list[Tensor]:
    """Explicit kept indices: one 1-D integer tensor per block, distinct, in ``[0, n_units)``, equal lengths."""
    msg = (f"`{name}` must be an int or a list of {n_blocks} 1-D integer tensors (one per block) of distinct "
           f"indices in [0, {n_units}), all of the same length >= 1")
    if not isinstance(keep, (list, tuple)) or len(keep) != n_blocks:
        raise ValueError(msg)
    out = []
    for k in keep:
        k = torch.as_tensor(k)
        if k.dim() != 1 or k.numel() == 0 or k.is_floating_point() or k.dtype == torch.bool:
            raise ValueError(msg)
        k = k.long().sort().values
        if int(k[0]) < 0 or int(k[-1]) >= n_units or bool((k[1:] == k[:-1]).any()):
            raise ValueError(msg)
        out.append(k)
    if len({k.numel() for k in out}) != 1:
        raise ValueError(msg)
    return out


def _ffn_plan(model: nn.Module, keep: Any, scores: Any) -> list[Tensor]:
    """Kept FFN channels per block, sorted, from an int count and scores or from explicit indices."""
    layout, blocks = _layout(model)
    d_ff = _get(blocks[0], _LAYOUTS[layout]["ffn_out"]).in_features
    if not isinstance(keep, int) or isinstance(keep, bool):
        return _check_indices(keep, "ffn_keep", len(blocks), d_ff)
    keep = _count(keep, "ffn_keep", d_ff, "FFN channels kept per block")
    if isinstance(scores, dict):
        scores = scores.get("ffn")
    return [_top_k(s, keep) for s in _check_scores(scores, "ffn", len(blocks), d_ff)]


def _group_heads(heads: list[Tensor], g: int) -> list[Tensor]:
    """The kv groups of explicit query heads, checked: every kept group keeps the same number of query heads,
    and every block the same number of groups."""
    kvs = []
    for h in heads:
        groups, counts = torch.unique(h // g, return_counts=True)  # kv head of query head h is h // g
        if len(set(counts.tolist())) != 1:
            raise ValueError(f"`heads_keep`: every kept key/value group must keep the same number of query heads "
                             f"(grouped-query attention, {g} per group); got {h.tolist()}")
        kvs.append(groups)
    if len({k.numel() for k in kvs}) != 1:
        raise ValueError("`heads_keep`: every block must keep the same number of key/value groups")
    return kvs


def _head_plan(model: nn.Module, keep: Any, scores: Any, kv_keep: int | None) -> tuple[list[Tensor], list[Tensor]]:
    """``(query heads, kv heads)`` kept per block, sorted. Group scores: the sum of the group's kept head scores."""
    layout, blocks = _layout(model)
    if layout == "opt":
        raise ValueError("`heads_keep` must be None for OPT: OPTAttention computes head_dim = hidden_size // "
                         "num_attention_heads, so fewer heads cannot be written in its config (FFN channels can)")
    n_heads, n_kv, hd = _heads(model, layout, blocks)
    g = n_heads // n_kv  # query heads per kv group
    if not isinstance(keep, int) or isinstance(keep, bool):
        if kv_keep is not None:
            raise ValueError("`kv_heads_keep` must be None when `heads_keep` lists the kept heads (their kv groups "
                             "follow from them); give it only with an int `heads_keep`")
        heads = _check_indices(keep, "heads_keep", len(blocks), n_heads)
        return heads, _group_heads(heads, g)
    keep = _count(keep, "heads_keep", n_heads, "query heads kept per block")
    if kv_keep is None:  # grouped-query: keep every group; multi-head (g = 1): a head goes with its k/v
        kv_keep = n_kv if g > 1 else keep
    kv_keep = _count(kv_keep, "kv_heads_keep", n_kv, "key/value heads kept per block")
    if keep % kv_keep or keep > kv_keep * g:
        raise ValueError(f"`heads_keep` must be a multiple of kv_heads_keep={kv_keep} (grouped-query attention: "
                         f"the same number of query heads in every kept group) and at most {kv_keep * g}; "
                         f"got {keep}")
    per = keep // kv_keep
    if isinstance(scores, dict):
        scores = scores.get("heads")
    heads, kvs = [], []
    for s in _check_scores(scores, "heads", len(blocks), n_heads):
        top = torch.sort(s.view(n_kv, g), dim=1, descending=True, stable=True)  # (n_kv, g) per group, best first
        groups = _top_k(top.values[:, :per].sum(1), kv_keep)  # [kv_keep]
        in_group = top.indices[groups, :per].sort(dim=1).values  # (kv_keep, per)
        heads.append((groups[:, None] * g + in_group).flatten())  # [keep], increasing
        kvs.append(groups)
    return heads, kvs


# ----------------------------------------------------------------------------------------------- surgery

def _slice_linear(lin: nn.Linear, idx: Tensor, axis: int) -> None:
    """Keep rows (``axis=0``, and the bias entries) or columns (``axis=1``) ``idx`` of ``lin``, in place."""
    idx = idx.to(lin.weight.device)
    with torch.no_grad():
        lin.weight = nn.Parameter(lin.weight.index_select(axis, idx).clone(), lin.weight.requires_grad)
        if axis == 0 and lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias[idx].clone(), lin.bias.requires_grad)
    lin.out_features, lin.in_features = lin.weight.shape


def _apply_ffn(model: nn.Module, keep: list[Tensor]) -> None:
    layout, blocks = _layout(model)
    lay = _LAYOUTS[layout]
    for block, k in zip(blocks, keep):
        for path in lay["ffn_in"]:
            _slice_linear(_get(block, path), k, 0)
        _slice_linear(_get(block, lay["ffn_out"]), k, 1)
        mlp = _get(block, lay["ffn_out"].rpartition(".")[0]) if "." in lay["ffn_out"] else block
        if hasattr(mlp, "intermediate_size"):  # LlamaMLP caches it
            mlp.intermediate_size = k.numel()
    setattr(model.config, lay["ffn_config"], keep[0].numel())


def _apply_heads(model: nn.Module, heads: list[Tensor], kvs: list[Tensor]) -> None:
    layout, blocks = _layout(model)
    *_, hd = _heads(model, layout, blocks)
    cols = torch.arange(hd)

    def rows(h: Tensor) -> Tensor:  # head h owns features h*hd .. h*hd + hd - 1
        return (h[:, None] * hd + cols).flatten()  # [len(h) * hd]

    for block, h, kv in zip(blocks, heads, kvs):
        attn = block.self_attn
        _slice_linear(attn.q_proj, rows(h), 0)
        _slice_linear(attn.k_proj, rows(kv), 0)
        _slice_linear(attn.v_proj, rows(kv), 0)
        _slice_linear(attn.o_proj, rows(h), 1)
        attn.num_key_value_groups = h.numel() // kv.numel()  # read by repeat_kv / sdpa's enable_gqa
        for name, value in (("num_heads", h.numel()), ("num_attention_heads", h.numel()),
                            ("num_key_value_heads", kv.numel())):
            if hasattr(attn, name):  # older transformers and some Llama-family models cache these
                setattr(attn, name, value)
    cfg = model.config
    cfg.head_dim = hd  # explicit: hidden_size // num_attention_heads would now be wrong (rotary dim, reload)
    cfg.num_attention_heads = heads[0].numel()
    cfg.num_key_value_heads = kvs[0].numel()


def _params(model: nn.Module) -> dict[str, int]:
    return {"blocks": param_count(model, "blocks"), "all": param_count(model, "all")}


def _sizes(model: nn.Module) -> dict[str, int]:
    """The config's unit counts: FFN width, query heads, key/value heads."""
    cfg = model.config
    return {"intermediate_size": getattr(cfg, _LAYOUTS[_layout(model)[0]]["ffn_config"]),
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads}


def _tolist(idx: list[Tensor] | None) -> list[list[int]] | None:
    return None if idx is None else [i.tolist() for i in idx]


def shrink(model: nn.Module, *, ffn_keep: int | Sequence[Tensor] | None = None,
           heads_keep: int | Sequence[Tensor] | None = None, scores: dict[str, list[Tensor]] | None = None,
           kv_heads_keep: int | None = None, inplace: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Cut FFN channels and/or attention heads out of every block: ``(smaller model, report)`` (Chapter 8).

    ``ffn_keep`` / ``heads_keep``: how many units every block keeps (the highest ``scores["ffn"]`` /
    ``scores["heads"]`` of each block, from :func:`score_units`; ties keep the lower index), or explicit kept
    indices, one tensor per block. ``None`` leaves that part alone. Kept units stay in their original order.
    Heads (Llama family only): ``heads_keep`` must be a multiple of ``kv_heads_keep`` (default: all kv groups with
    grouped-query attention; with multi-head attention each head keeps its own k/v); the config gets
    ``num_attention_heads``, ``num_key_value_heads`` and an explicit ``head_dim``. Everything is checked before
    any weight changes. ``inplace=False`` (default) works on a deep copy and leaves ``model`` untouched.
    The report: ``"ffn_kept"``, ``"heads_kept"``, ``"kv_heads_kept"`` (lists of indices per block, or None), the
    sizes before/after and ``"params_before"`` / ``"params_after"`` (``{"blocks", "all"}``, :func:`param_count`).
    """
    if ffn_keep is None and heads_keep is None:
        raise ValueError("give `ffn_keep` and/or `heads_keep` (how many FFN channels / heads every block keeps)")
    if not isinstance(inplace, bool):
        raise ValueError(f"`inplace` must be True or False; got {inplace!r}")
    ffn = _ffn_plan(model, ffn_keep, scores) if ffn_keep is not None else None
    heads, kvs = _head_plan(model, heads_keep, scores, kv_heads_keep) if heads_keep is not None else (None, None)
    report: dict[str, Any] = {"before": _sizes(model), "params_before": _params(model)}
    if not inplace:
        model = copy.deepcopy(model)
    if ffn is not None:
        _apply_ffn(model, ffn)
    if heads is not None:
        _apply_heads(model, heads, kvs)
    report.update(after=_sizes(model), params_after=_params(model), ffn_kept=_tolist(ffn),
                  heads_kept=_tolist(heads), kv_heads_kept=_tolist(kvs))
    return model, report


def prune_ffn_channels(model: nn.Module, keep: int | Sequence[Tensor], *, scores: Any = None,
                       inplace: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Remove FFN channels: rows of ``W_gate, W_up`` (OPT ``fc1`` and its bias), columns of ``W_down`` (OPT
    ``fc2``); ``[d_ff]`` becomes ``[keep]`` in every block. :func:`shrink` with ``ffn_keep`` only (Chapter 8)."""
    return shrink(model, ffn_keep=keep, scores=scores if isinstance(scores, dict) else {"ffn": scores},
                  inplace=inplace)


def prune_heads(model: nn.Module, keep: int | Sequence[Tensor], *, scores: Any = None,
                kv_heads_keep: int | None = None, inplace: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Remove attention heads: ``hd`` rows of ``W_q`` and columns of ``W_o`` per head (and the rows of ``W_k, W_v``
    of an emptied kv group). :func:`shrink` with ``heads_keep`` only; Llama family only (Chapter 8)."""
    return shrink(model, heads_keep=keep, scores=scores if isinstance(scores, dict) else {"heads": scores},
                  kv_heads_keep=kv_heads_keep, inplace=inplace)


# ------------------------------------------------------------------------------------- parameter budget

def param_count(model: nn.Module, which: str = "blocks") -> int:
    """Parameters: ``"blocks"`` = weights and biases of every nn.Linear inside the decoder blocks; ``"all"`` =
    every parameter of the model (tied embeddings counted once) (Chapter 8)."""
    check_choice(which, "which", {"blocks", "all"})
    if which == "all":
        return sum(p.numel() for p in model.parameters())
    _, blocks = find_decoder_blocks(model)
    return sum(p.numel() for b in blocks for m in b.modules() if isinstance(m, nn.Linear) for p in m.parameters())


def ffn_keep_for_fraction(model: nn.Module, fraction: float) -> int:
    """FFN channels to keep per block so that about ``fraction`` of :func:`param_count` (``"blocks"``) is removed
    by FFN pruning alone (Chapter 8).

    One channel holds ``c = sum over the input projections of (d + bias) + d`` parameters per block (Llama
    ``3d``, OPT ``2d + 1``); removing ``r`` channels in each of ``L`` blocks removes ``r c L``. Returns
    ``d_ff - r`` with ``r = round(fraction * param_count / (c L))`` (nearest, halves up), e.g. 50% of the blocks'
    parameters for a comparison with 50% unstructured or 2:4 sparsity at the same count.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be a number in (0, 1) (the fraction of block parameters removed); "
                         f"got {fraction!r}")
    layout, blocks = _layout(model)
    lay = _LAYOUTS[layout]
    lins = [_get(blocks[0], p) for p in lay["ffn_in"]]
    out = _get(blocks[0], lay["ffn_out"])
    per_channel = sum(lin.in_features + (lin.bias is not None) for lin in lins) + out.out_features  # c
    removed = math.floor(fraction * param_count(model, "blocks") / (per_channel * len(blocks)) + 0.5)  # r
    if removed >= out.in_features:
        ffn_share = per_channel * out.in_features * len(blocks) / param_count(model, "blocks")
        raise ValueError(f"`fraction` {fraction!r} cannot be removed from the FFN alone: it holds only "
                         f"{ffn_share:.1%} of the block parameters (give a fraction below that)")
    return out.in_features - removed
