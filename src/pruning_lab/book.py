"""Helpers for the executed notebooks of the book (all chapters).

:class:`Table`, :func:`png_bytes` and :func:`figure_slider` display tables and widgets that work both in a
live kernel and in the static HTML book (no kernel: a slider linked in the browser to a stack of images).

:func:`glue` stores a value computed by a cell so that the prose of the HTML book can quote it
(``{glue:text}`name```) instead of typing the number in. It uses ``myst_nb.glue`` when the book tools are
installed and degrades to a plain display (or nothing) elsewhere, e.g. in Colab.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue", "Table", "png_bytes", "figure_slider", "amdahl_explorer", "quiz"]


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


_EXPLORER_JS = r"""
(function () {
  const root = document.getElementById("%(id)s");
  const pts = %(points)s, W = 520, H = 300, L = 48, R = 12, T = 12, B = 36, YMAX = %(ymax)s;
  const $ = (k) => root.querySelector("[data-k='" + k + "']");
  const x = (f) => L + f * (W - L - R), y = (v) => H - B - (Math.min(v, YMAX) - 0) / YMAX * (H - T - B);
  const amdahl = (f, s) => 1 / ((1 - f) + f / s);
  const path = (g) => { let d = ""; for (let i = 0; i <= 200; i++) { const f = i / 200, v = g(f);
    if (!isFinite(v) || v > YMAX) break; d += (i ? "L" : "M") + x(f).toFixed(1) + "," + y(v).toFixed(1); } return d; };
  function draw() {
    const f = +$("f").value, s = +$("s").value, b = +$("b").value, vb = %(value_bits)s;
    const sbw = vb / (vb / 2 + b);
    $("fv").textContent = f.toFixed(2); $("sv").textContent = s.toFixed(2); $("bv").textContent = b.toFixed(2);
    let svg = "";
    for (let v = 0; v <= YMAX; v += 1) svg += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y(v) + '" y2="' +
      y(v) + '" stroke="#8884" /><text x="' + (L - 6) + '" y="' + (y(v) + 4) + '" text-anchor="end">' + v + 'x</text>';
    for (let i = 0; i <= 10; i += 2) svg += '<text x="' + x(i / 10) + '" y="' + (H - B + 16) +
      '" text-anchor="middle">' + (i / 10).toFixed(1) + '</text>';
    svg += '<text x="' + ((L + W - R) / 2) + '" y="' + (H - 4) + '" text-anchor="middle">f, share of time in the linears</text>';
    svg += '<path d="' + path((g) => 1 / (1 - g)) + '" fill="none" stroke="#999" stroke-dasharray="4 3" />';
    svg += '<path d="' + path((g) => amdahl(g, sbw)) + '" fill="none" stroke="#2ca02c" stroke-width="1.5" stroke-dasharray="7 3" />';
    svg += '<path d="' + path((g) => amdahl(g, s)) + '" fill="none" stroke="#1f77b4" stroke-width="2.5" />';
    svg += '<circle cx="' + x(f) + '" cy="' + y(amdahl(f, s)) + '" r="5" fill="#1f77b4" />';
    pts.forEach((p, i) => {
      svg += '<circle cx="' + x(p.f) + '" cy="' + y(p.measured) + '" r="4.5" fill="#d62728"><title>' + p.label +
        '</title></circle><circle cx="' + x(p.f) + '" cy="' + y(amdahl(p.f, p.s)) + '" r="4.5" fill="none" stroke="#d62728" />' +
        '<text x="' + (x(p.f) - 7) + '" y="' + (y(p.measured) + 4) + '" text-anchor="end" fill="#d62728">' + (i + 1) + '</text>';
    });
    $("plot").innerHTML = svg;
    const lim = f < 1 ? (1 / (1 - f)).toFixed(2) + "x" : "unbounded";
    $("out").textContent = "predicted speedup " + amdahl(f, s).toFixed(2) + "x (limit for s -> infinity: " + lim +
      "); memory-bound 2:4 with " + b.toFixed(2) + " bits of metadata per weight: s <= " + sbw.toFixed(2) +
      ", end to end <= " + amdahl(f, sbw).toFixed(2) + "x";
  }
  ["f", "s", "b"].forEach((k) => $(k).addEventListener("input", draw));
  draw();
})();
"""


def amdahl_explorer(points: list[dict], *, f: float = 0.75, s: float = 2.0, meta_bits: float = 1.0,
                    value_bits: int = 16, ymax: int = 5):
    """An interactive Amdahl plot that needs no kernel: plain HTML sliders for ``f``, ``s`` and the 2:4 metadata
    overhead (bits per weight) redraw an SVG in the browser (Chapter 8).

    Blue: the predicted speedup ``1 / ((1 - f) + f / s)`` against ``f`` for the chosen ``s``; grey dashes: the
    limit ``1 / (1 - f)``; green dashes: the memory-bound 2:4 curve, ``s = value_bits / (value_bits / 2 +
    meta_bits)``. ``points``: measured results ``{"label", "f", "s", "measured"}``, drawn filled (measured) and
    hollow (Amdahl's prediction from that point's ``f`` and ``s``), numbered in the legend below. Returns an
    ``IPython.display.HTML`` object.
    """
    import html
    import json
    import uuid

    from IPython.display import HTML

    for p in points:
        if set(p) < {"label", "f", "s", "measured"}:
            raise ValueError(f"`points`: each needs the keys label, f, s, measured; got {sorted(p)}")
    uid = f"amdahl-{uuid.uuid4().hex[:8]}"
    clean = [{"label": html.escape(str(p["label"])), "f": float(p["f"]), "s": float(p["s"]),
              "measured": float(p["measured"])} for p in points]  # labels as HTML text, for the SVG and the legend
    js = _EXPLORER_JS % {"id": uid, "points": json.dumps(clean), "ymax": int(ymax), "value_bits": int(value_bits)}

    def slider(key, label, lo, hi, step, value):
        return (f'<label style="display:inline-block;margin-right:1.2em">{label} '
                f'<input type="range" data-k="{key}" min="{lo}" max="{hi}" step="{step}" value="{value}" '
                f'style="vertical-align:middle;width:130px"> <span data-k="{key}v"></span></label>')

    legend = "".join(f"<li>{p['label']}: f = {p['f']:.2f}, s = {p['s']:.2f}, measured "
                     f"{p['measured']:.2f}x, predicted {1 / ((1 - p['f']) + p['f'] / p['s']):.2f}x</li>"
                     for p in clean)
    body = (f'<div id="{uid}" class="amdahl-explorer" style="font-size:13px">'
            + slider("f", "f", 0, 0.99, 0.01, f) + slider("s", "s", 0.5, 8, 0.05, s)
            + slider("b", "metadata bits/weight", 0, 4, 0.25, meta_bits)
            + f'<svg data-k="plot" width="520" height="300" style="display:block;font:11px sans-serif;'
            f'fill:currentColor"></svg><div data-k="out" style="margin:.3em 0"></div>'
            f'<div style="color:#888">blue: Amdahl for the chosen s (dot: the chosen f); grey dashes: the limit '
            f'1/(1-f); green dashes: memory-bound 2:4 with the metadata; red: measured (filled) and predicted '
            f'from that point\'s f and s (hollow)</div>'
            f'<ol style="margin:0;padding-left:1.5em">{legend}</ol></div><script>{js}</script>')
    return HTML(body)


_QUIZ_JS = r"""
(function () {
  const root = document.getElementById("%(id)s");
  root.querySelectorAll("[data-q]").forEach((q) => {
    const fb = q.querySelector(".quiz-feedback");
    const show = (ok, text) => {
      fb.textContent = (ok ? "Right. " : "Not quite. ") + text;
      fb.style.color = ok ? "#2e7d32" : "#c62828";
      q.setAttribute("data-answered", ok ? "right" : "wrong");
    };
    q.querySelectorAll("input[type=radio]").forEach((r) => r.addEventListener("change", () =>
      show(r.dataset.ok === "1", r.dataset.why)));
    const num = q.querySelector("input[type=number]");
    if (num) q.querySelector("button").addEventListener("click", () => {
      const v = parseFloat(num.value), want = parseFloat(num.dataset.answer), tol = parseFloat(num.dataset.tol);
      if (isNaN(v)) { fb.textContent = "Type a number first."; fb.style.color = ""; return; }
      const ok = Math.abs(v - want) <= tol;
      show(ok, ok ? num.dataset.why : (v > want ? "Too high. " : "Too low. ") + num.dataset.hint);
    });
  });
})();
"""


def quiz(questions: list[dict], title: str = "Check your understanding"):
    """A self-grading quiz that needs no kernel: plain HTML inputs and a small script (Chapters 1-8).

    Each question is ``{"q": text, "options": [(text, correct, why), ...]}`` (multiple choice: ``why`` explains
    the option, and for a wrong one names the misconception it stands for) or ``{"q": text, "answer": number,
    "tol": absolute tolerance, "why": explanation, "hint": what to reconsider}`` (numeric). Choosing an option or
    checking a number shows the feedback at once. Returns an ``IPython.display.HTML`` object.
    """
    import html
    import uuid

    from IPython.display import HTML

    if not questions:
        raise ValueError("`questions` must hold at least one question")
    uid = f"quiz-{uuid.uuid4().hex[:8]}"
    parts = [f'<div id="{uid}" class="pl-quiz" style="border:1px solid #8886;border-radius:6px;padding:.6em 1em">',
             f"<b>{html.escape(title)}</b>"]
    for i, q in enumerate(questions):
        if "q" not in q or ("options" in q) == ("answer" in q):
            raise ValueError(f"`questions[{i}]` needs 'q' and exactly one of 'options' and 'answer'")
        parts.append(f'<div data-q="{i}" style="margin:.7em 0"><div>{i + 1}. {html.escape(q["q"])}</div>')
        if "options" in q:
            opts = q["options"]
            if sum(bool(ok) for _, ok, _ in opts) != 1:
                raise ValueError(f"`questions[{i}]`: exactly one option must be correct")
            for j, (text, ok, why) in enumerate(opts):
                parts.append(f'<label style="display:block;margin-left:1em"><input type="radio" name="{uid}-{i}" '
                             f'data-ok="{int(bool(ok))}" data-why="{html.escape(why, quote=True)}"> '
                             f"{html.escape(text)}</label>")
        else:
            for key in ("tol", "why", "hint"):
                if key not in q:
                    raise ValueError(f"`questions[{i}]`: a numeric question needs '{key}'")
            parts.append(f'<div style="margin-left:1em"><input type="number" step="any" style="width:8em" '
                         f'data-answer="{float(q["answer"])!r}" data-tol="{float(q["tol"])!r}" '
                         f'data-why="{html.escape(q["why"], quote=True)}" '
                         f'data-hint="{html.escape(q["hint"], quote=True)}"> <button type="button">Check</button>'
                         "</div>")
        parts.append('<div class="quiz-feedback" style="margin-left:1em;min-height:1.2em"></div></div>')
    parts.append(f"</div><script>{_QUIZ_JS % {'id': uid}}</script>")
    return HTML("".join(parts))
