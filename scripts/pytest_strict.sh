#!/usr/bin/env bash
# pytest, except that "no tests collected" (exit code 5) is a failure, not a pass.
set -u
"${PY:-.venv/bin/python}" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests for: $*" >&2
  exit 1
fi
exit "$rc"
