"""The committed results of the book's slow LLM studies, and paired comparisons of them (Chapters 4, 5, 7, 8).

``scripts/llm_studies.py`` prunes the embedded model many times with the book's protocol (``PROTOCOL``): several
calibration seeds per configuration, each scored window by window on the held-out text. It writes
``pruning_lab/data/llm_studies.json`` (shipped with the package, so a notebook reads it in Colab too). A run is
named by a key such as ``"wanda 2:4 seed 1"``; its ``window_nll`` is the mean NLL per predicted token of each
evaluation window (``[K]``). :meth:`Studies.compare` pairs two configurations seed by seed and window by window
and bootstraps the difference (:mod:`pruning_lab.paired`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pruning_lab import paired

__all__ = ["Studies", "load", "run_key", "DATA_FILE"]

DATA_FILE = "llm_studies.json"


def default_path() -> Path:
    """The studies file shipped in the package: ``pruning_lab/data/llm_studies.json``."""
    return Path(str(resources.files("pruning_lab") / "data" / DATA_FILE))


@dataclass(frozen=True)
class Studies:
    """The studies file: ``runs`` (key -> fields), the calibration ``seeds``, and its ``provenance``."""

    runs: dict
    seeds: tuple[int, ...]
    provenance: dict
    meta: dict

    def __contains__(self, key: str) -> bool:
        return key in self.runs

    def nll(self, key: str) -> list[float]:
        """Window NLLs ``[K]`` of one run (Chapter 5)."""
        if key not in self.runs:
            raise ValueError(f"`key` {key!r} is not a run of the studies file; e.g. {next(iter(self.runs))!r}")
        return self.runs[key]["window_nll"]

    def ppl(self, key: str) -> float:
        """Perplexity of one run: exp of its mean window NLL (Chapter 5)."""
        nll = self.nll(key)
        return math.exp(sum(nll) / len(nll))

    def seeds_of(self, *fmt_keys: str) -> list[int]:
        """The seeds ``s`` for which every ``fmt_key.format(seed=s)`` is a run."""
        return [s for s in self.seeds if all(k.format(seed=s) in self.runs for k in fmt_keys)]

    def over_seeds(self, fmt_key: str, seeds: list[int] | None = None) -> list[list[float]]:
        """``[S, K]`` window NLLs of the runs ``fmt_key.format(seed=s)``."""
        seeds = self.seeds_of(fmt_key) if seeds is None else seeds
        return [self.nll(fmt_key.format(seed=s)) for s in seeds]

    def seed_ppls(self, fmt_key: str) -> list[float]:
        """The perplexity of each seed's run of ``fmt_key`` (e.g. ``"wanda 2:4 seed {seed}"``)."""
        return [self.ppl(fmt_key.format(seed=s)) for s in self.seeds_of(fmt_key)]

    def compare(self, key_a: str, key_b: str, n_boot: int = 4000) -> dict:
        """Paired two-level bootstrap of ``NLL_b - NLL_a`` over the seeds both keys share, then the windows.

        A key without ``{seed}`` (a data-free method such as magnitude) is the same run for every seed. Returns
        :func:`paired.paired_bootstrap`'s fields plus ``verdict`` ("lower": a is better) and ``ratio`` (the
        perplexity ratio b / a with its interval) (Chapters 4, 5, 7, 8)."""
        if "{seed}" not in key_a and "{seed}" not in key_b:
            seeds = [self.seeds[0]]
        else:
            seeds = self.seeds_of(key_a, key_b)
        if not seeds:
            raise ValueError(f"no seed has both {key_a!r} and {key_b!r} in the studies file")
        d = paired.paired_differences(self.over_seeds(key_a, seeds), self.over_seeds(key_b, seeds))
        boot = paired.paired_bootstrap(d, n_boot=n_boot)
        return {**boot, "verdict": paired.verdict(boot), "ratio": paired.ppl_ratio(boot)}


def run_key(method: str, pattern: str = "unstructured") -> str:
    """The studies' name of a 50% run with the protocol's calibration size (Chapters 4, 7): ``"{seed}"`` stands
    for the calibration seed, except for magnitude, which uses no data (one run)."""
    from pruning_lab.llm.protocol import PROTOCOL

    if method == "magnitude":
        return "magnitude 50%" if pattern == "unstructured" else f"magnitude {pattern}"
    if pattern == "unstructured":
        return f"{method} 50% calib {PROTOCOL.calib_windows} seed {{seed}}"
    return f"{method} {pattern} seed {{seed}}"


def load(path: str | Path | None = None) -> Studies:
    """Read the studies file (default: the one shipped in the package) (Chapters 4, 5, 7, 8)."""
    path = default_path() if path is None else Path(path)
    data = json.loads(path.read_text())
    meta = {k: v for k, v in data.items() if k not in ("runs", "seeds", "provenance")}
    return Studies(runs=data["runs"], seeds=tuple(data["seeds"]), provenance=data["provenance"], meta=meta)
