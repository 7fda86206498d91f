"""N:M sparsity: keep N of every M consecutive weights along the input dimension (Chapters 1 and 7).

For a weight ``W`` of shape ``[d_out, d_in]`` the groups are ``W[r, g*M:(g+1)*M]``: M consecutive *input*
columns of one output row, which is the layout NVIDIA's 2:4 sparse tensor cores accelerate (Mishra et al. 2021).
"N:M" always means N weights KEPT out of M (2:4 keeps half).

Chapter 7 also stores a 2:4 matrix the way sparse tensor cores do, in a *teaching* model of the format
(:func:`pack_24`, :func:`unpack_24`), and counts what the format costs in bits (:func:`metadata_bits`,
:func:`min_metadata_bits`, :func:`compressed_bits`, :func:`compression_ratio`, :func:`bits_per_weight`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validate import as_tensor

__all__ = [
    "parse_pattern",
    "check_nm_args",
    "nm_mask",
    "check_nm",
    "Packed24",
    "pack_24",
    "unpack_24",
    "pack_group_24",
    "index_bits",
    "metadata_bits",
    "min_metadata_bits",
    "compressed_bits",
    "compression_ratio",
    "bits_per_weight",
]


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"unstructured"`` (or None) -> None; ``"2:4"`` -> ``(2, 4)`` (Chapter 7)."""
    if pattern is None or pattern == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if not match:
        raise ValueError(f"`pattern` must be 'unstructured' or 'N:M' such as '2:4' or '4:8'; got {pattern!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n <= m:
        raise ValueError(f"`pattern` {pattern!r}: N:M keeps N of every M weights, so it needs 0 < N <= M")
    return n, m


def check_nm_args(n: int | None, m: int | None, d_in: int | None = None) -> tuple[int, int] | None:
    """Validate an N:M pair (both None means unstructured); ``d_in`` must be divisible by M."""
    if n is None and m is None:
        return None
    if n is None or m is None:
        raise ValueError(f"`n` and `m` must be given together (N kept of every M); got n={n!r}, m={m!r}")
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
        raise ValueError(f"`n` and `m` must be integers; got n={n!r}, m={m!r}")
    if not 0 < n <= m:
        raise ValueError(f"`n` must satisfy 0 < n <= m (N kept of every M); got n={n}, m={m}")
    if d_in is not None and d_in % m:
        raise ValueError(f"`m` must divide the input dimension d_in={d_in}; got m={m}")
    return n, m


def nm_mask(scores, n: int, m: int) -> Tensor:
    """Keep-mask with the N highest ``scores`` of every M consecutive inputs in each row (Chapter 7).

    ``scores``: ``[d_out, d_in]``; returns bool ``[d_out, d_in]``. Ties: among equal scores the lower index is
    pruned first (a stable sort), so every group keeps exactly N.
    """
    s = as_tensor(scores, "scores")
    if s.dim() != 2:
        raise ValueError(f"`scores` must be 2-D [d_out, d_in]; got shape {tuple(s.shape)}")
    check_nm_args(n, m, s.shape[1])
    groups = s.reshape(s.shape[0], -1, m)  # (d_out, d_in / m, m)
    drop = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]  # (d_out, groups, m - n)
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
    return keep.reshape(s.shape)


def check_nm(weight, n: int, m: int) -> bool:
    """True if every group of M consecutive inputs of every row has at most N non-zeros (Chapter 7)."""
    w = weight if isinstance(weight, Tensor) else as_tensor(weight, "weight")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    check_nm_args(n, m, w.shape[1])
    return bool(((w.reshape(w.shape[0], -1, m) != 0).sum(-1) <= n).all())


