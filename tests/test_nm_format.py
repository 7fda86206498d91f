"""The teaching 2:4 compressed format of Chapter 7 (kept values + 2-bit positions) and what N:M costs in bits:
exact round trips, byte counts, argument checks, and the metadata arithmetic against hand-computed values."""
import math

import pytest
import torch

from pruning_lab.nm import (
    Packed24,
    bits_per_weight,
    compressed_bits,
    compression_ratio,
    index_bits,
    metadata_bits,
    min_metadata_bits,
    pack_24,
    pack_group_24,
    unpack_24,
)
from pruning_lab.storage import encode, nm_bytes

_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}


def _bits(t):
    """The raw bits of a float tensor (so -0.0 and 0.0 differ)."""
    return t.contiguous().view(_INT_VIEW[t.dtype])


def _random_24(d_out, d_in, g, dtype=torch.float32, max_nnz=2):
    """A random ``[d_out, d_in]`` matrix with 0..max_nnz non-zeros per group of 4, at random positions."""
    w = torch.randn(d_out, d_in, generator=g).to(dtype)
    w = torch.where(w == 0, torch.ones_like(w), w)  # no accidental zeros among the kept values
    order = torch.argsort(torch.rand(d_out, d_in // 4, 4, generator=g), dim=-1)
    count = torch.randint(0, max_nnz + 1, (d_out, d_in // 4, 1), generator=g)
    keep = torch.zeros(d_out, d_in // 4, 4, dtype=torch.bool).scatter_(-1, order, (torch.arange(4) < count))
    return torch.where(keep.reshape(d_out, d_in), w, torch.zeros_like(w))


# --- the layout on a hand-worked row ---------------------------------------------------------------------------


def test_one_row_by_hand():
    w = torch.tensor([[0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 4.0, 0.0]])
    p = pack_24(w)
    assert isinstance(p, Packed24) and p.shape == (1, 8)
    assert p.values.tolist() == [[1.0, 2.0, 3.0, 4.0]]  # the kept values of each group, in order
    # group 0: positions 1, 3 -> 1 | 3 << 2 = 0b1101; group 1: positions 0, 2 -> 0b1000; group 0 in the low nibble
    assert p.meta.dtype == torch.uint8 and p.meta.tolist() == [[0b1000_1101]]
    assert p.meta.tolist() == [encode(w, "2:4").parts["metadata"].tolist()]  # Chapter 1's generic N:M encoding
    assert torch.equal(unpack_24(p), w)


def test_group_codes_of_the_six_patterns_are_the_cutlass_ones():
    """First position in the low 2 bits: (0,1) -> 0x4, (0,2) -> 0x8, (0,3) -> 0xC, (1,2) -> 0x9, (1,3) -> 0xD,
    (2,3) -> 0xE, the codes listed in PyTorch's CUTLASS conversion."""
    expected = {(0, 1): 0x4, (0, 2): 0x8, (0, 3): 0xC, (1, 2): 0x9, (1, 3): 0xD, (2, 3): 0xE}
    for (i, j), code in expected.items():
        group = [0.0] * 4
        group[i], group[j] = -1.5, 2.5
        assert pack_group_24(group) == code
        assert pack_group_24(torch.tensor(group, dtype=torch.float16)) == code


def test_groups_with_fewer_than_two_non_zeros_fill_the_lowest_free_positions():
    assert pack_group_24([0, 0, 0, 0]) == 0 | 1 << 2  # positions 0, 1
    assert pack_group_24([7, 0, 0, 0]) == 0 | 1 << 2
    assert pack_group_24([0, 7, 0, 0]) == 0 | 1 << 2
    assert pack_group_24([0, 0, 7, 0]) == 0 | 2 << 2  # the non-zero at 2, the lowest free position 0
    assert pack_group_24([0, 0, 0, 7]) == 0 | 3 << 2
    w = torch.tensor([[0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    p = pack_24(w)
    assert p.values.tolist() == [[0.0, 5.0, 0.0, 0.0]]  # explicit zeros fill the slots
    assert p.meta.tolist() == [[(0 | 2 << 2) | (0 | 1 << 2) << 4]]
    assert torch.equal(unpack_24(p), w)


# --- exact round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_round_trip_is_bit_exact(dtype):
    g = torch.Generator().manual_seed(0)
    w = _random_24(6, 32, g, dtype)
    w[0, :4] = 0.0  # a group with no non-zero
    w[1, 4:8] = torch.tensor([0.0, 0.0, -3.0, 0.0], dtype=dtype)  # a group with one
    p = pack_24(w)
    assert p.values.dtype == dtype and p.values.shape == (6, 16) and p.meta.shape == (6, 4)
    out = unpack_24(p)
    assert out.dtype == dtype and out.shape == w.shape
    assert torch.equal(_bits(out), _bits(w))


def test_round_trip_property_on_200_random_matrices():
    g = torch.Generator().manual_seed(7)
    dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    for trial in range(200):
        d_out = int(torch.randint(1, 10, (1,), generator=g))
        d_in = 4 * int(torch.randint(1, 17, (1,), generator=g))  # odd group counts too (d_in % 8 == 4)
        dtype = dtypes[trial % 4]
        w = _random_24(d_out, d_in, g, dtype)
        before = w.clone()
        p = pack_24(w)
        assert torch.equal(_bits(w), _bits(before)), "pack_24 modified its input"
        assert p.values.shape == (d_out, d_in // 2) and p.values.dtype == dtype
        assert p.meta.shape == (d_out, (d_in + 4) // 8) and p.meta.dtype == torch.uint8
        assert torch.equal(_bits(unpack_24(p)), _bits(w)), f"trial {trial}: {d_out}x{d_in} {dtype}"
        # the stored non-zeros are the matrix's non-zeros in row-major order
        assert torch.equal(p.values[p.values != 0], w[w != 0])
        # every group's code is pack_group_24 of that group
        codes = torch.stack([p.meta & 0xF, p.meta >> 4], dim=-1).reshape(d_out, -1)[:, : d_in // 4]
        r, c = int(torch.randint(0, d_out, (1,), generator=g)), int(torch.randint(0, d_in // 4, (1,), generator=g))
        assert int(codes[r, c]) == pack_group_24(w[r, 4 * c: 4 * c + 4].double())


def test_signed_zeros():
    w = torch.tensor([[-0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -0.0, -1.0]])
    p = pack_24(w)  # group 0 stores positions 0, 1 (holding -0.0); group 1 stores 1, 3: the -0.0 at 2 is not stored
    assert torch.signbit(p.values[0, 0])
    out = unpack_24(p)
    assert torch.signbit(out[0, 0])  # a stored -0.0 survives
    assert torch.equal(out, w) and not torch.signbit(out[0, 6])  # equal in value; an unstored zero comes back +0.0


def test_a_masked_weight_round_trips_in_value():
    """w * mask leaves -0.0 at the pruned negative weights; the format cannot keep their sign, only their value."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 16, generator=g, dtype=torch.float16)
    mask = torch.zeros(8, 4, 4, dtype=torch.bool).scatter_(-1, torch.topk(w.abs().reshape(8, 4, 4), 2).indices, True)
    sparse = w * mask.reshape(8, 16)
    out = unpack_24(pack_24(sparse))
    assert torch.equal(out, sparse) and out.dtype == sparse.dtype


def test_matches_cutlass_layout_before_the_tile_reordering():
    """For groups with exactly 2 non-zeros, the values and the 4-bit codes (read as little-endian 16-bit words of
    four groups) are those of PyTorch's CUTLASS conversion, before it reorders the words into tiles."""
    conv = pytest.importorskip("torch.sparse._semi_structured_conversions")
    if not hasattr(conv, "sparse_semi_structured_from_dense_cutlass") or not hasattr(
            conv, "_calculate_meta_reordering_scatter_offsets"):
        pytest.skip("this PyTorch has no CUTLASS conversion helpers")
    g = torch.Generator().manual_seed(5)
    w = torch.randn(32, 64, generator=g).half()
    w = torch.where(w == 0, torch.ones_like(w), w)
    order = torch.argsort(torch.rand(32, 16, 4, generator=g), dim=-1)[..., :2]
    w = w * torch.zeros(32, 16, 4, dtype=torch.bool).scatter_(-1, order, True).reshape(32, 64)
    sparse, meta_reordered = conv.sparse_semi_structured_from_dense_cutlass(w)
    offsets = conv._calculate_meta_reordering_scatter_offsets(32, 4, torch.int16, w.device)
    meta = meta_reordered.reshape(-1)[offsets].reshape(32, 4)  # undo the scatter
    p = pack_24(w)
    assert torch.equal(p.values, sparse)
    assert torch.equal(p.meta.view(torch.int16), meta)


# --- bytes -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_metadata_is_one_bit_per_dense_entry(dtype):
    w = _random_24(16, 64, torch.Generator().manual_seed(1), dtype)
    p = pack_24(w)
    assert p.meta.numel() * 8 == w.numel()  # 1 bit per dense entry
    assert p.values.numel() * 2 == w.numel()
    assert p.nbytes == nm_bytes(w.shape, 2, 4, dtype)  # Chapter 1's formula
    if dtype != torch.float32:
        assert p.nbytes / (w.numel() * w.element_size()) == 0.5625 == compression_ratio(2, 4, 16)


def test_odd_group_count_pads_each_row_with_one_nibble():
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 0.0, 5.0, 0.0, 6.0]] * 2)  # 3 groups per row
    p = pack_24(w)
    assert p.meta.shape == (2, 2)  # ceil(3 / 2) bytes per row: rows never share a byte
    assert p.meta.tolist() == [[0x4 | 0xE << 4, 0xD]] * 2  # the last byte's high nibble is the padding 0
    assert torch.equal(unpack_24(p), w)


# --- arguments -------------------------------------------------------------------------------------------------


def test_pack_24_rejects_bad_inputs():
    with pytest.raises(ValueError, match="`weight` must be 2-D"):
        pack_24(torch.zeros(8))
    with pytest.raises(ValueError, match="`weight` must be 2-D"):
        pack_24(torch.zeros(2, 2, 8))
    with pytest.raises(ValueError, match="`weight` must have d_in divisible by 4"):
        pack_24(torch.zeros(2, 6))
    w = torch.zeros(3, 12)
    w[2, 4:7] = 1.0  # three non-zeros in row 2, group 1
    w[2, 8:12] = 1.0  # and four in group 2: the first offending group is named
    with pytest.raises(ValueError, match=r"`weight` is not 2:4: row 2, group 1 \(columns 4..7\) has 3 non-zeros"):
        pack_24(w)
    nan = torch.zeros(2, 8)
    nan[1, 3] = float("nan")
    with pytest.raises(ValueError, match="`weight` contains NaN"):
        pack_24(nan)
    with pytest.raises(ValueError, match="`weight`"):
        pack_24(torch.full((1, 4), float("inf")).masked_fill(torch.tensor([[False, True, True, True]]), 0.0))
    with pytest.raises(ValueError, match="`weight`"):
        pack_24("not a matrix")


def test_pack_group_and_unpack_reject_bad_inputs():
    with pytest.raises(ValueError, match="`group` must hold exactly 4"):
        pack_group_24([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="`group` must have at most 2 non-zeros"):
        pack_group_24([1.0, 2.0, 3.0, 0.0])
    with pytest.raises(ValueError, match="`group` contains NaN"):
        pack_group_24([float("nan"), 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="`packed` must be a Packed24"):
        unpack_24(torch.zeros(2, 8))
    p = pack_24(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="`packed.values`"):
        unpack_24(Packed24(p.values[:, :2], p.meta, p.shape))
    with pytest.raises(ValueError, match="`packed.meta`"):
        unpack_24(Packed24(p.values, p.meta.to(torch.int16), p.shape))
    with pytest.raises(ValueError, match="`packed.meta` is corrupt"):
        unpack_24(Packed24(p.values, torch.full_like(p.meta, 0x11), p.shape))  # positions (1, 0): not increasing


def test_inputs_are_never_modified_or_shared():
    w = _random_24(4, 16, torch.Generator().manual_seed(2), torch.float16)
    before = w.clone()
    p = pack_24(w)
    assert torch.equal(_bits(w), _bits(before))
    assert p.values.data_ptr() != w.data_ptr()
    values, meta = p.values.clone(), p.meta.clone()
    out = unpack_24(p)
    assert torch.equal(p.values, values) and torch.equal(p.meta, meta)
    out.fill_(9.0)  # the dense result is a new tensor
    assert torch.equal(p.values, values)
    group = torch.tensor([0.0, 3.0, 0.0, -1.0])
    pack_group_24(group)
    assert group.tolist() == [0.0, 3.0, 0.0, -1.0]
    assert pack_group_24([0, 3, 0, -1]) == 0xD  # lists and integer tensors work too
    assert pack_group_24(torch.tensor([0, 3, 0, -1])) == 0xD


# --- bits ------------------------------------------------------------------------------------------------------

# (n, m): index bits, metadata bits per group, per dense weight, C(m, n), fp16 total bits per weight, fp16 ratio
HAND = {
    (1, 2): (1, 1, 0.5, 2, 8 + 0.5, 8.5 / 16),
    (2, 4): (2, 4, 1.0, 6, 8 + 1.0, 9 / 16),
    (4, 8): (3, 12, 1.5, 70, 8 + 1.5, 9.5 / 16),
    (8, 16): (4, 32, 2.0, 12870, 8 + 2.0, 10 / 16),
}


@pytest.mark.parametrize("n, m", list(HAND))
def test_bits_against_hand_computed_values(n, m):
    b, per_group, per_weight, patterns, total, ratio = HAND[(n, m)]
    assert index_bits(m) == b
    assert metadata_bits(n, m, per="kept") == b
    assert metadata_bits(n, m, per="group") == per_group
    assert metadata_bits(n, m) == metadata_bits(n, m, per="weight") == per_weight
    assert math.isclose(min_metadata_bits(n, m, per="group"), math.log2(patterns))
    assert math.isclose(min_metadata_bits(n, m), math.log2(patterns) / m)
    assert math.isclose(min_metadata_bits(n, m, per="kept"), math.log2(patterns) / n)
    assert min_metadata_bits(n, m) <= metadata_bits(n, m)
    assert compressed_bits(n, m) == total and compression_ratio(n, m) == ratio
    d = bits_per_weight(n, m)
    assert d["dense"] == 16 and d["values"] == 8 and d["metadata"] == per_weight and d["total"] == total
    assert d["ratio"] == ratio and d["metadata_share"] == per_weight / 16
    assert math.isclose(d["min_total"], 8 + math.log2(patterns) / m)


def test_2_4_numbers_of_the_chapter():
    assert metadata_bits(2, 4) == 1.0  # 1 bit per dense weight
    assert bits_per_weight(2, 4)["metadata_share"] == 0.0625  # 6.25% of dense fp16
    assert compression_ratio(2, 4) == 0.5625  # (8 + 1) / 16
    assert round(min_metadata_bits(2, 4, per="group"), 3) == 2.585  # log2 6
    assert round(min_metadata_bits(2, 4), 3) == 0.646
    assert compression_ratio(2, 4, value_bits=8) == (4 + 1) / 8  # int8 / fp8: metadata is 12.5% of dense
    assert compressed_bits(1, 2, value_bits=32) == 16.5  # fp32 is 1:2 on the hardware


def test_erratum_7_two_bits_per_group_is_wrong():
    """The source's "2 bits per group" / "0.5 bits per weight" counts one index per group; each kept value has one."""
    assert metadata_bits(2, 4) != 0.5
    assert metadata_bits(2, 4, per="group") != 2
    assert compression_ratio(2, 4) != (8 + 0.5) / 16


def test_bits_functions_check_their_arguments():
    for bad in [(3, 2), (0, 4), (2, 0), (2.0, 4), (True, 4)]:
        with pytest.raises(ValueError, match="`n`"):
            metadata_bits(*bad)
        with pytest.raises(ValueError, match="`n`"):
            min_metadata_bits(*bad)
    with pytest.raises(ValueError, match="`per` must be one of"):
        metadata_bits(2, 4, per="byte")
    with pytest.raises(ValueError, match="`per` must be one of"):
        min_metadata_bits(2, 4, per="bit")
    for bad in (0, -16, 2.5, True, "fp16"):
        with pytest.raises(ValueError, match="`value_bits`"):
            compression_ratio(2, 4, value_bits=bad)
        with pytest.raises(ValueError, match="`value_bits`"):
            bits_per_weight(2, 4, value_bits=bad)
    assert index_bits(1) == 0 and index_bits(5) == 3  # M = 1: nothing to choose; 5 positions need 3 bits
