"""Helpers for the executed notebooks of the book (all chapters).

:class:`Table`, :func:`png_bytes` and :func:`figure_slider` display tables and widgets that work both in a
live kernel and in the static HTML book (no kernel: a slider linked in the browser to a stack of images).

:func:`glue` stores a value computed by a cell so that the prose of the HTML book can quote it
(``{glue:text}`name```) instead of typing the number in. It uses ``myst_nb.glue`` when the book tools are
installed and degrades to a plain display (or nothing) elsewhere, e.g. in Colab.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue", "Table", "png_bytes", "figure_slider"]


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


class Table:
    """A small table that displays well everywhere (Chapter 2 onwards): HTML in Jupyter and in the built
    book, Markdown where that is preferred, aligned plain text in a terminal.

    ``header`` is a list of column titles, ``rows`` a list of rows of already formatted cells (anything
    with a ``str``).
    """

    def __init__(self, header: list[str], rows: list[list[object]]) -> None:
        if not header or any(len(r) != len(header) for r in rows):
            raise ValueError(f"every row of `rows` must have len(header) = {len(header)} cells")
        self.header = [str(h) for h in header]
        self.rows = [[str(c) for c in r] for r in rows]

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        # "table table-sm": the book theme's (Bootstrap) table style; Jupyter applies its own
        return (f'<table class="table table-sm" style="width: auto"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def _repr_markdown_(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows])

    def __repr__(self) -> str:
        widths = [max(len(x) for x in col) for col in zip(self.header, *self.rows)]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([fmt(self.header), fmt(["-" * w for w in widths])] + [fmt(r) for r in self.rows])


def png_bytes(fig, dpi: int = 80, colors: int | None = 96) -> bytes:
    """PNG bytes of a Matplotlib figure, which is then closed (for :func:`figure_slider`).

    ``colors`` (default 96) reduces the image to a palette of that many colours, which makes line and
    scatter plots about three times smaller with no visible loss; ``None`` keeps full colour.
    """
    import io

    import matplotlib.pyplot as plt

    if colors is not None and not 2 <= colors <= 256:
        raise ValueError(f"`colors` must be None or an integer in [2, 256]; got {colors!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    if colors is None:
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    small = Image.open(buf).convert("RGB").quantize(colors=colors)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def figure_slider(frames: list[bytes], labels: list[str], description: str, title: str = "", value: int = 0):
    """A widget that works in the static HTML book, without a kernel (Chapter 2 onwards).

    ``frames`` are PNG images (see :func:`png_bytes`), shown one at a time in an ``ipywidgets.Stack``
    whose ``selected_index`` is linked in the browser (``jslink``) to a ``SelectionSlider`` over ``labels``.
    Returns a ``VBox`` (title, slider, image) to display.
    """
    import ipywidgets as widgets

    if not frames or len(frames) != len(labels):
        raise ValueError(f"`labels` must have one entry per frame ({len(frames)}); got {len(labels)}")
    if not 0 <= value < len(frames):
        raise ValueError(f"`value` must be an index in [0, {len(frames)}); got {value}")
    images = [widgets.Image(value=f, format="png") for f in frames]
    # ipywidgets >= 8 has Stack; older installs (some hosted notebooks) fall back to a Tab, which links the same way
    stack = getattr(widgets, "Stack", widgets.Tab)(children=images)
    stack.selected_index = value
    slider = widgets.SelectionSlider(
        options=[(str(lab), i) for i, lab in enumerate(labels)], value=value, description=description,
        continuous_update=True, style={"description_width": "initial"},
        layout=widgets.Layout(width="520px"),
    )
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    parts = ([widgets.HTML(f"<b>{title}</b>")] if title else []) + [slider, stack]
    return widgets.VBox(parts)
