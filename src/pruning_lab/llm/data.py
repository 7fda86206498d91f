"""Text for calibration and evaluation: an embedded corpus offline, C4 and WikiText-2 online (Chapters 1, 4, 5).

**Embedded corpus** (on every Python, no download). Three kinds of real text ship with CPython itself:

- prose: the reference documentation topics in ``pydoc_data.topics`` (what ``help('if')`` prints: English with
  grammar rules and code examples), one document per topic;
- code: the source of 12 docstring-rich pure-Python standard-library modules (``statistics.py``,
  ``functools.py``, ...), one document per file.

The reference topics repeat themselves (``if`` and ``else`` are the same text; ``compound`` contains the sections
of ``if``, ``while``, ``class``...), so paragraphs (blocks separated by blank lines) of at least
``MIN_DEDUP_CHARS`` characters are kept only at their first occurrence, visiting documents in sorted name order:
no such paragraph appears twice in the corpus, hence never in both splits.

The split mirrors the papers' protocol (calibrate on a broad mix like C4, evaluate on held-out prose like
WikiText-2). Documents are ordered by a hash of their name, ``sha256("kind:name")``; walking the *topics* in that
order, each goes to **evaluation** until the evaluation split holds ``EVAL_FRACTION`` (a quarter) of the prose
characters; every other topic and all the code go to **calibration**. Every document is in exactly one split; a
hash of the *name* keeps most documents in the same split across Python versions. Inside a split, documents keep
the hash order (calibration mixes prose and code) and are joined with blank lines. The texts differ slightly
between Python versions, so :func:`embedded_text` reports a sha256 checksum: compare checksums before comparing
perplexities.

**Held-out texts of three kinds** (:func:`held_out_corpus`, :func:`held_out_texts`; Chapter 1). A pruned model
can lose more on one kind of text than on another, so Chapter 1 measures perplexity on three different held-out
texts, none of which is ever used for calibration:

- ``"prose"``: the evaluation split above (English reference documentation);
- ``"code"``: the source of ``HELD_OUT_STDLIB_FILES``, pure-Python standard-library modules that are *not* among
  the calibration modules (``calendar.py``, ``pprint.py``, ...), joined in that order;
- ``"legal"``: the CPython licence, ``LICENSE.txt`` next to the standard library (if a distribution removed it:
  Debian's ``/usr/share/doc/python3.X/copyright``, then the Apache-2.0 text in ``/usr/share/common-licenses``).

Paragraphs of a held-out text that already occur in the calibration or evaluation split, or in an earlier
held-out text, are dropped by the same rule as above, so no paragraph is shared with calibration. Each text has
its own sha256.

**Online** (the papers' protocol): calibration = 128 random 2048-token windows of C4 (``allenai/c4``, first
training shard), one window per randomly drawn document long enough to hold it; evaluation = the WikiText-2 raw
test split joined with ``"\\n\\n"``, tokenized once. These need ``pip install datasets`` and internet; ``datasets``
is imported only when they are used.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "EmbeddedText",
    "embedded_text",
    "embedded_tokens",
    "sample_windows",
    "calibration_windows",
    "eval_tokens",
    "c4_calibration",
    "wikitext2_tokens",
    "STDLIB_FILES",
    "HELD_OUT_STDLIB_FILES",
    "HELD_OUT_KINDS",
    "HeldOutCorpus",
    "held_out_corpus",
    "held_out_texts",
    "FRESH_KINDS",
    "fresh_text",
    "fresh_tokens",
]

#: Standard-library files used as the code part of the corpus (pure Python on 3.9-3.13; missing ones are skipped).
STDLIB_FILES = (
    "bisect", "colorsys", "copy", "fractions", "functools", "graphlib", "heapq", "numbers", "shlex", "statistics",
    "string", "textwrap",
)
#: Standard-library files of the held-out *code* text: pure Python on 3.9-3.13, none of them in STDLIB_FILES.
HELD_OUT_STDLIB_FILES = ("calendar", "pprint", "queue", "sched", "reprlib", "fnmatch", "glob")
#: The kinds of held-out text, in the order :func:`held_out_texts` returns them.
HELD_OUT_KINDS = ("prose", "code", "legal")
EVAL_FRACTION = 0.25  # share of the prose (reference topics) held out for evaluation
MIN_DEDUP_CHARS = 40  # repeated paragraphs at least this long are kept once
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class EmbeddedText:
    """The embedded corpus, split: ``calibration`` and ``evaluation`` strings, their ``sha256`` (Chapter 1).

    ``documents`` maps ``"kind:name"`` to ``"calibration"`` or ``"evaluation"``; ``python_version`` says which
    CPython the text came from.
    """

    calibration: str
    evaluation: str
    sha256: str
    python_version: str
    documents: dict = field(repr=False)

    def summary(self) -> str:
        kinds: dict[tuple[str, str], int] = {}
        for key, split in self.documents.items():
            kind = key.split(":", 1)[0]
            kinds[(kind, split)] = kinds.get((kind, split), 0) + 1
        parts = ", ".join(f"{k} {s[:4]}: {n}" for (k, s), n in sorted(kinds.items()))
        return (
            f"embedded text (Python {self.python_version}): calibration {len(self.calibration):,} chars, "
            f"evaluation {len(self.evaluation):,} chars; documents {parts}; sha256 {self.sha256[:16]}"
        )


def _documents() -> dict[str, str]:
    """``{"kind:name": text}`` for every available document of the embedded corpus."""
    import pydoc_data.topics

    docs = {f"topic:{k}": v for k, v in sorted(pydoc_data.topics.topics.items())}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_FILES:
        for candidate in (stdlib / f"{name}.py", stdlib / name / "__init__.py"):
            if candidate.is_file():
                docs[f"code:{name}"] = candidate.read_text(encoding="utf-8")
                break
    return docs


def _deduplicate(docs: dict[str, str], seen: set[str] | None = None) -> dict[str, str]:
    """Drop every paragraph (>= MIN_DEDUP_CHARS) already seen in an earlier document (sorted names) or in
    ``seen`` (which is updated); drop documents left empty. Paragraphs are re-joined with one blank line."""
    seen = set() if seen is None else seen
    out = {}
    for key in sorted(docs):
        kept = []
        for para in _PARAGRAPH.split(docs[key].strip("\n")):
            if len(para.strip()) >= MIN_DEDUP_CHARS:
                if para.strip() in seen:
                    continue
                seen.add(para.strip())
            kept.append(para)
        body = "\n\n".join(kept).strip("\n")
        if body.strip():
            out[key] = body
    return out


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


_TEXT_CACHE: EmbeddedText | None = None


def embedded_text() -> EmbeddedText:
    """Build the embedded corpus and its calibration/evaluation split (see the module docstring) (Chapter 1).

    Deterministic: the same Python gives the same strings and checksum; ``sha256`` covers both splits
    (``sha256(calibration + "\\x00" + evaluation)``).
    """
    global _TEXT_CACHE
    if _TEXT_CACHE is None:
        import platform

        docs = _deduplicate(_documents())
        order = sorted(docs, key=lambda k: (_hash(k), k))
        prose = sum(len(docs[k]) for k in order if k.startswith("topic:"))
        split, held_out = {}, 0
        for k in order:
            if k.startswith("topic:") and held_out < EVAL_FRACTION * prose:
                split[k] = "evaluation"
                held_out += len(docs[k])
            else:
                split[k] = "calibration"
        calib = "\n\n".join(docs[k] for k in order if split[k] == "calibration")
        evaluation = "\n\n".join(docs[k] for k in order if split[k] == "evaluation")
        digest = hashlib.sha256((calib + "\x00" + evaluation).encode()).hexdigest()
        _TEXT_CACHE = EmbeddedText(calib, evaluation, digest, platform.python_version(), split)
    return _TEXT_CACHE


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{blob}".encode()).hexdigest()[:16]


def _encode(tokenizer: Any, text: str) -> Tensor:
    """All tokens of ``text`` as a 1-D LongTensor (the tokenizer's own special tokens included, as in the
    reference code's ``tokenizer(text, return_tensors='pt')``)."""
    ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids  # (1, N)
    return ids[0].to(torch.long)


def embedded_tokens(tokenizer: Any, *, cache: bool = True) -> tuple[Tensor, Tensor]:
    """``(calibration_tokens, evaluation_tokens)`` of the embedded corpus: two 1-D LongTensors (Chapter 1).

    Each split is tokenized as one string. With ``cache=True`` the tensors are stored in the Pruning Lab cache
    folder, keyed by the text checksum and a fingerprint of the tokenizer, so later calls skip tokenizing.
    """
    text = embedded_text()
    path = None
    if cache:
        from .models import cache_dir

        path = cache_dir() / f"tokens-{text.sha256[:16]}-{_tokenizer_fingerprint(tokenizer)}.pt"
        if path.is_file():
            try:
                saved = torch.load(path, weights_only=True)
                return saved["calibration"], saved["evaluation"]
            except Exception:  # a corrupt cache file is rebuilt
                pass
    calib, evaluation = _encode(tokenizer, text.calibration), _encode(tokenizer, text.evaluation)
    if path is not None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"calibration": calib, "evaluation": evaluation}, tmp)
        os.replace(tmp, path)
    return calib, evaluation