# ------------------------------------------------------------------------------ the 2:4 compressed format
@dataclass(frozen=True)
class Packed24:
    """A 2:4 matrix in the teaching compressed format of :func:`pack_24` (Chapter 7).

    ``values``: ``[d_out, d_in // 2]``, the dense matrix's dtype, the two stored values of every group of four
    in increasing position order. ``meta``: uint8 ``[d_out, ceil(d_in / 8)]``, 4 bits per group (two 2-bit
    positions), two groups per byte. ``shape``: ``(d_out, d_in)`` of the dense matrix.
    """

    values: Tensor
    meta: Tensor
    shape: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes of the values plus the metadata."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.meta))


def _kept_positions(nonzero: Tensor) -> Tensor:
    """``[..., 4]`` non-zero flags -> ``[..., 2]`` stored positions, increasing: the non-zeros, then the lowest
    free positions (a stable sort puts the non-zeros first, each part in index order)."""
    pos = torch.sort((~nonzero).to(torch.int8), dim=-1, stable=True).indices[..., :2]
    return torch.sort(pos, dim=-1).values


def _check_24(nonzero: Tensor, name: str) -> None:
    """ValueError naming the first group (row-major) with more than 2 non-zeros; ``nonzero``: ``[d_out, G, 4]``."""
    counts = nonzero.sum(dim=-1)  # (d_out, G)
    bad = torch.nonzero(counts > 2)
    if bad.numel():
        r, g = (int(i) for i in bad[0])
        raise ValueError(f"`{name}` is not 2:4: row {r}, group {g} (columns {4 * g}..{4 * g + 3}) has "
                         f"{int(counts[r, g])} non-zeros; at most 2 of every 4 consecutive inputs of a row may be "
                         "non-zero")


