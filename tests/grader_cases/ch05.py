"""Grader cases of Chapter 5: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import copy

import torch
from torch import nn


# ---------------------------------------------------------------------------- Chapter 5 solutions
def wanda_scores(weight, input_sq_norms):
    return weight.abs() * input_sq_norms.sqrt()  # (d_out, d_in) * (d_in,): broadcast over the rows


def wanda_mask(weight, input_sq_norms, sparsity):
    scores = weight.abs() * input_sq_norms.sqrt()
    k = int(weight.shape[1] * sparsity)
    order = torch.sort(scores, dim=1, stable=True).indices[:, :k]  # the k lowest of each row, ties: lower index
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep.scatter_(1, order, False)
    return keep


def wanda_nm_mask(weight, input_sq_norms, n, m):
    scores = weight.abs() * input_sq_norms.sqrt()
    d_out, d_in = weight.shape
    groups = scores.reshape(d_out, d_in // m, m)  # consecutive inputs
    drop = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
    return keep.reshape(d_out, d_in)


def block_step(block, inputs, block_kwargs, sparsity, *, prune_rule=None, recompute=True, stats_windows=None):
    """The solution (with switches that produce the mutants below)."""
    block = copy.deepcopy(block)
    linears = {name: mod for name, mod in block.named_modules() if isinstance(mod, nn.Linear)}
    sq = {name: torch.zeros(lin.in_features) for name, lin in linears.items()}

    def hook(name):
        def pre_hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1])  # (tokens, d_in)
            sq[name] += x.square().sum(0)
        return pre_hook

    handles = [lin.register_forward_pre_hook(hook(name)) for name, lin in linears.items()]
    dense = []
    with torch.no_grad():
        for i in (range(inputs.shape[0]) if stats_windows is None else stats_windows):
            dense.append(block(inputs[i : i + 1], **block_kwargs))
        for h in handles:
            h.remove()
        for name, lin in linears.items():
            rule = prune_rule or (lambda w, s, sp: wanda_mask(w, s, sp))
            lin.weight.mul_(rule(lin.weight, sq[name], sparsity))
        if not recompute:
            return torch.cat(dense)
        return torch.cat([block(inputs[i : i + 1], **block_kwargs) for i in range(inputs.shape[0])])


SOLUTIONS = {
    "ch05.kept_by_wanda": 2,
    "ch05.wanda_scores": wanda_scores,
    "ch05.wanda_mask": wanda_mask,
    "ch05.wanda_nm_mask": wanda_nm_mask,
    "ch05.block_step": block_step,
}


# ---------------------------------------------------------------------------- wrong answers
def _mask_le_threshold(weight, input_sq_norms, sparsity):
    scores = weight.abs() * input_sq_norms.sqrt()
    k = int(weight.shape[1] * sparsity)
    thresh = torch.sort(scores, dim=1).values[:, k - 1 : k] if k else torch.full_like(scores[:, :1], -1.0)
    return scores > thresh  # prunes every weight tied with the k-th score


def _mask_ties_high_index(weight, input_sq_norms, sparsity):
    scores = weight.abs() * input_sq_norms.sqrt()
    k = int(weight.shape[1] * sparsity)
    flipped = scores.flip(1)  # among ties, the stable sort now finds the HIGHER original index first
    order = torch.sort(flipped, dim=1, stable=True).indices[:, :k]
    keep = torch.ones_like(weight, dtype=torch.bool).scatter_(1, order, False)
    return keep.flip(1)


def _mask_round(weight, input_sq_norms, sparsity):
    scores = weight.abs() * input_sq_norms.sqrt()
    k = round(weight.shape[1] * sparsity)
    order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
    return torch.ones_like(weight, dtype=torch.bool).scatter_(1, order, False)


def _mask_per_layer(weight, input_sq_norms, sparsity):
    scores = (weight.abs() * input_sq_norms.sqrt()).reshape(-1)
    k = int(scores.numel() * sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[torch.sort(scores, stable=True).indices[:k]] = False
    return keep.reshape(weight.shape)


def _mask_prune_highest(weight, input_sq_norms, sparsity):
    scores = weight.abs() * input_sq_norms.sqrt()
    k = int(weight.shape[1] * sparsity)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.ones_like(weight, dtype=torch.bool).scatter_(1, order, False)


def _nm_kept_m_minus_n(weight, input_sq_norms, n, m):
    return wanda_nm_mask(weight, input_sq_norms, m - n, m)  # n read as the number of zeros


def _nm_along_outputs(weight, input_sq_norms, n, m):
    scores = (weight.abs() * input_sq_norms.sqrt()).T.contiguous()  # groups of consecutive OUTPUTS
    return wanda_nm_mask(scores, torch.ones(scores.shape[1], dtype=scores.dtype), n, m).T


def _nm_strided(weight, input_sq_norms, n, m):
    scores = weight.abs() * input_sq_norms.sqrt()
    d_out, d_in = weight.shape
    groups = scores.reshape(d_out, m, d_in // m).transpose(1, 2)  # group g = columns g, g + d_in/m, ...
    drop = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
    return keep.transpose(1, 2).reshape(d_out, d_in)


def _step_float64(block, inputs, block_kwargs, sparsity):
    out = block_step(block, inputs, block_kwargs, sparsity)
    return out.double()  # a dtype slip


def _step_sequential(block, inputs, block_kwargs, sparsity):
    """Each linear pruned right after its own statistics pass: later layers see a partly pruned block."""
    block = copy.deepcopy(block)
    with torch.no_grad():
        for name, lin in block.named_modules():
            if not isinstance(lin, nn.Linear):
                continue
            sq = torch.zeros(lin.in_features)

            def pre_hook(module, args, sq=sq):  # returns None: a returned value would REPLACE the layer's input
                sq.add_(args[0].reshape(-1, args[0].shape[-1]).square().sum(0))

            h = lin.register_forward_pre_hook(pre_hook)
            for i in range(inputs.shape[0]):
                block(inputs[i : i + 1], **block_kwargs)
            h.remove()
            lin.weight.mul_(wanda_mask(lin.weight, sq, sparsity))
        return torch.cat([block(inputs[i : i + 1], **block_kwargs) for i in range(inputs.shape[0])])


def _magnitude_rule(w, sq, sparsity):
    return _mask_per_layer(w, torch.ones_like(sq), sparsity)


MUTANTS = {
    "ch05.kept_by_wanda": [
        (3, "both criteria remove w4"),
        (1, "Score w2 too"),
        (0, "expected 2"),
        (lambda: 2, "function"),
    ],
    "ch05.wanda_scores": [
        (lambda w, s: w.abs() * s, "square root"),
        (lambda w, s: w.square() * s, "square of the score"),
        (lambda w, s: w * s.sqrt(), "|W_ij|"),
        (lambda w, s: w.abs(), "activation factor"),
        (lambda w, s: w.abs() * s.sqrt()[:, None], "columns"),
        (lambda w, s: (w.abs() * s.sqrt()).float(), "dtype"),
    ],
    "ch05.wanda_mask": [
        (_mask_per_layer, "whole matrix"),
        (lambda w, s, sp: wanda_mask(w, torch.ones_like(s), sp), "|W_ij| alone"),
        (lambda w, s, sp: ~wanda_mask(w, s, sp), "True must mean KEPT"),
        (lambda w, s, sp: wanda_mask(w, s, sp).double(), "boolean keep-mask"),
        (_mask_le_threshold, "<= removes every weight tied"),
        (_mask_round, "rounded down"),
        (_mask_ties_high_index, "LOWER index first"),
        (_mask_prune_highest, "pruned the highest"),
    ],
    "ch05.wanda_nm_mask": [
        (_nm_kept_m_minus_n, "N is the number of weights KEPT"),
        (lambda w, s, n, m: wanda_nm_mask(w, torch.ones_like(s), n, m), "|W_ij| alone"),
        (_nm_along_outputs, "INPUT dimension"),
        (_nm_strided, "CONSECUTIVE columns"),
        (lambda w, s, n, m: ~wanda_nm_mask(w, s, n, m), "True must mean KEPT"),
    ],
    "ch05.block_step": [
        (lambda b, x, kw, s: block_step(b, x, kw, s, recompute=False), "DENSE block"),
        (lambda b, x, kw, s: block_step(b, x, kw, s, prune_rule=_mask_per_layer), "whole matrix"),
        (lambda b, x, kw, s: block_step(b, x, kw, s, prune_rule=_magnitude_rule), "|W| alone"),
        (_step_sequential, "ONE pass"),
        (lambda b, x, kw, s: block_step(b, x, kw, s, stats_windows=[0]), "ALL calibration windows"),
        (lambda b, x, kw, s: block_step(b, x, kw, s)[0], "shape of `inputs`"),
        (_step_float64, "dtype"),
    ],
}
