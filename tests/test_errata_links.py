"""The errata appendix (book/errata.md): every link lands on a heading of the chapter it names, with that
section's number and title, and every citation key exists. Slugs are computed as myst-parser computes them for
``myst_heading_anchors: 3`` (its own parser and ``compute_unique_slug``)."""

import glob
import re
from pathlib import Path
import nbformat
from markdown_it.tree import SyntaxTreeNode
from markdown_it.renderer import RendererHTML
from myst_parser.config.main import MdParserConfig
from myst_parser.parsers.mdit import create_md_parser
from myst_parser.mdit_to_docutils.base import compute_unique_slug

ROOT = Path(__file__).resolve().parents[1]
cfg = MdParserConfig(enable_extensions={"dollarmath", "amsmath", "colon_fence", "deflist"}, heading_anchors=3)
md = create_md_parser(cfg, RendererHTML)


def headings(path):
    """[(level, plain text, slug, enclosing section number)] for the headings of level <= 3."""
    nb = nbformat.read(path, 4)
    slugs, out, section = {}, [], None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        tree = SyntaxTreeNode(md.parse(cell.source))
        for node in tree.walk():
            if node.type != "heading":
                continue
            level = int(node.tag[1])
            if level > 3:
                continue
            slug = compute_unique_slug(node, slugs)
            slugs[slug] = True
            text = "".join(
                t.content for t in node.children[0].children if t.type in ("text", "code_inline", "math_inline")
            )
            raw = node.children[0].content  # the heading's source text
            m = re.match(r"(\d+\.\d+) ", raw)
            if level <= 2:
                section = m.group(1) if m else None
            out.append((level, raw, slug, section))
    return out


def test_errata_links_and_citations_resolve():
    table = {}
    for nbpath in sorted(glob.glob(str(ROOT / "chapters" / "0[1-8]*.ipynb"))):
        table[Path(nbpath).name] = headings(nbpath)

    text = (ROOT / "book" / "errata.md").read_text()
    links = re.findall(r"\[([^\]]+)\]\(([^)\s]+)\)", text)
    bad, ok = [], 0
    for label, target in links:
        if target.startswith(("http://", "https://")):
            continue
        m = re.fullmatch(r"\.\./chapters/([^#]+\.ipynb)#([^#]+)", target)
        if not m:
            bad.append(f"not a chapter link with an anchor: {target}")
            continue
        fname, anchor = m.groups()
        if fname not in table:
            bad.append(f"no such notebook: {fname}")
            continue
        hits = [h for h in table[fname] if h[2] == anchor]
        if not hits:
            bad.append(f"no heading with slug #{anchor} in {fname}")
            continue
        level, raw, slug, section = hits[0]
        # the label must be "Section N.M, <heading text without its number>"
        # (or "Chapter N, <heading text>" for an unnumbered section such as "Check your understanding")
        lm = re.fullmatch(r"(?:Section (\d+\.\d+)|Chapter (\d+)), (.+)", label, re.S)
        title = re.sub(r"^\d+\.\d+ ", "", raw)
        if not lm:
            bad.append(f"label not 'Section N.M, title': {label!r}")
            continue
        chapter = str(int(fname[:2]))
        if lm.group(1) and lm.group(1) != section:
            bad.append(f"label says Section {lm.group(1)} but #{anchor} is in Section {section}")
            continue
        if lm.group(2) and (section is not None or lm.group(2) != chapter):
            bad.append(f"label says Chapter {lm.group(2)} for #{anchor} (section {section}) of {fname}")
            continue
        if lm.group(1) and not lm.group(1).startswith(chapter + "."):
            bad.append(f"Section {lm.group(1)} is not in {fname}")
            continue
        if " ".join(lm.group(3).split()) != title:
            bad.append(f"label title {lm.group(3)!r} != heading {title!r}")
            continue
        ok += 1

    # citations
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))
    cites = [k.strip() for grp in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text) for k in grp.split(",")]
    for k in cites:
        if k not in keys:
            bad.append(f"unknown citation key {k}")

    assert ok >= 40, f"only {ok} chapter links"
    assert not bad, "\n".join(bad)
