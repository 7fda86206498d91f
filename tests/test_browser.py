"""Open the built chapter pages in headless Chromium and check they work offline.

Needs a built book (`make book`, i.e. `_build/html`) and Debian's `chromium`; it builds nothing itself.
For every page `_build/html/chapters/*.html` it checks that
  (a) MathJax typeset the mathematics (an `mjx-container` exists, no TeX error),
  (b) the embedded ipywidgets rendered (at least one), and, when the saved widget state links a slider
      to a Stack (`ipywidgets.jslink`), that moving the slider with the keyboard changes the Stack child shown,
  (c) nothing was requested from a host other than the local test server (such requests are blocked),
      and no local file was missing (HTTP 4xx/5xx),
  (d) a screenshot is saved to `_build/screenshots/<page>.png`.

Run: `python -m pytest tests/test_browser.py` (marker `browser`). Without a build or a Chromium it is skipped
with a warning, unless PRUNING_LAB_REQUIRE_BROWSER=1 (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = ROOT / "_build" / "html"
CHAPTERS_DIR = HTML_DIR / "chapters"
SCREENSHOT_DIR = ROOT / "_build" / "screenshots"
HOST = "127.0.0.1"

# Flags verified with Debian's chromium on this kind of machine (see shared tooling notes). Playwright
# gives every `launch()` a fresh temporary profile (the equivalent of a fresh --user-data-dir).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE_TIMEOUT_MS = 20_000

# Uncaught page errors that are known and harmless: Jupyter Book 1 includes sphinx-thebe's inline config
# script twice, so the second `const THEBE_JS_URL = ...` throws. Thebe (a live kernel) is not used.
HARMLESS_PAGE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

SLIDER_MODELS = {"IntSliderModel", "FloatSliderModel", "FloatLogSliderModel", "SelectionSliderModel"}
LINK_MODELS = {"LinkModel", "DirectionalLinkModel"}


def _loud_skip(reason: str) -> None:
    """Skip with a warning, or fail when PRUNING_LAB_REQUIRE_BROWSER=1 (CI: the test must run)."""
    if os.environ.get("PRUNING_LAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test cannot run and PRUNING_LAB_REQUIRE_BROWSER=1: {reason}")
    message = f"BROWSER TEST SKIPPED: {reason}"
    warnings.warn(message, UserWarning, stacklevel=2)
    pytest.skip(message)


def _find_chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return None


def _chapter_params():
    """One parameter per built chapter page, or a single sentinel saying why there are none."""
    if not (HTML_DIR / "index.html").exists():
        return [pytest.param("<no build>", id="no-build")]
    pages = sorted(CHAPTERS_DIR.glob("*.html")) if CHAPTERS_DIR.is_dir() else []
    if not pages:
        return [pytest.param("<no chapters>", id="no-chapters")]
    return [pytest.param(p.relative_to(HTML_DIR).as_posix(), id=p.stem) for p in pages]


# --------------------------------------------------------------------------------------------- fixtures


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="module")
def site_url():
    """Serve _build/html on 127.0.0.1 (random free port) in a background thread."""
    if not (HTML_DIR / "index.html").exists():
        _loud_skip(f"no built book at {HTML_DIR} (run `make book` first)")
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    chromium = _find_chromium()
    if chromium is None:
        _loud_skip("no Chromium found (`chromium` on PATH or /usr/bin/chromium); "
                   "Debian: apt-get install -y chromium. Never run `playwright install`.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _loud_skip("the `playwright` Python package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page_and_log(browser, site_url):
    """A fresh page whose requests to any host but the local server are aborted and recorded."""
    log = {"external": [], "failed": [], "errors": []}
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

    def route(route_obj):
        url = route_obj.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != HOST:
            log["external"].append(url)
            route_obj.abort()
        else:
            route_obj.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page.on("response", lambda r: r.status >= 400 and log["failed"].append(f"{r.status} {r.url}"))
    page.on("requestfailed", lambda r: urlsplit(r.url).hostname == HOST
            and log["failed"].append(f"{r.failure} {r.url}"))
    page.on("pageerror", lambda e: str(e) in HARMLESS_PAGE_ERRORS or log["errors"].append(str(e)))
    try:
        yield page, log
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------- helpers

# The HTML manager renders each embedded view into a `div.widget-subarea` inserted next to its script.
_WIDGET_VIEWS_RENDERED_JS = """() => {
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  if (views.length === 0) return false;
  const rendered = el => el && el.classList.contains('widget-subarea') && el.querySelector('.jupyter-widgets');
  return views.every(v => rendered(v.previousElementSibling) || rendered(v.nextElementSibling));
}"""

# A Stack (ipywidgets 8) renders only its selected child: switching the child creates a new view. Mark
# the views shown now; afterwards, count the views that are new (outside the sliders themselves).
_MARK_VIEWS_JS = """() => document.querySelectorAll('.jupyter-widgets').forEach(e => e.setAttribute('data-seen', ''))"""
_NEW_VIEWS_JS = """() => [...document.querySelectorAll('.jupyter-widgets:not([data-seen])')]
  .filter(e => !e.closest('.widget-slider')).length"""


def _saved_widget_state(page) -> dict:
    """Widget models saved in the page (the notebook's widget-state metadata)."""
    texts = page.eval_on_selector_all(
        'script[type="application/vnd.jupyter.widget-state+json"]', "els => els.map(e => e.textContent)")
    state: dict = {}
    for text in texts:
        state.update(json.loads(text).get("state", {}))
    return state


def _sliders_linked_to_stacks(state: dict) -> set[str]:
    """Model ids of sliders that a (js)link connects to a Stack's selected_index."""

    def model_name(ref):
        model = state.get(str(ref).removeprefix("IPY_MODEL_"), {})
        return model.get("model_name")

    linked = set()
    for model in state.values():
        if model.get("model_name") not in LINK_MODELS:
            continue
        ends = [model.get("state", {}).get(k) for k in ("source", "target")]
        if not all(isinstance(e, list) and len(e) == 2 for e in ends):
            continue
        names = [model_name(e[0]) for e in ends]
        for (ref, attr), name, (other_ref, other_attr), other in zip(ends, names, ends[::-1], names[::-1]):
            if name in SLIDER_MODELS and attr in ("value", "index") and other == "StackModel" \
                    and other_attr == "selected_index":
                linked.add(str(ref).removeprefix("IPY_MODEL_"))
    return linked


def _slider_moves_a_stack(page, handle) -> bool:
    """Press an arrow key on a slider handle; True if a Stack then shows another child."""
    page.evaluate(_MARK_VIEWS_JS)
    now = handle.get_attribute("aria-valuenow")
    top = handle.get_attribute("aria-valuemax")
    key = "ArrowLeft" if now is not None and top is not None and float(now) >= float(top) else "ArrowRight"
    handle.scroll_into_view_if_needed()
    handle.focus()
    handle.press(key)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if page.evaluate(_NEW_VIEWS_JS) > 0:
            return True
        page.wait_for_timeout(50)
    return False


def _notebook_has_widgets(rel_path: str) -> bool:
    """Whether the notebook behind a built page displays an ipywidget (a widget-view output)."""
    source = ROOT / Path(rel_path).with_suffix(".ipynb")
    return source.exists() and "application/vnd.jupyter.widget-view+json" in source.read_text()


def _report(log: dict) -> str:
    lines = []
    if log["external"]:
        lines.append("requests to non-local hosts (blocked):\n  " + "\n  ".join(sorted(set(log["external"]))))
    if log["failed"]:
        lines.append("failed local requests:\n  " + "\n  ".join(sorted(set(log["failed"]))))
    if log["errors"]:
        lines.append("uncaught page errors:\n  " + "\n  ".join(log["errors"]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ test


@pytest.mark.parametrize("rel_path", _chapter_params())
def test_chapter_page_renders_offline(rel_path, request):
    if rel_path == "<no build>":
        _loud_skip(f"no built book at {HTML_DIR} (run `make book` first)")
    if rel_path == "<no chapters>":
        pytest.fail(f"the book at {HTML_DIR} was built but has no chapter pages in {CHAPTERS_DIR}")

    site_url = request.getfixturevalue("site_url")
    page, log = request.getfixturevalue("page_and_log")
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{site_url}/{rel_path}", wait_until="load")
    problems: list[str] = []

    # (a) MathJax typeset the mathematics.
    try:
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
            " && document.querySelector('mjx-container')")
        page.evaluate("() => MathJax.startup.promise")
    except Exception as exc:  # noqa: BLE001 - reported below with the rest
        problems.append(f"(a) MathJax did not typeset the page: no mjx-container ({type(exc).__name__})")
    else:
        tex_errors = page.eval_on_selector_all("mjx-merror", "els => els.map(e => e.textContent)")
        if tex_errors:
            problems.append(f"(a) MathJax reported TeX errors: {tex_errors}")

    # (b) The widgets rendered from the saved state, and sliders linked to a Stack switch it (pages whose
    # notebook displays no widget have nothing to check here).
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if views == 0 and not _notebook_has_widgets(rel_path):
        pass
    elif views == 0:
        problems.append(
            "(b) the page embeds no widget view: execute the notebook so that its widget state is saved "
            "(`jupyter execute --inplace NOTEBOOK`, or `make execute`) and rebuild")
    else:
        try:
            page.wait_for_function(_WIDGET_VIEWS_RENDERED_JS)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"(b) {views} embedded widget view(s) did not all render ({type(exc).__name__}); "
                            "see the errors below")
        else:
            linked = _sliders_linked_to_stacks(_saved_widget_state(page))
            if linked:
                handles = page.locator(".widget-slider .noUi-handle")
                # sliders on a Tab page that is not selected are hidden: test the visible ones
                visible = [handles.nth(i) for i in range(handles.count()) if handles.nth(i).is_visible()]
                moved = sum(_slider_moves_a_stack(page, h) for h in visible)
                if moved < min(len(linked), len(visible)) or moved == 0:
                    problems.append(
                        f"(b) {len(linked)} slider(s) are linked to a Stack, but only {moved} of the "
                        f"{len(visible)} visible slider(s) on the page changed the Stack child shown")

    # (e) Code cells show the 85 characters the notebooks are formatted to (tests/test_book_structure.py).
    fits = page.evaluate("""() => { const pre = document.querySelector('div.cell div.highlight pre');
      if (!pre) return null;
      const probe = document.createElement('span'); probe.textContent = 'x'.repeat(100); pre.appendChild(probe);
      const char = probe.getBoundingClientRect().width / 100; probe.remove();
      const cs = getComputedStyle(pre);
      return (pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)) / char; }""")
    if fits is not None and fits < 85:
        problems.append(f"(e) code cells show only {fits:.0f} characters per line at 1280 pixels (85 needed)")

    # (d) Screenshot (also on failure: it helps to see what went wrong).
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT_DIR / f"{Path(rel_path).stem}.png"), full_page=True)

    # (c) Nothing came from another host, nothing local was missing, no uncaught script error.
    network = _report(log)
    if network:
        problems.append("(c) " + network)

    assert not problems, f"{rel_path}:\n" + "\n".join(problems)


