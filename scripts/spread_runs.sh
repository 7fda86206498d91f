#!/usr/bin/env bash
# Re-run every notebook that records rounding-sensitive values (pruning_lab.measured) on other compute paths,
# each writing its values to _spread/<config>/, then compare them with the committed records:
#   bash scripts/spread_runs.sh [CONFIG ...]      (default: all; about 10 minutes each on 2 cores)
# CONFIG is one of: t1 (1 thread), t4 (4 threads), avx2 (ATEN_CPU_CAPABILITY=avx2), avx2-t1 (both).
# The result, book/data/spread.json, is what the tolerances in src/pruning_lab/measured.py must cover.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mapfile -t NOTEBOOKS < <(grep -l 'Measured(' chapters/*.ipynb solutions/*.ipynb)
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(t1 t4 avx2 avx2-t1)
for cfg in "${configs[@]}"; do
  case "$cfg" in
    t1) envs=(OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) ;;
    t4) envs=(OMP_NUM_THREADS=4 MKL_NUM_THREADS=4) ;;
    avx2) envs=(ATEN_CPU_CAPABILITY=avx2) ;;
    avx2-t1) envs=(ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) ;;
    *) echo "unknown config $cfg (t1, t4, avx2, avx2-t1)" >&2; exit 2 ;;
  esac
  rm -rf "_spread/$cfg"
  echo "== $cfg: ${envs[*]}"
  env "${envs[@]}" PYTHONHASHSEED=0 PRUNING_LAB_RECORD_DIR="$PWD/_spread/$cfg" \
    .venv/bin/jupyter execute --allow-errors --timeout=900 "${NOTEBOOKS[@]}" 2>&1 | grep -v "^\[NbClientApp\]" || true
done
args=()
for d in _spread/*/; do args+=("$(basename "$d")=$d"); done
$PY scripts/spread.py collect "${args[@]}"
