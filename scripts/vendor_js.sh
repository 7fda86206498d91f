#!/usr/bin/env bash
# Vendor the JavaScript the built book needs, so that it reads fully offline:
#   _vendor/widgets/require.js        requirejs (AMD loader used by the widget manager)
#   _vendor/widgets/embed-amd.js      @jupyter-widgets/html-manager (renders saved widget state)
#   _vendor/mathjax/...               MathJax 3 (tex-mml-chtml + lazily loaded components + fonts)
#   _vendor/fontawesome-fix.js        keeps the theme's FontAwesome from replacing widget icons
#   _vendor/book.css                  the book's own style: code cells that fit 85 characters
#   _vendor/widgets/widgets-fix.js    ipywidgets 8 next to MathJax 3; path of the widgets' icon fonts
# _config.yml points Sphinx at these (html_static_path: ["_vendor"]).
#
# Only the npm registry is used (`npm pack`: one tarball per package, no dependency tree).
# Idempotent: when _vendor/.stamp matches the pinned versions, it exits at once.
set -euo pipefail

REQUIREJS_VERSION="2.3.7"
HTML_MANAGER_VERSION="1.0.15"
MATHJAX_VERSION="3.2.2"
FIXES_VERSION="4"  # bump whenever the fix scripts written below change

# npm's dist.integrity of each pinned tarball (checked after download).
REQUIREJS_SHA512="DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw=="
HTML_MANAGER_SHA512="5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
MATHJAX_SHA512="Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/_vendor"
STAMP="$VENDOR/.stamp"
STAMP_TEXT="requirejs=$REQUIREJS_VERSION html-manager=$HTML_MANAGER_VERSION mathjax=$MATHJAX_VERSION fixes=$FIXES_VERSION"

# Files whose absence means the vendored tree is broken even if the stamp is there.
KEY_FILES=(
  widgets/require.js
  widgets/embed-amd.js
  mathjax/tex-mml-chtml.js
  mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff
  fontawesome-fix.js
  book.css
  widgets/widgets-fix.js
)

have_all_files() {
  local f
  for f in "${KEY_FILES[@]}"; do
    [[ -s "$VENDOR/$f" ]] || return 1
  done
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]] && have_all_files; then
  exit 0
fi

