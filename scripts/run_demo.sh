#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh) and run examples/demo.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIGREG_VENV:-$ROOT/.venv}"

bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" examples/demo.py "$@"
