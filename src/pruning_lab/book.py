"""Helpers for the executed notebooks of the book (all chapters).

:func:`glue` stores a value computed by a cell so that the prose of the HTML book can quote it
(``{glue:text}`name```) instead of typing the number in. It uses ``myst_nb.glue`` when the book tools are
installed and degrades to a plain display (or nothing) elsewhere, e.g. in Colab.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Record ``value`` under ``name`` for the book's prose; returns ``value`` (Chapter 1 onwards)."""
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"`name` must be a non-empty identifier of letters, digits, '_' or '-'; got {name!r}")
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or a laptop without the book tools: nothing to record
        if display:
            from IPython.display import display as _display

            _display(value)
        return value
    _glue(name, value, display=display)
    return value
