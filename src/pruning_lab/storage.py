"""What a sparse matrix costs to store: dense, bitmask, COO, CSR and N:M-compressed formats (Chapter 1).

For a matrix of ``numel`` entries with ``nnz`` non-zeros, values of ``v`` bytes and indices of ``i`` bytes:

=========  ==============================================  =======================================================
format     bytes                                           stores
=========  ==============================================  =======================================================
dense      ``numel * v``                                   every entry, zeros included
bitmask    ``ceil(numel / 8) + nnz * v``                   one bit per entry (kept or not) + the non-zero values
COO        ``nnz * (ndim * i + v)``                        per non-zero: its coordinates (row, column) and value
CSR        ``nnz * (i + v) + (rows + 1) * i``              per non-zero: column and value; per row: where it starts
N:M        ``numel * N/M * v + ceil(numel * N/M * b / 8)``  the N kept values of every group of M, and for each its
                                                           position in the group in ``b = ceil(log2 M)`` bits
=========  ==============================================  =======================================================

Setting a format's bytes equal to dense and solving for the sparsity ``s = 1 - nnz / numel`` gives its
**break-even sparsity**: above it the format is smaller than dense. For COO, ``s* = ndim i / (ndim i + v)`` (80%
for fp16 values and two int32 indices); for a bitmask ``s* = 1 / (8 v)``; CSR is COO with one index per non-zero
plus the row pointers. An N:M format has a fixed size and applies only to matrices with the N:M pattern (at least
``1 - N/M`` zeros), where it is smaller than dense: 2:4 with fp16 values takes 9/16 of dense.

:func:`encode` really builds each format from a tensor (plain torch: indices, packed bits) and decodes it back,
so the formulas can be checked against real byte counts (and against ``torch.Tensor.to_sparse_csr``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validate import check_sparsity
from .nm import check_nm_args, parse_pattern

__all__ = [
    "FORMATS",
    "dtype_bytes",
    "nnz_at",
    "dense_bytes",
    "bitmask_bytes",
    "coo_bytes",
    "csr_bytes",
    "nm_bytes",
    "format_bytes",
    "break_even_sparsity",
    "break_even_nnz",
    "Encoded",
    "encode",
]

#: The formats of this module (any "N:M" pattern works too where a format is asked for).
FORMATS = ("dense", "bitmask", "coo", "csr", "2:4")

_DTYPE_ALIASES = {
    "fp64": "float64", "double": "float64", "fp32": "float32", "float": "float32", "fp16": "float16",
    "half": "float16", "bf16": "bfloat16", "fp8": "float8_e4m3fn", "long": "int64", "int": "int32",
}
_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def dtype_bytes(dtype) -> int:
    """Bytes of one element of ``dtype``: a ``torch.dtype``, a name (``"fp16"``, ``"bfloat16"``, ``"int32"``...)
    or a positive integer number of bytes (Chapter 1)."""
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).element_size()
    if isinstance(dtype, int) and not isinstance(dtype, bool) and dtype > 0:
        return dtype
    if isinstance(dtype, str):
        name = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
        found = getattr(torch, name, None)
        if isinstance(found, torch.dtype):
            return torch.empty((), dtype=found).element_size()
    raise ValueError(
        f"`dtype` must be a torch.dtype, a name such as 'fp32', 'fp16', 'bf16', 'int8', 'int16', 'int32', "
        f"'int64', or a positive number of bytes; got {dtype!r}"
    )


def _shape(shape, *, two_d: bool = False) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if (not isinstance(shape, (tuple, list)) or not shape
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
        raise ValueError(f"`shape` must be a non-empty tuple of positive integers such as (1024, 1024); got {shape!r}")
    if two_d and len(shape) != 2:
        raise ValueError(f"`shape` must be 2-D (rows, columns) for this format; got {tuple(shape)}")
    return tuple(shape)


def _numel(shape) -> int:
    return math.prod(shape)


def _nnz(nnz, numel: int) -> int:
    if isinstance(nnz, bool) or not isinstance(nnz, int) or not 0 <= nnz <= numel:
        raise ValueError(f"`nnz` (the number of non-zeros) must be an integer in [0, {numel}]; got {nnz!r}")
    return nnz


def nnz_at(shape, sparsity: float) -> int:
    """Non-zeros left at ``sparsity``: ``numel - int(numel * sparsity)``, as the masks of Chapter 1 remove exactly
    ``int(numel * sparsity)`` weights (Chapter 1)."""
    numel = _numel(_shape(shape))
    return numel - int(numel * check_sparsity(sparsity))


def dense_bytes(shape, value_dtype="fp16") -> int:
    """``numel * v``: every entry stored, zeros included (Chapter 1)."""
    return _numel(_shape(shape)) * dtype_bytes(value_dtype)


def bitmask_bytes(shape, nnz: int, value_dtype="fp16") -> int:
    """``ceil(numel / 8) + nnz * v``: one bit per entry, then the non-zero values in row-major order (Chapter 1)."""
    numel = _numel(_shape(shape))
    return -(-numel // 8) + _nnz(nnz, numel) * dtype_bytes(value_dtype)


def coo_bytes(shape, nnz: int, value_dtype="fp16", index_dtype="int32") -> int:
    """``nnz * (ndim * i + v)``: each non-zero stores one index per dimension and its value (Chapter 1)."""
    shape = _shape(shape)
    return _nnz(nnz, _numel(shape)) * (len(shape) * dtype_bytes(index_dtype) + dtype_bytes(value_dtype))


def csr_bytes(shape, nnz: int, value_dtype="fp16", index_dtype="int32") -> int:
    """``nnz * (i + v) + (rows + 1) * i``: column index and value per non-zero, plus ``rows + 1`` row pointers
    (where each row's entries start) (Chapter 1). Pointers and column indices share ``index_dtype``, as in
    ``torch.sparse_csr_tensor``; the pointers go up to ``nnz``, so the dtype must hold ``nnz``."""
    rows, cols = _shape(shape, two_d=True)
    i, v = dtype_bytes(index_dtype), dtype_bytes(value_dtype)
    return _nnz(nnz, rows * cols) * (i + v) + (rows + 1) * i


def _nm_bits(m: int) -> int:
    return max(1, math.ceil(math.log2(m)))


def nm_bytes(shape, n: int = 2, m: int = 4, value_dtype="fp16") -> int:
    """Bytes of the N:M-compressed format of a ``[rows, cols]`` matrix (Chapter 1; Chapter 7 packs it).

    Keeps N values of every group of M consecutive entries of a row (``numel * N / M`` values) and, for each, its
    position in the group in ``ceil(log2 M)`` bits, packed: 2:4 stores 2 bits per kept value = 1 bit per entry.
    """
    rows, cols = _shape(shape, two_d=True)
    check_nm_args(n, m, cols)
    kept = rows * cols // m * n
    return kept * dtype_bytes(value_dtype) + -(-kept * _nm_bits(m) // 8)


def _fmt(fmt) -> tuple[str, tuple[int, int] | None]:
    """Normalise a format name: ``(name, (n, m) or None)``."""
    if isinstance(fmt, str) and fmt.lower() in ("dense", "bitmask", "coo", "csr"):
        return fmt.lower(), None
    if isinstance(fmt, str) and ":" in fmt:
        try:
            nm = parse_pattern(fmt)
        except ValueError:
            nm = None
        if nm is not None:
            return f"{nm[0]}:{nm[1]}", nm
    raise ValueError(f"`fmt` must be one of {list(FORMATS)} or an 'N:M' pattern such as '4:8'; got {fmt!r}")


def format_bytes(fmt: str, shape, sparsity: float, value_dtype="fp16", index_dtype="int32") -> int:
    """Bytes of a ``shape`` matrix at ``sparsity`` in format ``fmt`` (Chapter 1).

    ``fmt``: ``"dense"``, ``"bitmask"``, ``"coo"``, ``"csr"`` or an N:M pattern such as ``"2:4"``. The number of
    non-zeros is :func:`nnz_at` (``numel - int(numel * sparsity)``). An N:M format has the same size at every
    sparsity (its zeros are stored too) and needs at least ``1 - N/M`` sparsity, else ``ValueError``.
    """
    name, nm = _fmt(fmt)
    nnz = nnz_at(shape, sparsity)
    if nm is not None:
        if sparsity < 1 - nm[0] / nm[1] - 1e-12:
            raise ValueError(f"`sparsity` must be at least {1 - nm[0] / nm[1]:g} for the {name} format "
                             f"(N kept of every M); got {sparsity!r}")
        return nm_bytes(shape, *nm, value_dtype)
    if name == "dense":
        return dense_bytes(shape, value_dtype)
    if name == "bitmask":
        return bitmask_bytes(shape, nnz, value_dtype)
    if name == "coo":
        return coo_bytes(shape, nnz, value_dtype, index_dtype)
    return csr_bytes(shape, nnz, value_dtype, index_dtype)


def _overhead_per_nnz(name: str, shape, value_dtype, index_dtype) -> tuple[int, int]:
    """``(fixed bytes, bytes per non-zero)`` of a format whose size is linear in nnz."""
    v, i = dtype_bytes(value_dtype), dtype_bytes(index_dtype)
    if name == "bitmask":
        return -(-_numel(shape) // 8), v
    if name == "coo":
        return 0, len(shape) * i + v
    _shape(shape, two_d=True)
    return (shape[0] + 1) * i, i + v  # csr


def break_even_sparsity(fmt: str, shape, value_dtype="fp16", index_dtype="int32") -> float:
    """The sparsity above which ``fmt`` takes fewer bytes than dense (Chapter 1).

    Solves ``fixed + (1 - s) * numel * per_nnz = numel * v`` for ``s`` (nnz treated as continuous):
    COO ``ndim i / (ndim i + v)``, bitmask ``ceil(numel/8) / (numel v)``, CSR ``1 - (numel v - (rows+1) i) /
    (numel (i + v))``. For an N:M pattern: ``1 - N/M`` (it applies only from there, and is then smaller than
    dense) or NaN if it never is. NaN also when the format can never beat dense (e.g. CSR of one column).
    """
    name, nm = _fmt(fmt)
    shape = _shape(shape)
    if name == "dense":
        raise ValueError("`fmt` must be a sparse format ('bitmask', 'coo', 'csr' or 'N:M'): dense is the reference")
    dense = dense_bytes(shape, value_dtype)
    if nm is not None:
        return 1 - nm[0] / nm[1] if nm_bytes(shape, *nm, value_dtype) < dense else math.nan
    fixed, per = _overhead_per_nnz(name, shape, value_dtype, index_dtype)
    density = (dense - fixed) / (_numel(shape) * per)  # the crossing, as a fraction of non-zeros
    return 1.0 - density if density > 0 else math.nan


def break_even_nnz(fmt: str, shape, value_dtype="fp16", index_dtype="int32") -> int | None:
    """The largest number of non-zeros for which ``fmt`` is strictly smaller than dense, or None if no count
    is (Chapter 1). ``fmt``: ``"bitmask"``, ``"coo"`` or ``"csr"`` (their size grows with nnz)."""
    name, nm = _fmt(fmt)
    if name == "dense" or nm is not None:
        raise ValueError(f"`fmt` must be 'bitmask', 'coo' or 'csr' (formats whose size depends on nnz); got {fmt!r}")
    shape = _shape(shape)
    fixed, per = _overhead_per_nnz(name, shape, value_dtype, index_dtype)
    room = dense_bytes(shape, value_dtype) - fixed  # bytes left for the non-zeros: need nnz * per < room
    if room <= 0:
        return None
    return min(_numel(shape), (room - 1) // per)


# ------------------------------------------------------------------------------------------- real encodings
@dataclass(frozen=True)
class Encoded:
    """A matrix stored in one format: its ``parts`` (named tensors) and what they cost (Chapter 1).

    ``nbytes`` is the sum of ``numel * element_size`` over the parts; :meth:`decode` rebuilds the dense matrix
    (in the value dtype).
    """

    format: str
    shape: tuple
    parts: dict

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.parts.values())

    def decode(self) -> Tensor:
        return _decode(self)


def _pack_bits(values: Tensor, bits: int) -> Tensor:
    """Pack non-negative integers ``< 2**bits`` into a flat uint8 bit stream, least significant bits first."""
    flat = values.reshape(-1).to(torch.int64)
    stream = ((flat[:, None] >> torch.arange(bits)) & 1).reshape(-1)  # (count * bits,)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)  # (bytes, 8)
    return (stream << torch.arange(8)).sum(dim=1).to(torch.uint8)


def _unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    stream = ((packed.to(torch.int64)[:, None] >> torch.arange(8)) & 1).reshape(-1)[: count * bits]
    return (stream.reshape(count, bits) << torch.arange(bits)).sum(dim=1)


def _check_index_dtype(index_dtype, largest: int) -> torch.dtype:
    if index_dtype not in _INDEX_DTYPES:
        raise ValueError(f"`index_dtype` must be one of {[str(d) for d in _INDEX_DTYPES]}; got {index_dtype!r}")
    if largest > torch.iinfo(index_dtype).max:
        raise ValueError(f"`index_dtype` {index_dtype} cannot hold the largest index or pointer {largest:,}; "
                         "use a wider integer type")
    return index_dtype


def encode(weight: Tensor, fmt: str, *, value_dtype: torch.dtype | None = None,
           index_dtype: torch.dtype = torch.int32) -> Encoded:
    """Store ``weight`` in format ``fmt`` for real and return the parts (Chapter 1).

    ``fmt``: ``"dense"`` (``values``), ``"bitmask"`` (``mask``: one bit per entry, row-major, packed in uint8;
    ``values``: the non-zeros in row-major order), ``"coo"`` (``indices`` ``[ndim, nnz]`` and ``values``),
    ``"csr"`` (2-D: ``crow_indices`` ``[rows + 1]``, ``col_indices``, ``values``, as ``torch.sparse_csr``) or an
    N:M pattern such as ``"2:4"`` (2-D: ``values`` ``[rows, cols * N/M]`` and ``metadata``: each kept value's
    position in its group in ``ceil(log2 M)`` bits, packed in uint8, least significant bits first; groups with
    fewer than N non-zeros store explicit zeros). Values are cast to ``value_dtype`` (default: the weight's);
    ``index_dtype`` must hold every index. ``weight`` is not modified.
    """
    if not isinstance(weight, Tensor):
        raise ValueError(f"`weight` must be a torch.Tensor; got {type(weight).__name__}")
    name, nm = _fmt(fmt)
    w = weight.detach().to(value_dtype or weight.dtype).cpu()
    if name == "dense":
        return Encoded(name, tuple(w.shape), {"values": w.clone()})
    if name == "bitmask":
        nz = (w != 0).reshape(-1)
        return Encoded(name, tuple(w.shape), {"mask": _pack_bits(nz, 1), "values": w.reshape(-1)[nz].clone()})
    if w.dim() != 2 and name != "coo":
        raise ValueError(f"`weight` must be 2-D [rows, cols] for the {name} format; got shape {tuple(w.shape)}")
    if name == "coo":
        idx = torch.nonzero(w).T  # (ndim, nnz), row-major order
        _check_index_dtype(index_dtype, max(w.shape) - 1)
        return Encoded(name, tuple(w.shape), {"indices": idx.to(index_dtype), "values": w[tuple(idx)].clone()})
    if name == "csr":
        nz = w != 0
        _check_index_dtype(index_dtype, max(w.shape[1] - 1, int(nz.sum())))
        crow = torch.zeros(w.shape[0] + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(nz.sum(dim=1), dim=0)  # row r's entries are [crow[r], crow[r+1])
        cols = torch.nonzero(nz)[:, 1]
        return Encoded(name, tuple(w.shape), {"crow_indices": crow.to(index_dtype),
                                              "col_indices": cols.to(index_dtype), "values": w[nz].clone()})
    n, m = nm
    rows, cols = w.shape
    check_nm_args(n, m, cols)
    groups = w.reshape(rows, cols // m, m)  # (rows, groups, m)
    nonzero = groups != 0
    if (nonzero.sum(dim=-1) > n).any():
        raise ValueError(f"`weight` is not {n}:{m} sparse: some group of {m} consecutive entries of a row has "
                         f"more than {n} non-zeros")
    # the positions of the non-zeros first (then the lowest free positions), in increasing order
    pos = torch.sort((~nonzero).to(torch.int8), dim=-1, stable=True).indices[..., :n]  # (rows, groups, n)
    pos = torch.sort(pos, dim=-1).values
    values = torch.gather(groups, -1, pos).reshape(rows, cols // m * n)
    return Encoded(name, tuple(w.shape), {"values": values.clone(), "metadata": _pack_bits(pos, _nm_bits(m))})


def _decode(enc: Encoded) -> Tensor:
    p, shape = enc.parts, enc.shape
    if enc.format == "dense":
        return p["values"].clone()
    values = p["values"]
    out = torch.zeros(shape, dtype=values.dtype)
    if enc.format == "bitmask":
        nz = _unpack_bits(p["mask"], 1, math.prod(shape)).bool()
        out.reshape(-1)[nz] = values
        return out
    if enc.format == "coo":
        out[tuple(p["indices"].long())] = values
        return out
    if enc.format == "csr":
        counts = p["crow_indices"].long().diff()  # non-zeros per row
        rows = torch.repeat_interleave(torch.arange(shape[0]), counts)
        out[rows, p["col_indices"].long()] = values
        return out
    n, m = parse_pattern(enc.format)
    rows, cols = shape
    pos = _unpack_bits(p["metadata"], _nm_bits(m), rows * cols // m * n).reshape(rows, cols // m, n)
    out.reshape(rows, cols // m, m).scatter_(-1, pos, values.reshape(rows, cols // m, n))
    return out
