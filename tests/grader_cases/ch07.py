"""Grader cases of Chapter 7: the solution of every checker and plausible wrong answers (with words the failure
message must contain). Collected by tests/test_graders.py."""
import torch


# ---------------------------------------------------------------------------- Chapter 7 solutions
def nm_mask(weight, n, m, *, score=torch.abs, kept=lambda n, m: n):
    """The solution (with switches that produce the mutants below): the n largest scores of each group of m."""
    d_out, d_in = weight.shape
    groups = score(weight).reshape(d_out, d_in // m, m)  # (d_out, groups, m): m consecutive inputs of a row
    keep = torch.zeros(groups.shape, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(kept(n, m), dim=-1).indices, True)
    return keep.reshape(d_out, d_in)


def is_nm(weight, n, m):
    return bool(((weight.reshape(weight.shape[0], -1, m) != 0).sum(dim=-1) <= n).all())


def positions(group, *, fill_low=True, sort=True):
    """Stored positions of a 2:4 group: the non-zeros, then the lowest free positions, increasing."""
    pos = [i for i, v in enumerate(group) if float(v) != 0]
    free = [i for i in range(4) if i not in pos]
    pos += (free if fill_low else free[::-1])[: 2 - len(pos)]
    return sorted(pos) if sort else pos


def pack_group(group):
    i0, i1 = positions(group)
    return i0 | (i1 << 2)


SOLUTIONS = {
    "ch07.nm_mask": nm_mask,
    "ch07.is_nm": is_nm,
    "ch07.pack_group": pack_group,
    "ch07.metadata_bits": 2 * 2 / 4,  # 2 bits per kept value, 2 kept per group of 4 weights
    "ch07.max_compression": (16 / 2 + 1) / 16,  # half the fp16 values + 1 metadata bit, per 16 dense bits
}


# ---------------------------------------------------------------------------- wrong answers
def _strided_mask(w, n, m):
    d_out, d_in = w.shape
    groups = w.abs().reshape(d_out, m, d_in // m).transpose(1, 2)  # inputs j, j + d_in/m, ...: not consecutive
    keep = torch.zeros(groups.shape, dtype=torch.bool).scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.transpose(1, 2).reshape(d_out, d_in)


def _mask_in_place(w, n, m):
    return nm_mask(w.abs_(), n, m)


def _counts(w, m):
    return (w.reshape(w.shape[0], -1, m) != 0).sum(dim=-1)


MUTANTS = {
    "ch07.nm_mask": [
        (lambda w, n, m: nm_mask(w.T, n, m).T, "down the columns"),
        (lambda w, n, m: nm_mask(w, n, m, kept=lambda n, m: m - n), "ZEROS"),  # erratum 6
        (lambda w, n, m: nm_mask(w, n, m, score=lambda x: -x.abs()), "SMALLEST"),
        (lambda w, n, m: nm_mask(w, n, m, score=lambda x: x), "signed"),
        (lambda w, n, m: nm_mask(w.abs().sum(0, keepdim=True), n, m).expand(w.shape[0], -1).clone(),
         "column pruning"),  # erratum 5: one set of columns for all rows
        (lambda w, n, m: ~nm_mask(w, n, m), "KEPT"),
        (lambda w, n, m: nm_mask(w, n, m).float(), "boolean keep-mask"),
        (lambda w, n, m: w * nm_mask(w, n, m), "not the pruned weights"),
        (_strided_mask, "strided"),
        (_mask_in_place, "modified its input `weight`"),
    ],
    "ch07.is_nm": [
        (lambda w, n, m: bool((_counts(w, m) == n).all()), "AT MOST n"),
        (lambda w, n, m: bool(((w.T.reshape(w.shape[1], -1, m) != 0).sum(-1) <= n).all()), "down the columns"),
        (lambda w, n, m: bool((m - _counts(w, m) <= n).all()), "counted the zeros"),
        (lambda w, n, m: bool((m - _counts(w, m) >= n).all()), "n as the number of zeros"),  # erratum 6
        (lambda w, n, m: bool((_counts(w, m) <= n).any()), ".any()"),
        (lambda w, n, m: bool((_counts(w, m) < n).all()), "count < n"),
        (lambda w, n, m: _counts(w, m) <= n, "reduce the per-group test"),
        (lambda w, n, m: int(is_nm(w, n, m)), "Python bool"),
    ],
    "ch07.pack_group": [
        (lambda g: positions(g)[1] | (positions(g)[0] << 2), "swapped"),
        (lambda g: (positions(g)[0] + 1) | ((positions(g)[1] + 1) << 2), "start at 0"),
        (lambda g: positions(g), "ONE int"),
        (lambda g: sum(1 << i for i, v in enumerate(g) if float(v) != 0), "bitmask"),
        (lambda g: positions(g)[0] | (positions(g)[1] << 1), "shift the second position by 2"),
        (lambda g: (lambda p: p[0] | p[1] << 2)(positions(g, fill_low=False)), "lowest free positions"),
        (lambda g: (lambda p: p[0] | p[1] << 2)(positions(g, sort=False)), "sort"),
        (lambda g: f"{positions(g)[0]}{positions(g)[1]}", "expected an integer"),
    ],
    "ch07.metadata_bits": [
        (0.5, "per GROUP"),  # erratum 7
        (2.0, "per KEPT value"),
        (4, "per group of 4"),
        (0.646, "information-theoretic minimum"),
        (0.0625, "share of dense fp16"),
        (9.0, "metadata alone"),
        ("1 bit", "expected a number"),
        (lambda: 1.0, "function"),
    ],
    "ch07.max_compression": [
        (0.5, "metadata is missing"),
        (0.53125, "0.5 metadata bits per weight"),  # erratum 7
        (0.625, "every weight a 2-bit position"),
        (0.4375, "saving"),
        (56.25, "percentage"),
        (9, "bits per dense weight"),
        (16 / 9, "dense / compressed"),
        (0.5404, "information-theoretic minimum"),
    ],
}