def _open_page(request, rel_path: str):
    """``(page, log)`` with the built page ``rel_path`` loaded from the local server (skipped without a build)."""
    if not (HTML_DIR / rel_path.split("?")[0]).exists():
        _loud_skip(f"no built page {rel_path} (run `make book` first)")
    site_url = request.getfixturevalue("site_url")
    page, log = request.getfixturevalue("page_and_log")
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{site_url}/{rel_path}", wait_until="load")
    return page, log


def test_amdahl_explorer_redraws_without_a_kernel(request):
    """Chapter 8's explorer (plain HTML sliders + SVG, no widget state): moving its f and s sliders must redraw
    the curve and print Amdahl's speedup for the new values."""
    page, log = _open_page(request, "chapters/08_amdahl_speedup.html")
    root = page.locator(".amdahl-explorer").first
    out = root.locator("[data-k=out]")
    page.wait_for_function("() => document.querySelector('.amdahl-explorer [data-k=out]').textContent.length > 0")
    assert root.locator("[data-k=plot] path").count() >= 3  # the limit, the 2:4 curve and Amdahl's curve
    before = out.text_content()
    for f, s in [(0.5, 2.0), (0.9, 4.0)]:
        for key, value in (("f", f), ("s", s)):
            root.locator(f"input[data-k={key}]").evaluate(
                "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)
        text = out.text_content()
        assert f"predicted speedup {1 / ((1 - f) + f / s):.2f}x" in text, text
        assert f"limit for s -> infinity: {1 / (1 - f):.2f}x" in text, text
    assert out.text_content() != before
    assert not _report(log), _report(log)


def test_quiz_grades_itself_without_a_kernel(request):
    """Chapter 8's quiz: a wrong option, then the right one, and a wrong then a right number, each changing the
    feedback shown, in the static page."""
    page, log = _open_page(request, "chapters/08_amdahl_speedup.html")
    quiz = page.locator(".pl-quiz").first
    mc = quiz.locator("[data-q]").filter(has=page.locator("input[type=radio]")).first
    feedback = mc.locator(".quiz-feedback")
    mc.locator("input[data-ok='0']").first.check()
    assert mc.get_attribute("data-answered") == "wrong" and feedback.text_content().startswith("Not quite.")
    mc.locator("input[data-ok='1']").check()
    assert mc.get_attribute("data-answered") == "right" and feedback.text_content().startswith("Right.")
    num_q = quiz.locator("[data-q]").filter(has=page.locator("input[type=number]")).first
    box = num_q.locator("input[type=number]")
    answer = float(box.get_attribute("data-answer"))
    box.fill(str(answer + 10))
    num_q.locator("button").click()
    assert num_q.get_attribute("data-answered") == "wrong" and "Too high" in num_q.locator(".quiz-feedback").text_content()
    box.fill(str(answer))
    num_q.locator("button").click()
    assert num_q.get_attribute("data-answered") == "right"
    assert not _report(log), _report(log)


# ------------------------------------------------------------------ the reading experience (issue 15)
def _answer_first_question(page, quiz) -> None:
    """Choose a wrong option, then the right one, of the quiz's first multiple-choice question."""
    mc = quiz.locator("[data-q]").filter(has=page.locator("input[type=radio]")).first
    feedback = mc.locator(".quiz-feedback")
    mc.locator("input[data-ok='0']").first.check()
    wrong = feedback.text_content()
    assert mc.get_attribute("data-answered") == "wrong" and wrong.startswith("Not quite."), wrong
    mc.locator("input[data-ok='1']").check()
    right = feedback.text_content()
    assert mc.get_attribute("data-answered") == "right" and right.startswith("Right.") and right != wrong


@pytest.mark.parametrize("rel_path", _chapter_params())
def test_every_chapter_ends_with_a_quiz_that_grades_itself(rel_path, request):
    if rel_path.startswith("<"):
        _loud_skip(f"no built chapter pages in {CHAPTERS_DIR} (run `make book` first)")
    page, log = _open_page(request, rel_path)
    quizzes = page.locator(".pl-quiz")
    assert quizzes.count() >= 1, f"{rel_path}: no quiz ('Check your understanding')"
    n = quizzes.first.locator("[data-q]").count()
    assert 3 <= n <= 6, f"{rel_path}: the quiz has {n} questions (3-6 expected)"
    _answer_first_question(page, quizzes.first)
    assert not _report(log), _report(log)


def _ids_and_links(html: str) -> tuple[set[str], list[str]]:
    import re

    return set(re.findall(r'\bid="([^"]+)"', html)), re.findall(r'\bhref="([^"]+)"', html)


def test_every_exercise_links_to_its_solution_and_back_in_the_built_book():
    """Static check over the built HTML: each exercise's link lands on an existing anchor of its solution page,
    and each solution links back to an existing anchor of its exercise."""
    import re

    if not CHAPTERS_DIR.is_dir():
        _loud_skip(f"no built book at {HTML_DIR} (run `make book` first)")
    checked = 0
    for page in sorted(CHAPTERS_DIR.glob("*.html")):
        num = page.name[:2]
        solution = HTML_DIR / "solutions" / f"{page.stem}_solutions.html"
        ids, links = _ids_and_links(page.read_text())
        sol_ids, sol_links = _ids_and_links(solution.read_text())
        exercises = sorted(i for i in ids if re.fullmatch(rf"ch{num}-ex\d+", i))
        assert exercises, f"{page.name}: no exercise anchors (ch{num}-exN)"
        for ex in exercises:
            target = f"../solutions/{solution.name}#{ex}-solution"
            assert target in links, f"{page.name}: {ex} has no link to {target}"
            assert f"{ex}-solution" in sol_ids, f"{solution.name}: no anchor {ex}-solution"
            back = f"../chapters/{page.name}#{ex}"
            assert back in sol_links, f"{solution.name}: no link back to {back}"
            checked += 1
    assert checked >= 8 * 5


def test_an_exercise_link_opens_its_solution(request):
    page, log = _open_page(request, "chapters/02_taylor_obd.html")
    link = page.locator("a[href$='#ch02-ex1-solution']").first
    link.click()
    page.wait_for_url("**/solutions/02_taylor_obd_solutions.html#ch02-ex1-solution")
    anchor = page.locator("#ch02-ex1-solution")  # the label's target, just before the heading
    assert anchor.count() == 1
    heading = anchor.evaluate("e => e.nextElementSibling && e.nextElementSibling.textContent")
    assert heading and heading.startswith("Exercise 1"), heading
    page.locator("a[href$='#ch02-ex1']").first.click()
    page.wait_for_url("**/chapters/02_taylor_obd.html#ch02-ex1")
    assert not _report(log), _report(log)


def test_offline_search_finds_a_term(request):
    """Sphinx's search runs in the page from searchindex.js: no server, no network."""
    page, log = _open_page(request, "search.html?q=Wanda")
    page.wait_for_function("() => document.querySelectorAll('#search-results li, ul.search li').length > 0")
    results = page.locator("#search-results li, ul.search li")
    titles = " ".join(results.all_text_contents())
    assert "Wanda" in titles, titles[:500]
    assert not _report(log), _report(log)


@pytest.mark.parametrize("rel_path", _chapter_params())
def test_dark_mode_toggles_and_is_screenshotted(rel_path, request):
    """The theme's colour-mode button switches the page to dark; a dark screenshot is saved next to the light
    one, to look at (figures are opaque PNGs, checked in tests/test_book_structure.py)."""
    if rel_path.startswith("<"):
        _loud_skip(f"no built chapter pages in {CHAPTERS_DIR} (run `make book` first)")
    page, log = _open_page(request, rel_path)
    button = page.locator(".theme-switch-button").first
    for _ in range(3):  # the button cycles light -> dark -> auto (the order depends on the start)
        if page.evaluate("() => document.documentElement.dataset.theme") == "dark":
            break
        button.click()
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), background
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / f"{Path(rel_path).stem}-dark.png"), full_page=True)
    assert not _report(log), _report(log)