def pack_24(weight) -> Packed24:
    """Compress a 2:4 matrix ``[d_out, d_in]`` into its kept values and 2-bit position metadata (Chapter 7).

    A *teaching* model of what NVIDIA's sparse tensor cores store, not the hardware's bit layout (CUTLASS and
    cuSPARSELt pack the metadata in 16-bit words and reorder them into tiles). Each group of 4 consecutive
    inputs of a row (``d_in % 4 == 0``) with at most 2 non-zeros stores:

    * its two values, at positions ``i0 < i1``, in ``values`` ``[d_out, d_in // 2]`` (the weight's dtype);
    * the 4-bit code ``i0 | i1 << 2`` (:func:`pack_group_24`: first position in the low 2 bits, as in the
      CUTLASS encoding), two groups per uint8 byte, group ``2k`` in the low nibble and ``2k + 1`` in the high
      one: ``meta`` ``[d_out, d_in // 8]``, i.e. 1 bit per dense entry. When ``d_in % 8 == 4`` each row's last
      byte holds its last group in the low nibble and 0 in the high nibble (padding, ignored by
      :func:`unpack_24`), so ``meta`` is ``[d_out, (d_in + 4) // 8]``: rows never share a byte.

    A group with fewer than 2 non-zeros stores its non-zeros plus the lowest free positions (all zeros: 0 and
    1), holding their zeros as values, so every group has 2 valid, increasing positions and :func:`unpack_24`
    is exact. (The hardware fills such groups differently; any choice decodes to the same matrix.)
    ``weight`` (a tensor or a list of numbers) must be finite; it is not modified. ValueError if it is not
    2-D, if 4 does not divide ``d_in``, or if a group has more than 2 non-zeros (naming the first such group).
    """
    w = as_tensor(weight, "weight")
    if w.dim() != 2:
        raise ValueError(f"`weight` must be 2-D [d_out, d_in]; got shape {tuple(w.shape)}")
    d_out, d_in = w.shape
    if d_in % 4:
        raise ValueError(f"`weight` must have d_in divisible by 4 (groups of 4 consecutive inputs); "
                         f"got shape {tuple(w.shape)}")
    groups = w.detach().reshape(d_out, d_in // 4, 4)  # (d_out, G, 4)
    nonzero = groups != 0
    _check_24(nonzero, "weight")
    pos = _kept_positions(nonzero)  # (d_out, G, 2)
    values = torch.gather(groups, -1, pos).reshape(d_out, d_in // 2)  # a new tensor, never a view of `weight`
    codes = pos[..., 0] | (pos[..., 1] << 2)  # (d_out, G), 4 bits each
    if codes.shape[1] % 2:
        codes = torch.cat([codes, codes.new_zeros(d_out, 1)], dim=1)  # the padding nibble of each row
    meta = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)  # (d_out, ceil(G / 2))
    return Packed24(values, meta, (d_out, d_in))


def unpack_24(packed: Packed24) -> Tensor:
    """The dense ``[d_out, d_in]`` matrix of a :class:`Packed24` (Chapter 7): the inverse of :func:`pack_24`.

    Bit-exact at the stored positions (a stored ``-0.0`` stays ``-0.0``); every other entry is ``+0.0``, so
    ``unpack_24(pack_24(w))`` equals ``w`` in value, dtype and shape, and bit for bit unless ``w`` has a
    ``-0.0`` at a position the format does not store. ``packed`` is not modified.
    """
    if not isinstance(packed, Packed24):
        raise ValueError(f"`packed` must be a Packed24 (from pack_24); got {type(packed).__name__}")
    d_out, d_in = packed.shape
    n_groups = d_in // 4
    if tuple(packed.values.shape) != (d_out, d_in // 2):
        raise ValueError(f"`packed.values` must have shape {(d_out, d_in // 2)}; got {tuple(packed.values.shape)}")
    if packed.meta.dtype != torch.uint8 or tuple(packed.meta.shape) != (d_out, (n_groups + 1) // 2):
        raise ValueError(f"`packed.meta` must be uint8 of shape {(d_out, (n_groups + 1) // 2)}; got "
                         f"{str(packed.meta.dtype).replace('torch.', '')} {tuple(packed.meta.shape)}")
    meta = packed.meta.to(torch.int64)
    codes = torch.stack([meta & 0xF, meta >> 4], dim=-1).reshape(d_out, -1)[:, :n_groups]  # (d_out, G)
    pos = torch.stack([codes & 3, codes >> 2], dim=-1)  # (d_out, G, 2)
    if (pos[..., 0] >= pos[..., 1]).any():
        raise ValueError("`packed.meta` is corrupt: every group needs two positions i0 < i1 (code i0 | i1 << 2)")
    values = packed.values.reshape(d_out, n_groups, 2)
    out = torch.zeros(d_out, n_groups, 4, dtype=values.dtype, device=values.device)
    return out.scatter_(-1, pos, values).reshape(d_out, d_in)


def pack_group_24(group) -> int:
    """The 4-bit metadata of one group of 4 numbers with at most 2 non-zeros (Chapter 7).

    The stored positions ``i0 < i1`` are those of the non-zeros, completed by the lowest free positions (as in
    :func:`pack_24`); the code is ``i0 | i1 << 2``, the first position in the low 2 bits: ``[0, 5, 0, 7]`` ->
    positions 1 and 3 -> ``0b1101 = 13``; ``[0, 0, 3, 0]`` -> positions 0 and 2 -> ``0b1000 = 8``.
    """
    g = as_tensor(group, "group")
    if tuple(g.shape) != (4,):
        raise ValueError(f"`group` must hold exactly 4 numbers; got shape {tuple(g.shape)}")
    nonzero = g != 0
    if int(nonzero.sum()) > 2:
        raise ValueError(f"`group` must have at most 2 non-zeros (2:4); got {int(nonzero.sum())}")
    i0, i1 = _kept_positions(nonzero).tolist()
    return i0 | (i1 << 2)


# ------------------------------------------------------------------------------ what the format costs in bits
_PER = ("weight", "group", "kept")


def _per(per: str, n: int, m: int) -> int:
    """How many of what ``per`` names one group of M holds: M dense weights, 1 group, N kept values."""
    if per not in _PER:
        raise ValueError(f"`per` must be one of {list(_PER)} (bits per dense weight, per group of M, per kept "
                         f"value); got {per!r}")
    return {"weight": m, "group": 1, "kept": n}[per]


def index_bits(m: int) -> int:
    """Bits of one kept value's position in its group of M, ``ceil(log2 M)``: 2 for M = 4, 3 for 8 (Chapter 7)."""
    check_nm_args(1, m)
    return (m - 1).bit_length()  # exact ceil(log2 m) for integers; 0 for m = 1 (nothing to choose)


def metadata_bits(n: int, m: int, per: str = "weight") -> float:
    """Metadata bits of the N:M index format, which stores a ``ceil(log2 M)``-bit position per kept value
    (Chapter 7).

    ``per``: ``"weight"`` (per dense weight, the default: 2:4 -> 1.0), ``"group"`` (per group of M: 2:4 -> 4)
    or ``"kept"`` (per kept value: 2:4 -> 2). Not 0.5 bits per weight: that counts 2 bits per *group*.
    """
    check_nm_args(n, m)
    return n * index_bits(m) / _per(per, n, m)


def min_metadata_bits(n: int, m: int, per: str = "weight") -> float:
    """Information-theoretic minimum metadata of N:M, ``log2 C(M, N)`` bits per group (Chapter 7).

    A group can hold C(M, N) patterns, so no code needs fewer bits on average: 2:4 -> log2 6 = 2.585 bits per
    group = 0.646 per dense weight, against the 4 bits per group (1 per weight) of the index format.
    ``per`` as in :func:`metadata_bits`.
    """
    check_nm_args(n, m)
    return math.log2(math.comb(m, n)) / _per(per, n, m)


def _check_value_bits(value_bits: int) -> int:
    if isinstance(value_bits, bool) or not isinstance(value_bits, int) or value_bits <= 0:
        raise ValueError(f"`value_bits` must be a positive integer (16 for fp16/bf16, 32 for fp32, 8 for int8); "
                         f"got {value_bits!r}")
    return value_bits


def compressed_bits(n: int, m: int, value_bits: int = 16) -> float:
    """Bits per dense weight of the N:M format, values plus metadata: ``N/M * value_bits + metadata_bits``
    (Chapter 7). 2:4 fp16: 8 + 1 = 9 bits."""
    check_nm_args(n, m)
    return n / m * _check_value_bits(value_bits) + metadata_bits(n, m)


def compression_ratio(n: int, m: int, value_bits: int = 16) -> float:
    """Compressed over dense storage of an N:M matrix (Chapter 7): 2:4 fp16 -> (8 + 1) / 16 = 0.5625."""
    return compressed_bits(n, m, value_bits) / _check_value_bits(value_bits)


def bits_per_weight(n: int, m: int, value_bits: int = 16) -> dict[str, float]:
    """The N:M storage budget, every entry in bits per dense weight unless it is a ratio (Chapter 7).

    Keys: ``dense`` (``value_bits``), ``values`` (``N/M * value_bits``), ``metadata`` (:func:`metadata_bits`),
    ``total`` (values + metadata), ``ratio`` (total / dense), ``metadata_share`` (metadata / dense: 6.25% for
    2:4 fp16), ``min_metadata`` (:func:`min_metadata_bits`), ``min_total`` and ``min_ratio`` (with the minimum
    metadata instead). 2:4 fp16: values 8, metadata 1, total 9, ratio 0.5625, min_metadata 0.646.
    """
    check_nm_args(n, m)
    dense = float(_check_value_bits(value_bits))
    values = n / m * dense
    meta, low = metadata_bits(n, m), min_metadata_bits(n, m)
    return {"dense": dense, "values": values, "metadata": meta, "total": values + meta,
            "ratio": (values + meta) / dense, "metadata_share": meta / dense, "min_metadata": low,
            "min_total": values + low, "min_ratio": (values + low) / dense}
