"""Bytes of sparse storage formats (Chapter 1): the formulas, the break-even sparsities, and the real encodings
whose byte counts must equal the formulas."""
import math

import pytest
import torch

from pruning_lab.storage import (
    FORMATS,
    bitmask_bytes,
    break_even_nnz,
    break_even_sparsity,
    coo_bytes,
    csr_bytes,
    dense_bytes,
    dtype_bytes,
    encode,
    format_bytes,
    nm_bytes,
    nnz_at,
)
from pruning_lab.structured import magnitude_mask, sparsity_mask

MB2 = 1024 * 1024 * 2  # a 1024x1024 fp16 matrix


# --- the formulas -----------------------------------------------------------------------------------------------


def test_dtype_bytes_accepts_dtypes_names_and_ints():
    assert dtype_bytes(torch.float16) == dtype_bytes("fp16") == dtype_bytes("float16") == dtype_bytes("half") == 2
    assert dtype_bytes("bf16") == 2 and dtype_bytes("fp32") == 4 and dtype_bytes(torch.int64) == 8
    assert dtype_bytes("int8") == 1 and dtype_bytes("int16") == 2 and dtype_bytes(3) == 3
    for bad in ("fp12", 0, -2, 2.5, None, True):
        with pytest.raises(ValueError, match="dtype"):
            dtype_bytes(bad)


def test_practice_problem_1_coo_of_a_1024_square_fp16_matrix():
    """Seed 001, practice problem 1: COO with two int32 indices breaks even with dense at 80% sparsity."""
    shape = (1024, 1024)
    assert dense_bytes(shape, "fp16") == MB2 == 2_097_152
    assert coo_bytes(shape, 209_715, "fp16", "int32") == 2_097_150  # 10 bytes per non-zero
    assert break_even_sparsity("coo", shape, "fp16", "int32") == pytest.approx(0.8, abs=1e-15)
    assert break_even_nnz("coo", shape, "fp16", "int32") == 209_715  # the most non-zeros that still beat dense
    # at exactly 80% (int(0.8 n) zeros, as the masks remove) one non-zero too many is left: 8 bytes over dense
    assert nnz_at(shape, 0.8) == 209_716
    assert format_bytes("coo", shape, 0.8, "fp16", "int32") == MB2 + 8
    # values alone at 80%: 5x smaller than dense
    assert dense_bytes(shape, "fp16") / (nnz_at(shape, 0.8) * 2) == pytest.approx(5.0, rel=1e-5)


def test_formulas_by_hand():
    shape = (3, 8)
    assert dense_bytes(shape, "fp32") == 96
    assert bitmask_bytes(shape, 5, "fp32") == 3 + 20  # 24 bits -> 3 bytes, 5 values
    assert bitmask_bytes((3, 7), 5, "fp32") == 3 + 20  # 21 bits still take 3 bytes
    assert coo_bytes(shape, 5, "fp32", "int16") == 5 * (2 * 2 + 4)
    assert coo_bytes((2, 3, 4), 5, "fp16", "int32") == 5 * (3 * 4 + 2)  # one index per dimension
    assert csr_bytes(shape, 5, "fp32", "int16") == 5 * (2 + 4) + 4 * 2  # values + columns + (rows+1) pointers
    assert nm_bytes((4, 8), 2, 4, "fp16") == 16 * 2 + 32 // 8  # half the values + 1 bit per dense entry
    assert nm_bytes((4, 8), 4, 8, "fp16") == 16 * 2 + 4 * 4 * 3 // 8  # 3-bit positions for M = 8
    assert nm_bytes((2, 4), 1, 4, "fp32") == 2 * 4 + 1  # 2 groups x 1 index x 2 bits = 4 bits -> 1 byte


def test_format_bytes_dispatch_and_the_2_4_rule():
    shape = (64, 128)
    for s in (0.0, 0.3, 0.5, 0.9):
        nnz = nnz_at(shape, s)
        assert format_bytes("dense", shape, s, "fp16") == dense_bytes(shape, "fp16")
        assert format_bytes("bitmask", shape, s, "fp16") == bitmask_bytes(shape, nnz, "fp16")
        assert format_bytes("coo", shape, s, "fp16", "int16") == coo_bytes(shape, nnz, "fp16", "int16")
        assert format_bytes("csr", shape, s, "fp16", "int16") == csr_bytes(shape, nnz, "fp16", "int16")
    assert format_bytes("2:4", shape, 0.5, "fp16") == nm_bytes(shape, 2, 4, "fp16")
    assert format_bytes("2:4", shape, 0.75, "fp16") == nm_bytes(shape, 2, 4, "fp16")  # zeros are stored too
    assert format_bytes("2:4", shape, 0.5, "fp16") / dense_bytes(shape, "fp16") == 0.5625  # 9/16 of dense
    with pytest.raises(ValueError, match="sparsity"):
        format_bytes("2:4", shape, 0.4, "fp16")  # a 2:4 matrix has at least half zeros
    assert set(FORMATS) == {"dense", "bitmask", "coo", "csr", "2:4"}