@dataclass(frozen=True)
class HeldOutCorpus:
    """Held-out texts of three kinds, never used for calibration (Chapter 1).

    ``texts`` maps ``"prose"``, ``"code"`` and ``"legal"`` to strings, ``sha256`` maps each kind to the sha256 of
    its text, ``documents`` maps each kind to the documents it is made of (``"kind:name"``), and
    ``python_version`` says which CPython the texts came from.
    """

    texts: dict
    sha256: dict
    python_version: str
    documents: dict = field(repr=False)

    @property
    def digest(self) -> str:
        """One sha256 over all the texts (in ``HELD_OUT_KINDS`` order)."""
        return hashlib.sha256("\x00".join(self.sha256[k] for k in self.texts).encode()).hexdigest()

    def summary(self) -> str:
        parts = ", ".join(f"{k} {len(t):,} chars (sha256 {self.sha256[k][:12]})" for k, t in self.texts.items())
        return f"held-out texts (Python {self.python_version}): {parts}"


def _legal_candidates() -> list[Path]:
    """Where to look for the legal text, in order: CPython's own licence, then Debian/Ubuntu copies."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [stdlib / "LICENSE.txt", Path(f"/usr/share/doc/python{version}/copyright"),
            Path("/usr/share/common-licenses/Apache-2.0")]


_HELD_OUT_CACHE: HeldOutCorpus | None = None


def held_out_corpus() -> HeldOutCorpus:
    """The held-out prose, code and legal texts (see the module docstring), as strings (Chapter 1).

    Deterministic: the same Python gives the same texts and checksums. No paragraph of at least
    ``MIN_DEDUP_CHARS`` characters is shared with the calibration split or between two of the texts. Raises
    ``FileNotFoundError`` if no legal text or none of the code modules can be found.
    """
    global _HELD_OUT_CACHE
    if _HELD_OUT_CACHE is None:
        import platform

        seen: set[str] = set()
        _deduplicate(_documents(), seen)  # every paragraph of the calibration and evaluation splits
        texts: dict[str, str] = {"prose": embedded_text().evaluation}
        documents: dict[str, list[str]] = {"prose": sorted(k for k, v in embedded_text().documents.items()
                                                           if v == "evaluation")}
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        code = {}
        for name in HELD_OUT_STDLIB_FILES:
            for candidate in (stdlib / f"{name}.py", stdlib / name / "__init__.py"):
                if candidate.is_file():
                    code[f"code:{name}"] = candidate.read_text(encoding="utf-8")
                    break
        code = _deduplicate(code, seen)
        if not code:
            raise FileNotFoundError(f"none of the held-out code modules {HELD_OUT_STDLIB_FILES} found in {stdlib}")
        order = [f"code:{n}" for n in HELD_OUT_STDLIB_FILES if f"code:{n}" in code]  # the listed order
        texts["code"] = "\n\n".join(code[k] for k in order)
        documents["code"] = order
        legal = next((p for p in _legal_candidates() if p.is_file()), None)
        if legal is None:
            raise FileNotFoundError(
                "no legal text found for the held-out 'legal' text; looked for "
                + ", ".join(str(p) for p in _legal_candidates())
            )
        key = f"legal:{legal}"
        legal_doc = _deduplicate({key: legal.read_text(encoding="utf-8", errors="replace")}, seen)
        texts["legal"] = legal_doc.get(key, "")
        documents["legal"] = [key]
        digests = {k: hashlib.sha256(t.encode()).hexdigest() for k, t in texts.items()}
        _HELD_OUT_CACHE = HeldOutCorpus(texts, digests, platform.python_version(), documents)
    return _HELD_OUT_CACHE


def held_out_texts(tokenizer: Any, *, cache: bool = True) -> dict[str, Tensor]:
    """``{"prose", "code", "legal"}`` -> 1-D LongTensor of token ids of each held-out text (Chapter 1).

    For :func:`~pruning_lab.llm.perplexity`, one text at a time. ``"prose"`` equals :func:`eval_tokens`. Each
    text is tokenized as one string; with ``cache=True`` the tensors are stored in the Pruning Lab cache folder,
    keyed by the texts' checksum and a fingerprint of the tokenizer.
    """
    corpus = held_out_corpus()
    path = None
    if cache:
        from .models import cache_dir

        path = cache_dir() / f"heldout-{corpus.digest[:16]}-{_tokenizer_fingerprint(tokenizer)}.pt"
        if path.is_file():
            try:
                saved = torch.load(path, weights_only=True)
                if list(saved) == list(corpus.texts):
                    return saved
            except Exception:  # a corrupt cache file is rebuilt
                pass
    tokens = {kind: _encode(tokenizer, text) for kind, text in corpus.texts.items()}
    if path is not None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(tokens, tmp)
        os.replace(tmp, path)
    return tokens


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    return value


def sample_windows(tokens: Tensor, nsamples: int, seqlen: int, *, seed: int = 0) -> Tensor:
    """``nsamples`` windows of ``seqlen`` consecutive tokens at seeded random offsets: ``[nsamples, seqlen]``
    (Chapter 4).

    Offsets are drawn uniformly from ``0 .. len(tokens) - seqlen`` with ``torch.Generator().manual_seed(seed)``,
    as the reference code draws random windows from C4; windows may overlap each other.
    """
    _check_positive_int(nsamples, "nsamples")
    _check_positive_int(seqlen, "seqlen")
    if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.is_floating_point():
        raise ValueError("`tokens` must be a 1-D integer tensor of token ids")
    if tokens.numel() < seqlen:
        raise ValueError(f"`seqlen` ({seqlen}) is longer than the text ({tokens.numel()} tokens)")
    g = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, tokens.numel() - seqlen + 1, (nsamples,), generator=g)  # (nsamples,)
    idx = starts[:, None] + torch.arange(seqlen)[None, :]  # (nsamples, seqlen)
    return tokens[idx].clone()


def calibration_windows(
    tokenizer: Any, nsamples: int = 128, seqlen: int = 2048, *, source: str = "embedded", seed: int = 0
) -> Tensor:
    """Calibration set for the layer-wise driver: a LongTensor ``[nsamples, seqlen]`` of token ids (Chapter 4).

    ``source="embedded"``: windows drawn (seeded) from the calibration split of the embedded corpus only, never
    from the evaluation split. ``source="c4"``: the reference protocol (:func:`c4_calibration`, needs internet).
    """
    if source == "embedded":
        calib, _ = embedded_tokens(tokenizer)
        return sample_windows(calib, nsamples, seqlen, seed=seed)
    if source == "c4":
        return c4_calibration(tokenizer, nsamples, seqlen, seed=seed)
    raise ValueError(f"`source` must be 'embedded' or 'c4'; got {source!r}")


def eval_tokens(tokenizer: Any, *, source: str = "embedded") -> Tensor:
    """Held-out evaluation text as one 1-D LongTensor of token ids, for :func:`~pruning_lab.llm.perplexity`
    (Chapter 1).

    ``source="embedded"``: the evaluation split of the embedded corpus (disjoint from calibration).
    ``source="wikitext2"``: the WikiText-2 raw test split joined with blank lines (needs internet).
    """
    if source == "embedded":
        return embedded_tokens(tokenizer)[1]
    if source == "wikitext2":
        return wikitext2_tokens(tokenizer)
    raise ValueError(f"`source` must be 'embedded' or 'wikitext2'; got {source!r}")


def _load_dataset(*args: Any, **kwargs: Any) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "C4 and WikiText-2 are loaded with the `datasets` package: pip install datasets "
            "(and internet access); offline, use source='embedded'"
        ) from exc
    return datasets.load_dataset(*args, **kwargs)


def c4_calibration(tokenizer: Any, nsamples: int = 128, seqlen: int = 2048, *, seed: int = 0) -> Tensor:
    """The papers' calibration set: ``nsamples`` random ``seqlen``-token windows of C4, ``[nsamples, seqlen]``
    (Chapter 4).

    As in the SparseGPT and Wanda reference code: seed Python's ``random``; for each sample draw documents of the
    first C4 training shard until one has more than ``seqlen`` tokens, then a random window inside it.
    """
    _check_positive_int(nsamples, "nsamples")
    _check_positive_int(seqlen, "seqlen")
    data = _load_dataset(
        "allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train"
    )
    rng = random.Random(seed)
    windows = []
    for _ in range(nsamples):
        while True:
            doc = data[rng.randint(0, len(data) - 1)]["text"]
            ids = _encode(tokenizer, doc)
            if ids.numel() > seqlen:
                break
        start = rng.randint(0, ids.numel() - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.stack(windows)  # (nsamples, seqlen)


def wikitext2_tokens(tokenizer: Any) -> Tensor:
    """WikiText-2 raw test split, ``"\\n\\n".join(texts)`` tokenized once: a 1-D LongTensor (Chapter 1).

    This is the evaluation text of the SparseGPT and Wanda papers (WikiText-2, not WikiText-103: mixing them up is
    a classic reason for perplexities that do not match a paper).
    """
    test = _load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    return _encode(tokenizer, "\n\n".join(test["text"]))


FRESH_KINDS = ("code", "prose")


def fresh_text() -> dict:
    """Text written for this book in 2026, after SmolLM2's release, so not in its pretraining data (Chapter 1).

    The snapshot ``pruning_lab/data/fresh_text.json`` (``scripts/fresh_text.py``): ``texts`` maps ``"code"``
    (modules of this package) and ``"prose"`` (the book's errata appendix as plain text) to strings, next to
    ``sources``, ``commit``, ``date`` and ``sha256``. The counterparts of the held-out ``code`` and ``prose``."""
    import json
    from importlib import resources

    return json.loads((resources.files("pruning_lab") / "data" / "fresh_text.json").read_text())


def fresh_tokens(tokenizer: Any) -> dict[str, Tensor]:
    """``{"code", "prose"}`` -> 1-D LongTensor of the token ids of :func:`fresh_text` (Chapter 1)."""
    texts = fresh_text()["texts"]
    return {kind: _encode(tokenizer, texts[kind]) for kind in FRESH_KINDS}
