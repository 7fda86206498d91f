"""The book's one protocol for language-model experiments: calibration and evaluation windows, seeds (Chapter 4).

Every LLM number in the book is measured with :data:`PROTOCOL` unless a section deliberately varies one of its
settings and says so (Chapter 1 scores three texts with fewer windows each; Chapter 5's studies vary the
calibration size and the context length). With the same protocol, the dense model has the same perplexity in
every chapter.

- **Calibration**: ``calib_windows`` windows of ``calib_seqlen`` tokens, drawn with a seed from the calibration
  split of the embedded corpus (:func:`~pruning_lab.llm.calibration_windows`); the paper protocol is 128 x 2048
  tokens of C4.
- **Evaluation**: the first ``eval_windows`` non-overlapping windows of ``eval_seqlen`` tokens of the held-out
  split (:func:`~pruning_lab.llm.eval_tokens`), scored by :func:`~pruning_lab.llm.perplexity`.
- **Seeds**: the calibration seeds over which a comparison's spread is measured.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

__all__ = ["Protocol", "PROTOCOL"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    return value


@dataclass(frozen=True)
class Protocol:
    """Calibration and evaluation settings of an LLM experiment (Chapter 4)."""

    calib_windows: int = 8  # calibration windows (nsamples)
    calib_seqlen: int = 256  # tokens per calibration window
    eval_windows: int = 4  # held-out windows scored
    eval_seqlen: int = 512  # tokens per held-out window (the context length)
    seeds: tuple[int, ...] = (0, 1, 2)  # calibration seeds for spreads

    def __post_init__(self) -> None:
        for name in ("calib_windows", "calib_seqlen", "eval_windows", "eval_seqlen"):
            _positive_int(getattr(self, name), name)
        if not isinstance(self.seeds, tuple) or not self.seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds):
            raise ValueError(f"`seeds` must be a non-empty tuple of integers >= 0; got {self.seeds!r}")

    @property
    def calib_tokens(self) -> int:
        """Calibration tokens: ``calib_windows * calib_seqlen``."""
        return self.calib_windows * self.calib_seqlen

    @property
    def eval_tokens(self) -> int:
        """Scored tokens: ``eval_windows * eval_seqlen`` (each window predicts ``eval_seqlen - 1`` of them)."""
        return self.eval_windows * self.eval_seqlen

    def with_(self, **changes: Any) -> "Protocol":
        """A copy with some settings changed (a study that varies one of them), validated."""
        unknown = set(changes) - {"calib_windows", "calib_seqlen", "eval_windows", "eval_seqlen", "seeds"}
        if unknown:
            raise ValueError(f"unknown protocol settings {sorted(unknown)}")
        return replace(self, **changes)

    def calibration(self, tokenizer: Any, seed: int = 0, *, source: str = "embedded") -> Tensor:
        """Calibration token ids ``[calib_windows, calib_seqlen]`` drawn with ``seed``."""
        from .data import calibration_windows

        return calibration_windows(tokenizer, self.calib_windows, self.calib_seqlen, source=source, seed=seed)

    def held_out(self, tokenizer: Any, *, source: str = "embedded") -> Tensor:
        """The held-out text as 1-D token ids (all of it; :meth:`perplexity` scores the first windows)."""
        from .data import eval_tokens

        return eval_tokens(tokenizer, source=source)

    def perplexity(self, model: nn.Module, held_out: Tensor) -> float:
        """Perplexity of ``model`` on the first ``eval_windows`` windows of ``eval_seqlen`` tokens."""
        from .evaluate import perplexity

        return perplexity(model, held_out, self.eval_seqlen, max_windows=self.eval_windows)

    def describe(self) -> str:
        """One line for a table caption, e.g. '8 x 256 calibration tokens, 4 x 512 held-out'."""
        return (f"{self.calib_windows} x {self.calib_seqlen} calibration tokens, "
                f"{self.eval_windows} x {self.eval_seqlen} held-out")


PROTOCOL = Protocol()
