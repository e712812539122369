#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh) and run the test suite on 2 workers.
# Extra arguments go to pytest, e.g.  bash scripts/run_tests.sh -m slow   or   -k sigreg
# The exit code is pytest's (including 5, "no tests collected").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIGREG_VENV:-$ROOT/.venv}"

bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -n 2 "$@"