die() { echo "vendor_js.sh: ERROR: $*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found. Install Node.js/npm (Debian: apt-get install -y npm)."
command -v tar >/dev/null 2>&1 || die "tar not found."
command -v openssl >/dev/null 2>&1 || die "openssl not found (needed to check tarball integrity)."

echo "vendor_js.sh: fetching requirejs@$REQUIREJS_VERSION, @jupyter-widgets/html-manager@$HTML_MANAGER_VERSION, mathjax@$MATHJAX_VERSION from the npm registry"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vendor_js.XXXXXX")"
# Staged next to _vendor (same filesystem) so the final swap is a rename.
NEW="$ROOT/_vendor.new.$$"
trap 'rm -rf "$WORK" "$NEW"' EXIT

fetch() {  # fetch SPEC SHA512 -> prints path of the tarball
  local spec="$1" want="$2" log="$WORK/npm-pack.log" name got
  if ! name="$(cd "$WORK" && npm pack "$spec" --cache "$ROOT/.npm-cache" --pack-destination "$WORK" \
        --ignore-scripts --no-fund --no-audit --loglevel=error 2>"$log" | tail -n 1)"; then
    cat "$log" >&2
    die "'npm pack $spec' failed (is the npm registry reachable?)."
  fi
  [[ -n "$name" && -f "$WORK/$name" ]] || { cat "$log" >&2; die "'npm pack $spec' produced no tarball."; }
  got="$(openssl dgst -sha512 -binary "$WORK/$name" | base64 | tr -d '\n')"
  [[ "$got" == "$want" ]] || die "integrity mismatch for $spec: expected sha512-$want, got sha512-$got"
  echo "$WORK/$name"
}

unpack() {  # unpack TARBALL DIR
  mkdir -p "$2"
  tar -xzf "$1" -C "$2" || die "could not unpack $1"
}

REQ_TGZ="$(fetch "requirejs@$REQUIREJS_VERSION" "$REQUIREJS_SHA512")"
HM_TGZ="$(fetch "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" "$HTML_MANAGER_SHA512")"
MJ_TGZ="$(fetch "mathjax@$MATHJAX_VERSION" "$MATHJAX_SHA512")"

unpack "$REQ_TGZ" "$WORK/requirejs"
unpack "$HM_TGZ" "$WORK/html-manager"
unpack "$MJ_TGZ" "$WORK/mathjax"

# Assemble in a staging directory, then swap it in, so an interrupted run never leaves half a tree.
mkdir -p "$NEW/widgets" "$NEW/mathjax"

# --- widgets ---------------------------------------------------------------
cp "$WORK/requirejs/package/require.js" "$NEW/widgets/require.js" \
  || die "requirejs tarball has no require.js"
HM_DIST="$WORK/html-manager/package/dist"
[[ -f "$HM_DIST/embed-amd.js" ]] || die "html-manager tarball has no dist/embed-amd.js"
cp "$HM_DIST/embed-amd.js" "$NEW/widgets/embed-amd.js"
# FontAwesome 4 font files that embed-amd.js loads relative to its modules' URL (see widgets-fix.js).
shopt -s nullglob
for f in "$HM_DIST"/*.woff "$HM_DIST"/*.woff2 "$HM_DIST"/*.ttf "$HM_DIST"/*.eot "$HM_DIST"/*.svg; do
  cp "$f" "$NEW/widgets/"
done
shopt -u nullglob
cp "$WORK/requirejs/package/package.json" "$NEW/widgets/requirejs-package.json"
cp "$WORK/html-manager/package/package.json" "$NEW/widgets/html-manager-package.json"

# --- MathJax ---------------------------------------------------------------
# tex-mml-chtml.js, plus everything it can load lazily at run time:
#   input/tex/extensions (autoload: \boldsymbol, \cancel, \color, ...), input/mml (entities),
#   output/chtml (fonts/woff-v2), ui (menu, safe, lazy), a11y + sre (accessibility options in the menu).
MJ_ES5="$WORK/mathjax/package/es5"
[[ -f "$MJ_ES5/tex-mml-chtml.js" ]] || die "mathjax tarball has no es5/tex-mml-chtml.js"
cp "$MJ_ES5/tex-mml-chtml.js" "$NEW/mathjax/"
for d in input/tex/extensions input/mml output/chtml ui a11y sre; do
  [[ -d "$MJ_ES5/$d" ]] || die "mathjax tarball has no es5/$d"
  mkdir -p "$NEW/mathjax/$(dirname "$d")"
  cp -r "$MJ_ES5/$d" "$NEW/mathjax/$d"
done
cp "$WORK/mathjax/package/LICENSE" "$NEW/mathjax/LICENSE"
cp "$WORK/mathjax/package/package.json" "$NEW/mathjax/package.json"

# --- Fix scripts (loaded through _config.yml: html_js_files and nb_ipywidgets_js) -------------------
# The theme's FontAwesome (SVG+JS) replaces <i class="fa ..."> elements with <svg>; some widgets (Play,
# icon buttons) keep references to their <i> and then break. "nest" puts the <svg> inside the <i>.
cat > "$NEW/fontawesome-fix.js" <<'EOF'
// Written by scripts/vendor_js.sh: make FontAwesome nest its SVG inside <i> instead of replacing it,
// so ipywidgets that hold on to their <i> icon elements (Play, icon buttons) keep working.
window.FontAwesomeConfig = Object.assign({}, window.FontAwesomeConfig, {autoReplaceSvg: "nest"});
EOF

# Code cells fit 85 characters per line in a 1280-pixel-wide window (the theme's 14 px shows 77).
cat > "$NEW/book.css" <<'EOF'
/* Written by scripts/vendor_js.sh: code cells show 85 characters per line at 1280 pixels. */
div.cell div.highlight pre { font-size: 12.5px; }
EOF

cat > "$NEW/widgets/widgets-fix.js" <<'EOF'
// Written by scripts/vendor_js.sh. Two fixes for the ipywidgets HTML manager in this book. Loaded on pages
// with widgets only, between require.js and embed-amd.js (nb_ipywidgets_js in _config.yml).
(function () {
  "use strict";

  // 1. ipywidgets 8 typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue) whenever
  //    window.MathJax exists. MathJax 3 has no Hub, so on a page with both math and a widget that has
  //    a description the widget throws and never renders. Give every value window.MathJax takes a
  //    small Hub shim that forwards to MathJax 3's typesetPromise.
  function addHub(mj) {
    if (!mj || typeof mj !== "object" || mj.Hub) return;
    var hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (!Array.isArray(job) || job[0] !== "Typeset") continue;
          var el = job[2];
          var m = window.MathJax;
          if (m && m.startup && m.startup.promise && m.typesetPromise) {
            m.startup.promise
              .then(function () { return m.typesetPromise(el ? [el] : undefined); })
              .catch(function (err) { console.warn("MathJax typeset of a widget failed:", err); });
          }
        }
      }
    };
    // Not enumerable: MathJax 3 reads its configuration object and must not see this key.
    Object.defineProperty(mj, "Hub", {value: hub, enumerable: false, configurable: true, writable: true});
  }
  var current = window.MathJax;
  addHub(current);
  try {
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      enumerable: true,
      get: function () { return current; },
      set: function (value) { current = value; addHub(value); }
    });
  } catch (err) {
    console.warn("widgets-fix.js: could not watch window.MathJax:", err);
  }

  // 2. embed-amd.js loads its icon fonts relative to the URL requirejs gives its modules, by default
  //    the page's own folder (.../chapters/@jupyter-widgets/...), and it maps its modules as soon as it
  //    runs. So before it runs, point those modules at the folder the fonts were vendored to:
  //    _static/widgets/, this script's own folder.
  var script = document.currentScript;
  if (!script || !script.src) return;
  var widgets = new URL(".", script.src).href.replace(/\/$/, "");
  var paths = {
    "@jupyter-widgets/html-manager/dist": widgets,
    "@jupyter-widgets": widgets
  };
  if (window.require && typeof window.require.config === "function") {
    window.require.config({paths: paths});  // require.js is already loaded
  } else if (window.require === undefined) {
    window.require = {paths: paths};        // require.js reads this when it loads
  }
})();
EOF

echo "$STAMP_TEXT" > "$NEW/.stamp"

for f in "${KEY_FILES[@]}"; do
  [[ -s "$NEW/$f" ]] || die "internal error: $f missing after assembly"
done

rm -rf "$VENDOR.old"
if [[ -e "$VENDOR" ]]; then mv "$VENDOR" "$VENDOR.old"; fi
mv "$NEW" "$VENDOR"
rm -rf "$VENDOR.old"

echo "vendor_js.sh: wrote $VENDOR ($(du -sh "$VENDOR" | cut -f1)): $STAMP_TEXT"
