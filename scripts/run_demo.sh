#!/usr/bin/env bash
# The demo: set up the environment (scripts/setup_env.sh), pretrain LeJEPA on scikit-learn's
# digits on the CPU with 2 processes (torchrun, gloo), then measure the linear-probe accuracy
# of the pretrained backbone next to (a) the same backbone at random init and (b) raw pixels,
# all three by the same evaluation code (python -m trainers.eval_linear).
#
# Extra arguments are config overrides for the pretraining, e.g.  optim.epochs=10
# Environment:
#   SIGREG_VENV        venv directory (default: <repo>/.venv)
#   SIGREG_DEMO_NPROC  training processes (default: 2)
#   SIGREG_DEMO_DIR    run directory (default: runs/digits-demo-<date>-<time>)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIGREG_VENV:-$ROOT/.venv}"
NPROC="${SIGREG_DEMO_NPROC:-2}"
RUN_DIR="${SIGREG_DEMO_DIR:-runs/digits-demo-$(date +%Y%m%d-%H%M%S)}"

bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"

start=$SECONDS
"$VENV/bin/python" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
    -m trainers.torch_ddp --config trainers/configs/digits_demo.yaml "run.dir=$RUN_DIR" "$@"
pretrain=$((SECONDS - start))

echo "linear evaluation (frozen features, logistic regression, digits test split):"
"$VENV/bin/python" -m trainers.eval_linear "$RUN_DIR" --baseline random-init \
    --baseline raw-pixels --json "$RUN_DIR/linear_eval.json"
echo "pretraining ${pretrain} s, demo ${SECONDS} s in all; run directory: $RUN_DIR"
echo "plots: $RUN_DIR/loss.png $RUN_DIR/accuracy.png $RUN_DIR/spectrum.png"
