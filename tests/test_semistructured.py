"""2:4 semi-structured sparsity on NVIDIA GPUs (Chapter 7): availability, validation, conversion, benchmark.

Everything here runs on the CPU: a GPU is simulated by patching ``torch.cuda`` and ``torch.backends.cusparselt``,
and PyTorch's converter is replaced by a stand-in wherever a test goes past the availability check. The real
GPU measurements live in ``benchmarks/gpu_check.py``.
"""
import re
import warnings

import pytest
import torch
from torch import nn

from pruning_lab import semistructured as sem
from pruning_lab.nm import nm_mask


def _w24(shape=(32, 64), dtype=torch.float16, seed=0):
    """A 2:4-pruned random weight (magnitude within each group of 4 inputs)."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return (w * nm_mask(w.abs(), 2, 4)).to(dtype)


def _linear24(d_out=32, d_in=64, dtype=torch.float16, bias=True, seed=0):
    lin = nn.Linear(d_in, d_out, bias=bias, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(_w24((d_out, d_in), dtype, seed))
    return lin


@pytest.fixture
def no_semistructured_calls(monkeypatch):
    """Fail the test if PyTorch's converter is reached."""

    def boom(*args, **kwargs):
        raise AssertionError("torch.sparse.to_sparse_semi_structured must not be called")

    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", boom)


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu((9, 0), cusparselt=True, version=602)``: pretend a CUDA GPU of that compute capability."""

    def install(cc, cusparselt=True, version=602):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: cc)
        monkeypatch.setattr(torch.backends.cusparselt, "is_available", lambda: cusparselt)
        monkeypatch.setattr(torch.backends.cusparselt, "version", lambda: version if cusparselt else None)

    return install


# --- availability on this (CPU) machine ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "cusparselt", "cutlass"])
def test_available_says_no_cuda_here(backend):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    ok, reason = sem.semistructured_available(backend)
    assert ok is False
    assert "no CUDA" in reason and "\n" not in reason
    with pytest.raises(RuntimeError, match="no CUDA"):
        sem.choose_backend(backend)


@pytest.mark.parametrize("fn", [sem.semistructured_available, sem.choose_backend])
def test_unknown_backend_is_a_value_error(fn):
    with pytest.raises(ValueError, match=r"`backend`.*'cusparselt'.*'cutlass'"):
        fn("cublas")


# --- availability on simulated GPUs -------------------------------------------------------------------------------

# (capability, cuSPARSELt available, cuSPARSELt version) -> what each backend request gives:
# a backend name (available; for "auto", the one chosen) or a piece of the reason it is not.
SIMULATED = [
    ((9, 0), True, 602, {"auto": "cusparselt", "cusparselt": "cusparselt", "cutlass": "8.x"}),
    ((9, 0), True, 502, {"auto": "0.6", "cusparselt": "0.6", "cutlass": "8.x"}),
    ((9, 0), False, None, {"auto": "cuSPARSELt", "cusparselt": "cuSPARSELt", "cutlass": "8.x"}),
    ((8, 0), True, 602, {"auto": "cusparselt", "cusparselt": "cusparselt", "cutlass": "cutlass"}),
    ((8, 0), True, 400, {"auto": "cusparselt", "cusparselt": "cusparselt", "cutlass": "cutlass"}),
    ((8, 0), False, None, {"auto": "cutlass", "cusparselt": "cuSPARSELt", "cutlass": "cutlass"}),
    ((8, 6), False, None, {"auto": "cutlass", "cusparselt": "cuSPARSELt", "cutlass": "cutlass"}),
    ((7, 5), True, 602, {"auto": "7.5", "cusparselt": "7.5", "cutlass": "7.5"}),
]


@pytest.mark.parametrize("cc, cslt, version, expected", SIMULATED)
def test_availability_and_choice_on_simulated_gpus(fake_gpu, cc, cslt, version, expected):
    fake_gpu(cc, cusparselt=cslt, version=version)
    for backend, want in expected.items():
        ok, reason = sem.semistructured_available(backend)
        if want in sem.BACKENDS:
            assert (ok, reason) == (True, ""), backend
            assert sem.choose_backend(backend) == want, backend
        else:
            assert ok is False, backend
            assert want in reason and "\n" not in reason, (backend, reason)
            with pytest.raises(RuntimeError, match="2:4") as err:
                sem.choose_backend(backend)
            assert reason in str(err.value)


def test_compute_capability_below_8_names_the_requirement(fake_gpu):
    fake_gpu((7, 5))
    ok, reason = sem.semistructured_available()
    assert not ok and "7.5" in reason and "8.0" in reason


def test_pytorch_without_cusparselt_module_falls_back_to_cutlass_on_ampere(fake_gpu, monkeypatch):
    fake_gpu((8, 0))
    # an older PyTorch has no torch.backends.cusparselt (deleting it here is not enough: torch.backends is a
    # wrapper module that finds it again)
    monkeypatch.setattr(torch.backends, "cusparselt", None)
    assert sem.choose_backend("auto") == "cutlass"
    ok, reason = sem.semistructured_available("cusparselt")
    assert not ok and "torch.backends.cusparselt" in reason
    assert sem.cusparselt_version() is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    assert not sem.semistructured_available("auto")[0]  # Hopper without cuSPARSELt: nothing left


def test_pytorch_without_the_converter(fake_gpu, monkeypatch):
    fake_gpu((8, 0))
    monkeypatch.delattr(torch.sparse, "to_sparse_semi_structured")
    ok, reason = sem.semistructured_available()
    assert not ok and "to_sparse_semi_structured" in reason and torch.__version__ in reason


def test_cusparselt_version_string(fake_gpu):
    fake_gpu((9, 0), version=602)
    assert sem.cusparselt_version() == "0.6.2"
    fake_gpu((9, 0), version=801)
    assert sem.cusparselt_version() == "0.8.1"
    fake_gpu((9, 0), cusparselt=False)
    assert sem.cusparselt_version() is None


# --- check_convertible: every branch on CPU tensors ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cusparselt", "cutlass"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_valid_weights_pass(backend, dtype):
    for shape in [(32, 64), (64, 128), (96, 192)]:
        sem.check_convertible(_w24(shape, dtype), backend, require_cuda=False)


def test_not_a_tensor_or_not_2d():
    with pytest.raises(ValueError, match="`weight` must be a torch.Tensor"):
        sem.check_convertible([[1.0, 0.0, 0.0, 1.0]], "cusparselt", require_cuda=False)
    for shape in [(64,), (2, 32, 64)]:
        with pytest.raises(ValueError, match=r"`weight` must be 2-D.*got shape"):
            sem.check_convertible(torch.zeros(shape, dtype=torch.float16), "cusparselt", require_cuda=False)


def test_an_already_converted_weight_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's "prototype" warning
        # built directly from (zero) packed values and metadata: the only way to get one on a CPU
        converted = torch.sparse.SparseSemiStructuredTensorCUTLASS(
            torch.Size([32, 64]), torch.zeros(32, 32, dtype=torch.float16), torch.zeros(32, 2, dtype=torch.int16),
            None, None, None)
    with pytest.raises(ValueError, match="already a SparseSemiStructuredTensor"):
        sem.check_convertible(converted, "cutlass", require_cuda=False)


def test_dtype_branches():
    w = _w24()
    with pytest.raises(ValueError, match=r"`weight`.*torch.float16 or torch.bfloat16.*got torch.float32.*1:2"):
        sem.check_convertible(w.float(), "cusparselt", require_cuda=False)
    with pytest.raises(ValueError, match=r"int8.*out of scope"):
        sem.check_convertible(w.to(torch.int8), "cutlass", require_cuda=False)
    with pytest.raises(ValueError, match=r"torch.float16 or torch.bfloat16.*got torch.float64"):
        sem.check_convertible(w.double(), "cutlass", require_cuda=False)


@pytest.mark.parametrize(
    "backend, shape, ok",
    [
        ("cutlass", (32, 64), True),
        ("cutlass", (16, 64), False),  # too few rows
        ("cutlass", (48, 64), False),  # rows not a multiple of 32
        ("cutlass", (32, 32), False),  # too few columns
        ("cutlass", (32, 96), False),  # columns not a multiple of 64
        ("cutlass", (576, 1536), True),
        ("cusparselt", (16, 16), True),
        ("cusparselt", (8, 16), False),
        ("cusparselt", (24, 16), False),  # rows not a multiple of 16
        ("cusparselt", (16, 8), False),
        ("cusparselt", (16, 40), False),  # columns not a multiple of 16
        ("cusparselt", (192, 576), True),
    ],
)
def test_shape_rule(backend, shape, ok):
    w = _w24(shape)
    if ok:
        sem.check_convertible(w, backend, require_cuda=False)
    else:
        rows, cols = sem.MIN_SHAPE[backend]
        pattern = rf"`weight`.*{backend}.*multiples? of \({rows}, {cols}\).*{re.escape(str(shape))}"
        with pytest.raises(ValueError, match=pattern):
            sem.check_convertible(w, backend, require_cuda=False)


def test_min_shapes_match_pytorch():
    """The table we document is the one PyTorch validates with (sparse_min_rows, sparse_min_cols)."""
    cls = {"cutlass": torch.sparse.SparseSemiStructuredTensorCUTLASS,
           "cusparselt": torch.sparse.SparseSemiStructuredTensorCUSPARSELT}
    for backend, (rows, cols) in sem.MIN_SHAPE.items():
        for dtype in sem.DTYPES:
            cfg = cls[backend]._DTYPE_SHAPE_CONSTRAINTS[dtype]
            assert (cfg.sparse_min_rows, cfg.sparse_min_cols) == (rows, cols)
            assert cfg.dense_min_rows == sem.DENSE_MULTIPLE


def test_not_contiguous():
    base = _w24((32, 128))
    w = base[:, :64]  # still 2:4 (groups start at column 0), but rows are 128 apart
    assert not w.is_contiguous()
    with pytest.raises(ValueError, match=r"`weight` must be contiguous.*\.contiguous\(\)"):
        sem.check_convertible(w, "cusparselt", require_cuda=False)
    sem.check_convertible(w.contiguous(), "cusparselt", require_cuda=False)


def test_not_2_to_4_dense_and_a_single_extra_nonzero():
    dense = torch.randn(32, 64).half()
    with pytest.raises(ValueError, match=r"`weight` is not 2:4.*512 of 512 groups.*silently"):
        sem.check_convertible(dense, "cutlass", require_cuda=False)
    w = _w24()
    group = w[5, 12:16]
    group[group == 0] = 1.0  # 4 non-zeros in one group of row 5 (nm_mask kept 2)
    with pytest.raises(ValueError, match=r"1 of 512 groups.*row 5, columns 12:16"):
        sem.check_convertible(w, "cusparselt", require_cuda=False)


def test_fewer_than_two_nonzeros_per_group_is_fine():
    w = _w24()
    w[:, ::4] = 0
    w[3] = 0
    sem.check_convertible(w, "cusparselt", require_cuda=False)


def test_cuda_is_checked_last():
    w = _w24()
    with pytest.raises(ValueError, match=r"`weight` must be on a CUDA device.*got cpu.*CPU cannot"):
        sem.check_convertible(w, "cusparselt")
    # every other problem is reported first, so it can be tested (and fixed) on the CPU
    with pytest.raises(ValueError, match="not 2:4"):
        sem.check_convertible(torch.randn(32, 64).half(), "cusparselt")


@pytest.mark.parametrize("backend", ["auto", "cuda", None])
def test_check_convertible_needs_a_concrete_backend(backend):
    with pytest.raises(ValueError, match=r"`backend` must be one of \['cusparselt', 'cutlass'\]"):
        sem.check_convertible(_w24(), backend, require_cuda=False)


# --- output comparison --------------------------------------------------------------------------------------------


def test_default_tolerances():
    assert sem.default_tolerance(torch.float16) == (1e-2, 1e-3)
    assert sem.default_tolerance(torch.bfloat16) == (5e-2, 1e-2)
    with pytest.raises(ValueError, match="`dtype`"):
        sem.default_tolerance(torch.float32)


def test_compare_outputs():
    ref = torch.linspace(-4, 4, 64).half()
    same = sem.compare_outputs(ref.clone(), ref)
    assert same["ok"] and same["max_abs_err"] == 0.0 and same["max_rel_err"] == 0.0
    near = sem.compare_outputs(ref + 0.02, ref)  # 0.02 <= 1e-3 + 1e-2 * 4
    assert near["ok"] and near["max_abs_err"] == pytest.approx(0.02, rel=0.15)
    assert near["max_rel_err"] == pytest.approx(0.02 / 4, rel=0.15)
    far = sem.compare_outputs(ref * 0.5, ref)
    assert not far["ok"] and far["max_abs_err"] == pytest.approx(2.0)
    nan = ref.clone()
    nan[3] = float("nan")
    assert not sem.compare_outputs(nan, ref)["ok"]
    assert sem.compare_outputs(ref + 0.02, ref, rtol=0.0, atol=1e-3)["ok"] is False
    with pytest.raises(ValueError, match="same shape"):
        sem.compare_outputs(ref[:3], ref)


# --- to_semistructured / convert_model / benchmark_linear on the CPU: clear errors first --------------------------


def test_to_semistructured_on_cpu_raises_before_pytorch(no_semistructured_calls):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    lin = _linear24()
    before = lin.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"cannot convert to 2:4.*no CUDA"):
        sem.to_semistructured(lin)
    assert torch.equal(lin.weight, before)


def test_to_semistructured_argument_errors():
    with pytest.raises(ValueError, match="`linear` must be a torch.nn.Linear"):
        sem.to_semistructured(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="`backend`"):
        sem.to_semistructured(_linear24(), backend="fast")


def test_convert_model_on_cpu_raises(no_semistructured_calls):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(RuntimeError, match="no CUDA"):
        sem.convert_model(nn.Sequential(_linear24()))


def test_benchmark_on_cpu_raises_before_pytorch(no_semistructured_calls):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(RuntimeError, match=r"cannot benchmark 2:4.*no CUDA"):
        sem.benchmark_linear(576, 1536, 64, torch.float16, "auto", min_run_time=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_out=0), "`d_out`"),
        (dict(d_in=1.5), "`d_in`"),
        (dict(tokens=True), "`tokens`"),
        (dict(dtype=torch.float32), "`dtype`"),
        (dict(backend="fast"), "`backend`"),
        (dict(min_run_time=0), "`min_run_time`"),
    ],
)
def test_benchmark_argument_errors_come_before_the_device(kwargs, match, no_semistructured_calls):
    args = dict(d_out=576, d_in=1536, tokens=64, dtype=torch.float16, backend="auto", min_run_time=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sem.benchmark_linear(**args)


# --- the conversion logic with a stand-in converter (a simulated GPU, CPU tensors) --------------------------------


@pytest.fixture
def fake_converter(monkeypatch, fake_gpu):
    """Simulated Ampere GPU whose "sparse" weight is ``transform(W)`` (a plain dense tensor); records the
    ``_FORCE_CUTLASS`` value each conversion saw. CUDA placement is not checked (the tensors are on the CPU)."""
    fake_gpu((8, 0), cusparselt=True)
    real_check = sem.check_convertible
    monkeypatch.setattr(sem, "check_convertible",
                        lambda w, backend, *, require_cuda=True: real_check(w, backend, require_cuda=False))
    seen = []

    def install(transform=lambda w: w.clone()):
        def convert(w):
            seen.append(torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS)
            return transform(w)

        monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", convert)
        return seen

    return install


@pytest.mark.parametrize("backend, forced", [("cutlass", True), ("cusparselt", False), ("auto", False)])
def test_to_semistructured_builds_a_new_layer_with_the_backend_forced(fake_converter, backend, forced):
    seen = fake_converter()
    flag_before = torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS
    lin = _linear24(bias=True)
    w_before, b_before = lin.weight.detach().clone(), lin.bias.detach().clone()
    new = sem.to_semistructured(lin, backend)
    assert seen == [forced]
    assert torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS == flag_before  # restored
    assert type(new) is nn.Linear and new is not lin
    assert new.weight is not lin.weight and new.bias is not lin.bias
    assert not new.weight.requires_grad and not new.bias.requires_grad
    assert (new.in_features, new.out_features) == (64, 32)
    assert torch.equal(lin.weight, w_before) and torch.equal(lin.bias, b_before)  # input untouched
    assert torch.equal(new.bias, b_before)
    x = torch.randn(3, 64).half()
    assert torch.equal(new(x), lin(x))


def test_to_semistructured_without_bias(fake_converter):
    fake_converter()
    new = sem.to_semistructured(_linear24(bias=False), "cutlass")
    assert new.bias is None


def test_to_semistructured_check_catches_wrong_outputs(fake_converter):
    fake_converter(lambda w: w * 0.5)  # a broken conversion
    lin = _linear24()
    with pytest.raises(RuntimeError, match=r"differs from the dense masked layer.*max abs error"):
        sem.to_semistructured(lin, "cusparselt")
    new = sem.to_semistructured(lin, "cusparselt", check=False)
    assert isinstance(new, nn.Linear)
    # a tolerance wide enough accepts it
    sem.to_semistructured(lin, "cusparselt", rtol=1.0, atol=1.0)


def test_to_semistructured_validates_before_converting(fake_converter):
    seen = fake_converter()
    lin = nn.Linear(64, 32).half()  # dense: not 2:4
    with pytest.raises(ValueError, match="not 2:4"):
        sem.to_semistructured(lin, "cutlass")
    lin = _linear24(d_out=16, d_in=16)  # fine for cuSPARSELt, too small for CUTLASS
    with pytest.raises(ValueError, match=r"cutlass.*\(32, 64\)"):
        sem.to_semistructured(lin, "cutlass")
    sem.to_semistructured(lin, "cusparselt")
    lin = _linear24()
    lin.bias = nn.Parameter(torch.zeros(32))  # float32 bias next to a float16 weight
    with pytest.raises(ValueError, match="`bias`.*float16"):
        sem.to_semistructured(lin, "cusparselt")
    assert seen == [False]


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = _linear24(64, 64, seed=1)
        self.down = _linear24(32, 64, seed=2)
        self.dense = nn.Linear(64, 32).half()  # not 2:4
        self.small = _linear24(16, 16, seed=3)  # under CUTLASS's 32 x 64
        self.norm = nn.LayerNorm(64)


def test_convert_model_report_and_input_untouched(fake_converter):
    seen = fake_converter()
    model = nn.ModuleDict({"a": _Block(), "b": _Block()})
    model["b"].up = model["a"].up  # one layer used twice: converted once, replaced in both places
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = sem.convert_model(model, "cutlass")
    assert report["backend"] == "cutlass"
    assert report["converted"] == ["a.up", "a.down", "b.down"]
    assert set(report["skipped"]) == {"a.dense", "a.small", "b.dense", "b.small"}
    assert "not 2:4" in report["skipped"]["a.dense"] and "(32, 64)" in report["skipped"]["b.small"]
    assert seen == [True, True, True]
    assert new is not model and new["a"].up is new["b"].up and new["a"].up is not model["a"].up
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = torch.randn(2, 64).half()
    assert torch.equal(new["b"].down(x), model["b"].down(x))


def test_convert_model_needs_a_module():
    with pytest.raises(ValueError, match="`model` must be a torch.nn.Module"):
        sem.convert_model("llama")


# --- forcing the backend ------------------------------------------------------------------------------------------


def test_forced_backend_sets_and_restores_the_flag():
    cls = torch.sparse.SparseSemiStructuredTensor
    before = cls._FORCE_CUTLASS
    with sem.forced_backend("cutlass"):
        assert cls._FORCE_CUTLASS is True
    with sem.forced_backend("cusparselt"):
        assert cls._FORCE_CUTLASS is False
    with pytest.raises(KeyError):
        with sem.forced_backend("cutlass"):
            raise KeyError("boom")
    assert cls._FORCE_CUTLASS == before
    with pytest.raises(ValueError, match="`backend`"):
        with sem.forced_backend("auto"):
            pass


def test_speedup_series_groups_by_shape_and_backend():
    from pruning_lab.semistructured import speedup_series

    rows = [dict(d_out=4096, d_in=4096, tokens=t, dtype="float16", backend="cusparselt", speedup=s)
            for t, s in [(64, 1.1), (1, 0.5)]]
    rows += [dict(d_out=4096, d_in=4096, tokens=8, dtype="bfloat16", backend="cusparselt", speedup=1.0),
             dict(d_out=576, d_in=1536, tokens=8, dtype="float16", backend="cutlass", error="boom")]
    assert speedup_series({"timings": rows}) == {("4096x4096", "cusparselt"): [(1, 0.5), (64, 1.1)]}
    with pytest.raises(ValueError, match="result"):
        speedup_series({"rows": []})
