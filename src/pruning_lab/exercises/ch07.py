"""Checkers for Chapter 7 (N:M sparsity and the 2:4 format of sparse tensor cores).

Expected outputs come from :mod:`pruning_lab.nm`, the implementation the chapter teaches. "N:M" means N weights
KEPT out of every M consecutive inputs of a row. The mask cases have no ties in ``|w|``, so the answer does not
depend on a tie rule.
"""
from __future__ import annotations

import math

import torch

from .. import nm as ref
from ._core import Case, Checker, register, seeded_generator as _gen, as_float as _as_float

# The checkers' worked example (the shape of seed 001's example 3): a 4x8 layer, 2:4 per row -> 16 non-zeros.
W_EX = torch.tensor([
    [0.9, -0.1, 0.4, -1.2, 0.3, 0.05, -0.7, 0.2],
    [-0.6, 0.8, -0.2, 0.1, -1.5, 0.6, 0.25, -0.35],
    [0.15, -0.45, 1.1, -0.3, 0.5, -0.9, 0.02, 0.75],
    [-1.0, 0.35, 0.55, 0.2, -0.15, 0.4, -0.8, 1.3],
])
W_EX_24 = W_EX * ref.nm_mask(W_EX.abs(), 2, 4)  # the worked example after 2:4 pruning


