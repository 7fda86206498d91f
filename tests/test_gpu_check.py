"""benchmarks/gpu_check.py (Chapter 7's GPU measurements): its CPU path, and its GPU path simulated on the CPU.

The real numbers need a GPU; here we check that the dry run and the automatic CPU skip write one well-formed JSON
file, and that the measuring code runs end to end on a simulated GPU (tiny shapes, a stand-in converter).
"""
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from pruning_lab import semistructured as sem

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ENV_KEYS = {"date", "python", "platform", "torch", "cuda", "pruning_lab", "transformers", "cuda_available", "device",
            "compute_capability", "gpu_memory_gib", "cusparselt_available", "cusparselt_version",
            "cusparselt_version_int", "force_cutlass_default", "backends", "backend_chosen"}


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_json(folder: Path) -> dict:
    files = list(folder.glob("*.json"))
    assert len(files) == 1, files
    assert files[0].name.startswith("gpu_check_")
    return json.loads(files[0].read_text())


def _check_skipped(result: dict, reason: str) -> None:
    assert result["schema"] == 1 and result["script"] == "benchmarks/gpu_check.py"
    assert result["skipped"] is True and reason in result["skip_reason"]
    assert result["correctness"] == {"layers": [], "not_2_4": []} and result["timings"] == []
    assert result["end_to_end"] == {"skipped": result["skip_reason"]}
    env = result["environment"]
    assert set(env) == ENV_KEYS
    assert env["torch"] == torch.__version__ and env["date"].endswith("+00:00")
    assert set(env["backends"]) == {"auto", "cusparselt", "cutlass"}
    for entry in env["backends"].values():
        assert set(entry) == {"available", "reason"}


def test_dry_run_subprocess_writes_the_environment(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "res")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    result = _one_json(tmp_path / "res")
    _check_skipped(result, "--dry-run")
    assert "skipped: --dry-run" in proc.stdout and "wrote " in proc.stdout
    if not torch.cuda.is_available():
        env = result["environment"]
        assert env["device"] is None and env["compute_capability"] is None and env["backend_chosen"] is None
        assert all(not e["available"] and "no CUDA" in e["reason"] for e in env["backends"].values())


