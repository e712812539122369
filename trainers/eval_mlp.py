"""Alias of :mod:`trainers.eval_linear` for runs of trainers.cupy_nccl (kept for old commands).

Usage::

    python -m trainers.eval_mlp RUN_DIR [--json PATH] [--save-features PATH]

is ``python -m trainers.eval_linear RUN_DIR --baseline random-init --baseline raw-pixels``
with the same options: the encoder of the newest checkpoint, the same encoder at its initial
weights and the standardised flat inputs, measured by the same linear evaluation.
"""

from __future__ import annotations

import sys

from trainers import eval_linear

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status of :func:`trainers.eval_linear.main`."""
    args = sys.argv[1:] if argv is None else list(argv)
    return eval_linear.main([*args, "--baseline", "random-init", "--baseline", "raw-pixels"])


if __name__ == "__main__":
    raise SystemExit(main())