def _group_counts(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros of every group of ``m`` consecutive inputs of each row: ``[d_out, d_in // m]``."""
    return (weight.reshape(weight.shape[0], -1, m) != 0).sum(dim=-1)


# ----------------------------------------------------------------------------- 1. the N:M mask
def _mask_cases() -> list[Case]:
    names = ("weight", "n", "m")

    def case(label, w, n, m):
        return Case(label, (w, n, m), expected=ref.nm_mask(w.abs(), n, m), arg_names=names)

    cases = [case("worked example: the 4x8 layer, 2:4 per row (16 non-zeros)", W_EX, 2, 4)]
    for label, shape, n, m, dtype, seed in [
        ("6x16 float32, 2:4", (6, 16), 2, 4, torch.float32, 1),
        ("4x16 float64, 1:4", (4, 16), 1, 4, torch.float64, 2),
        ("8x16 float32, 4:8", (8, 16), 4, 8, torch.float32, 3),
        ("4x12 float64, 3:4", (4, 12), 3, 4, torch.float64, 4),
        ("3x16 float32, 2:8", (3, 16), 2, 8, torch.float32, 5),
    ]:
        cases.append(case(f"random {label} (seed {seed})", torch.randn(shape, generator=_gen(seed), dtype=dtype), n, m))
    return cases


def _mask_hint(case: Case, got) -> str | None:
    w, n, m = case.args
    if isinstance(got, torch.Tensor) and got.shape == w.shape and got.dtype != torch.bool:
        return "return the boolean keep-mask (True = kept), not the pruned weights or a 0/1 float tensor."
    if not (isinstance(got, torch.Tensor) and got.shape == w.shape and got.dtype == torch.bool):
        return None
    d_out, d_in = w.shape
    if torch.equal(got, ~case.expected):
        return ("your mask is exactly inverted: either True should mean KEPT (False = pruned), or you kept the n "
                "SMALLEST |w| of each group; keep the n largest.")
    if m - n != n and torch.equal(got, ref.nm_mask(w.abs(), m - n, m)):
        return (f"you kept {m - n} of every {m}, reading n as the number of ZEROS. N:M keeps N: {n}:{m} keeps the "
                f"{n} largest |w| of each group of {m} and prunes {m - n}.")
    if torch.equal(got, ref.nm_mask(-w.abs(), n, m)):
        return "you kept the n SMALLEST |w| of each group; N:M keeps the n largest."
    if torch.equal(got, ref.nm_mask(w, n, m)):
        return "rank by |w|, not by the signed w: a large negative weight is an important one."
    if d_out % m == 0 and torch.equal(got, ref.nm_mask(w.abs().T, n, m).T):
        return ("your groups run down the columns (m consecutive rows); the groups are m consecutive INPUTS of one "
                "row: w.reshape(d_out, d_in // m, m).")
    strided = ref.nm_mask(w.abs().reshape(d_out, m, d_in // m).transpose(1, 2).reshape(d_out, d_in), n, m)
    if torch.equal(got, strided.reshape(d_out, d_in // m, m).transpose(1, 2).reshape(d_out, d_in)):
        return ("your groups are strided (inputs j, j + d_in/m, ...); the groups are m CONSECUTIVE inputs of one "
                "row: w.reshape(d_out, d_in // m, m), not w.reshape(d_out, m, d_in // m).")
    if d_out > 1 and bool((got == got[:1]).all()) and not bool((case.expected == case.expected[:1]).all()):
        return ("every row got the same mask: that drops the same columns in all rows, which is column pruning, "
                "not N:M. Choose the kept weights separately for each row's group.")
    counts = got.reshape(d_out, -1, m).sum(dim=-1)
    if not bool((counts == n).all()):
        return f"each group of {m} consecutive inputs of a row must keep exactly n = {n} weights."
    return f"n = {n} kept per group, but not the largest |w|: keep the {n} largest |w| of each group of {m}."


register(Checker(
    name="ch07.nm_mask", chapter=7, kind="function",
    summary="N:M keep-mask: the n largest |w| of every m consecutive inputs of each row (bool [d_out, d_in])",
    make_cases=_mask_cases, hint=_mask_hint,
))


# ----------------------------------------------------------------------------- 2. the validity check
def _is_nm_cases() -> list[Case]:
    names = ("weight", "n", "m")

    def case(label, w, n, m):
        return Case(label, (w, n, m), expected=ref.check_nm(w, n, m), arg_names=names)

    sparse = W_EX_24.clone()
    sparse[1, :4] = torch.tensor([0.0, 0.8, 0.0, 0.0])  # a group with one non-zero
    sparse[2, 4:] = 0.0  # and an empty one
    extra = W_EX_24.clone()
    extra[3, 5] = 0.4  # the last row's last group gets a third non-zero
    columns = torch.zeros(4, 8)
    columns[:2, :4] = torch.tensor([[1.0, 2.0, 5.0, 6.0], [3.0, 4.0, 7.0, 8.0]])  # 4 non-zeros in a row's group,
    # but at most 2 in each column's 4 rows
    g = _gen(11)
    w48 = torch.randn(8, 16, generator=g, dtype=torch.float64)
    w48 = w48 * ref.nm_mask(torch.rand(8, 16, generator=g), 4, 8)
    w48[2, :8] = 0.0
    w48[5, 8:] = w48[5, 8:] * (torch.arange(8) < 4)  # fewer than 4 non-zeros in some groups
    bad48 = w48.clone()
    bad48[6, (bad48[6, :8] == 0).nonzero()[0, 0]] = 1.0  # row 6, group 0: 5 non-zeros
    return [
        case("worked example after 2:4 pruning: 16 non-zeros (column 0 has 3)", W_EX_24, 2, 4),
        case("worked example before pruning (dense)", W_EX, 2, 4),
        case("2:4 with a group of one non-zero and an empty group", sparse, 2, 4),
        case("2:4 except a third non-zero in the last group of the last row", extra, 2, 4),
        case("not 2:4 along the rows, though every column is", columns, 2, 4),
        case("the 2:4 worked example checked as 1:4", W_EX_24, 1, 4),
        case("random 8x16 float64, 4:8 with some emptier groups (seed 11)", w48, 4, 8),
        case("the same with a fifth non-zero in row 6 (seed 11)", bad48, 4, 8),
        case("the 2:4 worked example checked as 4:8 (2:4 implies 4:8)", W_EX_24, 4, 8),
        case("the 2:4 worked example checked as 2:8", W_EX_24, 2, 8),
    ]


def _is_nm_rules(w: torch.Tensor, n: int, m: int) -> list[tuple[bool | None, str]]:
    """What plausible wrong checks answer on ``w``, with the diagnosis of each."""
    nz = _group_counts(w, m)
    down = None
    if w.shape[0] % m == 0:
        down = bool(((w.T.reshape(w.shape[1], -1, m) != 0).sum(dim=-1) <= n).all())
    return [
        (bool((nz == n).all()), f"N:M allows AT MOST n = {n} non-zeros per group, not exactly n: a group with fewer "
                                "(an empty one, or one whose kept weight is 0) is fine."),
        (bool((nz < n).all()), f"at most n = {n} non-zeros means count <= n, not count < n."),
        (down, "you counted down the columns (m consecutive rows); the groups are m consecutive INPUTS of one row: "
               "w.reshape(d_out, d_in // m, m)."),
        (bool((m - nz <= n).all()), "you counted the zeros: N:M limits the NON-ZEROS of each group to n "
                                    "((group != 0).sum() <= n)."),
        (bool((m - nz >= n).all()), f"you read n as the number of zeros; N:M keeps n: at most {n} of every {m} "
                                    "consecutive inputs may be non-zero."),
        (bool((nz <= n).any()), "one bad group is enough to fail: every group must pass (.all(), not .any())."),
    ]


def _is_nm_hint(case: Case, got) -> str | None:
    w, n, m = case.args
    if isinstance(got, torch.Tensor) and got.numel() > 1:
        return "reduce the per-group test to one answer (.all()) and return a Python bool: bool(...)."
    if not isinstance(got, bool):
        return "return True or False (a Python bool), e.g. bool(((groups != 0).sum(-1) <= n).all())."
    # the wrong rules that give this answer and agree with every earlier case (the answer passed those)
    cases = _is_nm_cases()
    labels = [c.label for c in cases]
    earlier = cases[: labels.index(case.label)] if case.label in labels else []
    verdicts = [[answer for answer, _ in _is_nm_rules(*c.args)] for c in earlier]  # (earlier cases, rules)
    hints = []
    for i, (answer, msg) in enumerate(_is_nm_rules(w, n, m)):
        consistent = all(v[i] is None or v[i] == c.expected for v, c in zip(verdicts, earlier))
        if consistent and answer is got and answer != case.expected:
            hints.append(msg)
    return " Or: ".join(hints) or None


register(Checker(
    name="ch07.is_nm", chapter=7, kind="function",
    summary="True if every group of m consecutive inputs of every row has at most n non-zeros",
    make_cases=_is_nm_cases, hint=_is_nm_hint,
))


# ----------------------------------------------------------------------------- 3. the metadata of one group
def _pack_cases() -> list[Case]:
    names = ("group",)
    groups = [
        ("[3, 0, 0, 2]: positions 0 and 3", [3.0, 0.0, 0.0, 2.0]),
        ("[0, 0.5, 0, -1.2]: positions 1 and 3", [0.0, 0.5, 0.0, -1.2]),
        ("[0.7, -0.1, 0, 0] as a float32 tensor", torch.tensor([0.7, -0.1, 0.0, 0.0])),
        ("[0, 0, 1.5, -2.5] as a float16 tensor", torch.tensor([0.0, 0.0, 1.5, -2.5], dtype=torch.float16)),
        ("[0, 1, 1, 0]: positions 1 and 2", [0.0, 1.0, 1.0, 0.0]),
        ("[0, 0, 4, 0]: one non-zero", [0.0, 0.0, 4.0, 0.0]),
        ("[0, 0, 0, -3]: one non-zero", [0.0, 0.0, 0.0, -3.0]),
        ("[0, 0, 0, 0]: an empty group", [0.0, 0.0, 0.0, 0.0]),
    ]
    return [Case(label, (grp,), expected=ref.pack_group_24(grp), arg_names=names) for label, grp in groups]


def _positions(code: int) -> tuple[int, int]:
    return code & 3, code >> 2


def _pack_hint(case: Case, got) -> str | None:
    (group,) = case.args
    i0, i1 = _positions(case.expected)
    nz = [i for i, v in enumerate(torch.as_tensor(group).tolist()) if v != 0]
    if isinstance(got, (list, tuple)) or isinstance(got, torch.Tensor) and got.numel() > 1:
        return (f"return ONE int, the two 2-bit positions packed into 4 bits: i0 | (i1 << 2) (positions [{i0}, {i1}] "
                f"-> {case.expected}).")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, int) or isinstance(got, bool):
        return None
    hints = []
    if got == i1 | (i0 << 2):
        if len(nz) < 2:
            hints.append("the lower position goes in the LOW 2 bits: sort the two positions after filling the group "
                         "up (the non-zero may be the higher one), then code = i0 | (i1 << 2).")
        else:
            hints.append("the first (lower) position goes in the LOW 2 bits: code = i0 | (i1 << 2); yours are "
                         "swapped.")
    if got in ((i0 + 1) | ((i1 + 1) << 2), ((i0 + 1) | ((i1 + 1) << 2)) & 0xF):
        hints.append("positions start at 0 (the first entry of the group is position 0), not 1.")
    if got == sum(1 << i for i in nz):
        hints.append("that is a bitmask of the non-zero positions (one bit per position); the format stores two "
                     "2-bit POSITIONS instead: i0 | (i1 << 2).")
    if got == i0 | (i1 << 1):
        hints.append("each position takes 2 bits: shift the second position by 2, i0 | (i1 << 2).")
    if not hints and len(nz) < 2:
        hints.append("a group with fewer than 2 non-zeros still stores 2 positions, in increasing order: its "
                     "non-zeros, then the lowest free positions ([0, 0, 4, 0] -> positions 0 and 2 -> 0b1000 = 8).")
    return " Or: ".join(hints) or None


register(Checker(
    name="ch07.pack_group", chapter=7, kind="function",
    summary="4-bit 2:4 metadata of one group of 4: positions i0 < i1 of the kept values, code i0 | (i1 << 2)",
    make_cases=_pack_cases, hint=_pack_hint,
))


# ----------------------------------------------------------------------------- 4. metadata in bits per weight
def _metadata_cases() -> list[Case]:
    return [Case("metadata of a 2:4 fp16 matrix, bits per dense weight", expected=ref.metadata_bits(2, 4))]


def _metadata_hint(case: Case, got) -> str | None:
    got = _as_float(got)
    if got is None:
        return None
    close = lambda v: math.isclose(got, v, rel_tol=1e-3)  # noqa: E731
    if close(0.5):
        return ("that counts 2 bits per GROUP, a mistake found in the wild. Each of the 2 KEPT values needs its own "
                "2-bit position: 4 bits per group of 4 weights.")
    if close(2.0):
        return "2 bits is per KEPT value, and only half of the weights are kept: per dense weight it is half that."
    if close(4.0):
        return "4 bits is per group of 4: divide by the 4 weights of the group."
    if close(ref.min_metadata_bits(2, 4)) or close(ref.min_metadata_bits(2, 4, per="group")):
        return ("that is the information-theoretic minimum, log2 C(4, 2) = log2 6 bits per group; the format stores "
                "a 2-bit position per kept value instead.")
    if close(ref.bits_per_weight(2, 4)["metadata_share"]):
        return "that is the metadata's share of dense fp16 (1/16); the question asks for bits per weight."
    if close(ref.compressed_bits(2, 4)):
        return "that is values + metadata; the question asks for the metadata alone."
    return None


register(Checker(
    name="ch07.metadata_bits", chapter=7, kind="value",
    summary="metadata of a 2:4 fp16 matrix in bits per dense weight",
    make_cases=_metadata_cases, hint=_metadata_hint,
))


# ----------------------------------------------------------------------------- 5. derivation: compressed / dense
def _compression_cases() -> list[Case]:
    return [Case("compressed (values + metadata) over dense storage of a 2:4 fp16 matrix",
                 expected=ref.compression_ratio(2, 4, 16))]


def _compression_hint(case: Case, got) -> str | None:
    got = _as_float(got)
    if got is None:
        return None
    close = lambda v: math.isclose(got, v, rel_tol=1e-3)  # noqa: E731
    r = case.expected
    if close(0.5):
        return "half the values are kept, but the metadata is missing: every kept value also stores its 2-bit position."
    if close((8 + 0.5) / 16):
        return ("that uses 0.5 metadata bits per weight (2 bits per group), a mistake found in the wild: each KEPT "
                "value has its own 2-bit position, 1 bit per dense weight.")
    if close((8 + 2) / 16):
        return "that gives every weight a 2-bit position; only the kept half of them store one."
    if close(1 - r):
        return "that is the saving, 1 - compressed/dense; the question asks for the ratio compressed / dense."
    if close(1 / r):
        return "that is dense / compressed; the question asks for compressed / dense (below 1)."
    if close(100 * r):
        return "give a fraction (0.x), not a percentage."
    if close(ref.compressed_bits(2, 4)):
        return "that is bits per dense weight; divide by the 16 bits of a dense fp16 weight."
    if close(ref.bits_per_weight(2, 4)["min_ratio"]):
        return "that uses the information-theoretic minimum metadata (log2 6 bits per group); the format stores 4."
    return None


register(Checker(
    name="ch07.max_compression", chapter=7, kind="value",
    summary="compressed (values + metadata) over dense storage of a 2:4 fp16 matrix",
    make_cases=_compression_cases, hint=_compression_hint,
))