def test_cpu_skips_automatically(gpu_check, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    result = _one_json(tmp_path)
    _check_skipped(result, "no CUDA")
    assert "skipped: no CUDA" in capsys.readouterr().out


def test_the_sweep_is_the_chapters(gpu_check):
    assert gpu_check.SHAPES == [(576, 1536), (1536, 576), (4096, 4096), (11008, 4096), (4096, 11008), (10240, 3072)]
    assert gpu_check.TOKENS == [1, 16, 64, 256, 1024, 3072, 8192]
    cfg = gpu_check.SMOLLM2_135M
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (576, 1536, 30)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (9, 3, 49152)
    assert (gpu_check.E2E_BATCH, gpu_check.E2E_SEQ) == (8, 512)
    # every SmolLM2 decoder linear fits both backends' shape rules
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    h, i, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * hd
    for rows, cols in [(h, h), (kv, h), (i, h), (h, i)] + gpu_check.SHAPES:
        for backend in sem.BACKENDS:
            min_rows, min_cols = sem.MIN_SHAPE[backend]
            assert rows % min_rows == 0 and cols % min_cols == 0, (rows, cols, backend)
    sem.check_convertible(torch.zeros(kv, h, dtype=torch.float16), "cutlass", require_cuda=False)  # the smallest


def test_json_is_finite(gpu_check):
    assert gpu_check._finite({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {"a": [1.0, None],
                                                                                         "b": None, "c": "x"}


def test_gpu_path_simulated_on_cpu(gpu_check, monkeypatch, tmp_path):
    """Fake an Ampere GPU with cuSPARSELt, tiny shapes, a converter that returns a dense copy and a stand-in
    benchmark: checks the script's flow and the JSON it writes, not the numbers."""
    pytest.importorskip("transformers")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Simulated A100")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: types.SimpleNamespace(total_memory=2**36))
    monkeypatch.setattr(torch.backends.cusparselt, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cusparselt, "version", lambda: 602)
    real_check = sem.check_convertible
    monkeypatch.setattr(sem, "check_convertible",
                        lambda w, b, *, require_cuda=True: real_check(w, b, require_cuda=False))
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", lambda w: w.clone())
    calls = []

    def fake_benchmark(d_out, d_in, tokens, dtype, backend, *, min_run_time):
        calls.append((d_out, d_in, tokens, dtype, backend))
        return {"d_out": d_out, "d_in": d_in, "tokens": tokens, "dtype": str(dtype)[6:], "backend": backend,
                "dense_ms": 2.0, "sparse_ms": 1.0, "speedup": 2.0, "max_abs_err": 0.0, "max_rel_err": 0.0}

    monkeypatch.setattr(sem, "benchmark_linear", fake_benchmark)
    for name, value in dict(DEVICE="cpu", SHAPES=[(32, 64)], TOKENS=[1, 16], BF16_SHAPE=(64, 64),
                            CHECK_TOKENS=[1, 17], E2E_BATCH=2, E2E_SEQ=8,
                            SMOLLM2_135M=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=1, vocab_size=128,
                                              max_position_embeddings=64, tie_word_embeddings=True),
                            LLAMA_1B=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                          max_position_embeddings=64, tie_word_embeddings=True),
                            AMDAHL_PREFILL=[8], AMDAHL_DECODE=(4, 2), AMDAHL_REPEATS=3).items():
        monkeypatch.setattr(gpu_check, name, value)

    assert gpu_check.main(["--out", str(tmp_path), "--min-run-time", "0.01"]) == 0
    result = _one_json(tmp_path)
    assert result["skipped"] is False and result["skip_reason"] is None
    env = result["environment"]
    assert (env["device"], env["compute_capability"], env["cusparselt_version"]) == ("Simulated A100", "8.0", "0.6.2")
    assert env["backend_chosen"] == "cusparselt" and result["backends_measured"] == ["cusparselt", "cutlass"]
    layers = result["correctness"]["layers"]
    assert [(r["backend"], r["d_out"], r["dtype"]) for r in layers] == [
        ("cusparselt", 32, "float16"), ("cusparselt", 64, "bfloat16"), ("cutlass", 32, "float16"),
        ("cutlass", 64, "bfloat16")]
    assert all(r["ok"] and [t["tokens"] for t in r["by_tokens"]] == [1, 17] for r in layers), layers
    for entry in result["correctness"]["not_2_4"]:
        assert "not 2:4" in entry["check_convertible"] and entry["pytorch_raised"] is False
    assert len(calls) == len(result["timings"]) == 2 * (2 + 2) and not result["timings_truncated"]
    assert {c[3] for c in calls} == {torch.float16, torch.bfloat16}
    e2e = result["end_to_end"]
    assert "error" not in e2e, e2e
    assert e2e["pruned"] == e2e["converted"] == 2 * 7 and list(e2e["skipped"]) == ["lm_head"]
    assert e2e["ok"] and e2e["top1_agreement"] == 1.0 and e2e["dense_ms"] > 0 and e2e["speedup"] > 0
    assert result["unavailable_backends"] == []  # both backends were available
    amdahl = result["amdahl"]
    assert [r["model"] for r in amdahl] == ["smollm2-135m", "llama-1b"]
    for row in amdahl:
        assert "error" not in row, row
        assert [(w["workload"], w["tokens"]) for w in row["workloads"]] == [("prefill", 8), ("decode", 4)]
        for w in row["workloads"]:
            assert w["dense_ms"] > 0 and w["sparse_ms"] > 0 and w["f_noop"] <= 1
            assert isinstance(w["f_profiler"], float) and 0 < w["f_profiler"] < 1
            assert w["measured"]["low"] <= w["measured"]["median"] <= w["measured"]["high"]
            assert w["predicted"] > 0


def test_budget_truncates_the_timings(gpu_check, monkeypatch):
    monkeypatch.setattr(sem, "benchmark_linear", lambda *a, **k: pytest.fail("no timing after the deadline"))
    rows, truncated = gpu_check.timings(["cusparselt"], 0.1, deadline=0.0)
    assert rows == [] and truncated


def test_probe_records_pytorchs_error_for_an_unavailable_backend(gpu_check, monkeypatch):
    """Simulated Hopper: CUTLASS is unavailable, forcing it makes PyTorch raise; the message is recorded."""

    def convert(w):
        if torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS:
            raise RuntimeError("Supported only on GPUs with compute capability 8.x")
        return w.clone()

    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", convert)
    monkeypatch.setattr(gpu_check, "DEVICE", "cpu")
    env = {"backends": {"cusparselt": {"available": True, "reason": ""},
                        "cutlass": {"available": False, "reason": "8.x only"}}}
    assert gpu_check.probe_unavailable(env) == [
        {"backend": "cutlass", "reason": "8.x only", "pytorch_raised": True,
         "error": "RuntimeError: Supported only on GPUs with compute capability 8.x"}]
    env["backends"]["cusparselt"]["available"] = False  # a backend that runs although called unavailable
    rows = gpu_check.probe_unavailable(env)
    assert rows[0]["backend"] == "cusparselt" and rows[0]["pytorch_raised"] is False and rows[0]["ok"]