@pytest.mark.parametrize("fmt", ["bitmask", "coo", "csr"])
@pytest.mark.parametrize("shape", [(1024, 1024), (576, 1536), (100, 7)])
@pytest.mark.parametrize("value, index", [("fp16", "int32"), ("fp32", "int16"), ("int8", "int64"), ("bf16", "int16")])
def test_break_even_is_where_the_bytes_cross(fmt, shape, value, index):
    s_star = break_even_sparsity(fmt, shape, value, index)
    nnz_star = break_even_nnz(fmt, shape, value, index)
    dense = dense_bytes(shape, value)
    fn = {"bitmask": lambda n: bitmask_bytes(shape, n, value), "coo": lambda n: coo_bytes(shape, n, value, index),
          "csr": lambda n: csr_bytes(shape, n, value, index)}[fmt]
    if nnz_star is None:
        assert math.isnan(s_star) and fn(0) >= dense
        return
    assert fn(nnz_star) < dense <= fn(nnz_star + 1)  # the largest count of non-zeros that is still smaller
    numel = shape[0] * shape[1]
    assert 1 - (nnz_star + 1) / numel <= s_star <= 1 - nnz_star / numel  # the continuous crossing lies between


def test_break_even_closed_forms():
    # COO: s* = k i / (k i + v) for k indices of i bytes; it does not depend on the shape
    assert break_even_sparsity("coo", (10, 10), "fp32", "int16") == pytest.approx(0.5)
    assert break_even_sparsity("coo", (7, 9), "int8", "int64") == pytest.approx(16 / 17)
    # bitmask: one bit per entry against v bytes: s* = 1 / (8 v)
    assert break_even_sparsity("bitmask", (1024, 1024), "fp16") == pytest.approx(1 / 16)
    assert break_even_sparsity("bitmask", (1024, 1024), "fp32") == pytest.approx(1 / 32)
    # CSR: like one index per non-zero, plus the row pointers
    r, c = 1024, 1024
    assert break_even_sparsity("csr", (r, c), "fp16", "int32") == pytest.approx(
        1 - (r * c * 2 - (r + 1) * 4) / (r * c * (4 + 2)))
    # 2:4 pays wherever it applies: it needs half zeros and then it is smaller than dense
    assert break_even_sparsity("2:4", (8, 8), "fp16") == 0.5
    # a format that can never beat dense: CSR of a single column with 8-byte pointers and 1-byte values
    assert math.isnan(break_even_sparsity("csr", (1000, 1), "int8", "int64"))
    assert break_even_nnz("csr", (1000, 1), "int8", "int64") is None
    with pytest.raises(ValueError, match="fmt"):
        break_even_sparsity("dense", (4, 4), "fp16")
    with pytest.raises(ValueError, match="fmt"):
        break_even_nnz("2:4", (4, 4), "fp16")


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        dense_bytes((0, 4), "fp16")
    with pytest.raises(ValueError, match="shape"):
        dense_bytes("4x4", "fp16")
    with pytest.raises(ValueError, match="nnz"):
        coo_bytes((4, 4), 17, "fp16", "int32")
    with pytest.raises(ValueError, match="nnz"):
        coo_bytes((4, 4), -1, "fp16", "int32")
    with pytest.raises(ValueError, match="shape"):
        csr_bytes((4, 4, 4), 3, "fp16", "int32")
    with pytest.raises(ValueError, match="fmt"):
        format_bytes("ell", (4, 4), 0.5, "fp16")
    with pytest.raises(ValueError, match="sparsity"):
        format_bytes("coo", (4, 4), 1.0, "fp16")
    with pytest.raises(ValueError, match="m"):
        nm_bytes((4, 6), 2, 4, "fp16")  # 4 does not divide 6


# --- real encodings: build the format, count its bytes --------------------------------------------------------


