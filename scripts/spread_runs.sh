#!/usr/bin/env bash
# The acceptance runs that stand in for other machines, which also measure the spread of the rounding-sensitive
# values: strict nbval over every notebook (nothing re-executed in place) on another compute path, each run
# keeping the values that pruning_lab.measured checks in _spread/<config>/ (PRUNING_LAB_RECORD_DIR); then
# scripts/spread.py compares them with the committed records and writes book/data/spread.json.
#   bash scripts/spread_runs.sh [CONFIG ...]    (default: t1 avx2; 10-20 minutes each on 2 cores)
# CONFIG: t1 (OMP/MKL 1 thread), avx2 (ATEN_CPU_CAPABILITY=avx2), t4 (4 threads), avx2-t1 (both).
set -euo pipefail
cd "$(dirname "$0")/.."
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(t1 avx2)
rc=0
for cfg in "${configs[@]}"; do
  case "$cfg" in
    t1) envs=(OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) ;;
    t4) envs=(OMP_NUM_THREADS=4 MKL_NUM_THREADS=4) ;;
    avx2) envs=(ATEN_CPU_CAPABILITY=avx2) ;;
    avx2-t1) envs=(ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) ;;
    *) echo "unknown config $cfg (t1, avx2, t4, avx2-t1)" >&2; exit 2 ;;
  esac
  rm -rf "_spread/$cfg"
  echo "== $cfg: ${envs[*]}"
  env "${envs[@]}" PRUNING_LAB_STRICT=1 PYTHONHASHSEED=0 PRUNING_LAB_RECORD_DIR="$PWD/_spread/$cfg" \
    .venv/bin/python -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900 \
    -p no:cacheprovider -q chapters/*.ipynb solutions/*.ipynb || rc=1
done
[ -d _spread/previous ] || .venv/bin/python scripts/spread.py previous 0947f8b
args=()
for d in _spread/*/; do args+=("$(basename "$d")=$d"); done
.venv/bin/python scripts/spread.py collect "${args[@]}" || rc=1
exit "$rc"
