#!/usr/bin/env bash
# Run pytest; exit 5 ("no tests collected") is a failure, not a pass.
set -uo pipefail
"$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing the run" >&2
  exit 1
fi
exit "$rc"