def _sparse(shape=(16, 32), sparsity=0.7, seed=0, dtype=torch.float32):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return w.masked_fill(~magnitude_mask(w, sparsity), 0.0)


@pytest.mark.parametrize("fmt", ["dense", "bitmask", "coo", "csr"])
@pytest.mark.parametrize("value_dtype, index_dtype", [(torch.float16, torch.int32), (torch.float32, torch.int16),
                                                      (torch.bfloat16, torch.int64)])
def test_encodings_round_trip_and_match_the_formulas(fmt, value_dtype, index_dtype):
    w = _sparse()
    enc = encode(w, fmt, value_dtype=value_dtype, index_dtype=index_dtype)
    assert torch.equal(enc.decode(), w.to(value_dtype))
    nnz = int((w != 0).sum())
    expected = {"dense": dense_bytes(w.shape, value_dtype), "bitmask": bitmask_bytes(w.shape, nnz, value_dtype),
                "coo": coo_bytes(w.shape, nnz, value_dtype, index_dtype),
                "csr": csr_bytes(w.shape, nnz, value_dtype, index_dtype)}[fmt]
    assert enc.nbytes == expected
    assert enc.nbytes == sum(t.numel() * t.element_size() for t in enc.parts.values())
    assert enc.format == fmt and enc.shape == tuple(w.shape)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_encodings_match_torchs_own_sparse_tensors():
    w = _sparse((24, 40), 0.6, dtype=torch.float16)
    nnz = int((w != 0).sum())
    coo = w.to_sparse_coo()
    torch_coo = coo.indices().numel() * coo.indices().element_size() + coo.values().numel() * 2
    assert torch_coo == coo_bytes(w.shape, nnz, torch.float16, torch.int64) == encode(
        w, "coo", index_dtype=torch.int64).nbytes
    csr = w.to_sparse_csr()
    torch_csr = sum(t.numel() * t.element_size() for t in (csr.crow_indices(), csr.col_indices(), csr.values()))
    assert torch_csr == csr_bytes(w.shape, nnz, torch.float16, torch.int64)
    enc = encode(w, "csr", index_dtype=torch.int64)
    assert torch.equal(enc.parts["crow_indices"], csr.crow_indices())
    assert torch.equal(enc.parts["col_indices"], csr.col_indices())


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (2, 8), (1, 2)])
def test_nm_encoding_round_trip_and_bytes(n, m):
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(n + m))
    w = w.masked_fill(~sparsity_mask(w, f"{n}:{m}"), 0.0)
    w[0, :m] = 0.0  # a group with fewer than N non-zeros is stored with explicit zeros
    enc = encode(w, f"{n}:{m}", value_dtype=torch.float16)
    assert torch.equal(enc.decode(), w.half())
    assert enc.nbytes == nm_bytes(w.shape, n, m, torch.float16)
    assert enc.parts["values"].shape == (6, 16 * n // m)
    assert enc.parts["metadata"].dtype == torch.uint8


def test_2_4_metadata_is_two_bits_per_kept_value():
    w = torch.tensor([[0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 4.0, 0.0]])
    enc = encode(w, "2:4")
    assert enc.parts["values"].tolist() == [[1.0, 2.0, 3.0, 4.0]]
    # positions 1, 3 | 0, 2 with 2 bits each, least significant bits first: 0b10_00_11_01 = 0x8D
    assert enc.parts["metadata"].tolist() == [0b10001101]


def test_encode_checks_its_arguments():
    w = _sparse((8, 8))
    with pytest.raises(ValueError, match="fmt"):
        encode(w, "ell")
    with pytest.raises(ValueError, match="index_dtype"):
        encode(torch.ones(300, 2), "coo", index_dtype=torch.int8)  # row 299 does not fit in int8
    with pytest.raises(ValueError, match="index_dtype"):
        encode(w, "coo", index_dtype=torch.float32)
    with pytest.raises(ValueError, match="index_dtype"):
        encode(torch.ones(200, 200), "csr", index_dtype=torch.int16)  # 40,000 non-zeros: pointers overflow int16
    with pytest.raises(ValueError, match="2:4"):
        encode(torch.ones(2, 8), "2:4")  # 4 non-zeros in a group of 4
    with pytest.raises(ValueError, match="weight"):
        encode(torch.ones(4), "csr")
    before = w.clone()
    encode(w, "csr")
    assert torch.equal(w, before)
