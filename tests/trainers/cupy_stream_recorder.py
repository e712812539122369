"""trainers.cupy_nccl, recording the sample indices every rank trains on (for the streamed
exactly-once test): ``[torchrun ...] cupy_stream_recorder.py OUT_PREFIX [trainer args]``.

Each rank appends ``{"step", "indices"}`` per optimiser step to ``OUT_PREFIX.rank{R}.jsonl``
(``indices``: the streamed batch's sample indices), then trains as ``python -m
trainers.cupy_nccl`` would.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from trainers.cupy_nccl import trainer  # noqa: E402


def main() -> int:
    prefix, args = sys.argv[1], sys.argv[2:]
    path = f"{prefix}.rank{os.environ.get('RANK', '0')}.jsonl"
    step = trainer.Trainer._train_step

    def recorded(self, batch):
        with open(path, "a") as fh:
            fh.write(json.dumps({"step": self.step, "indices": batch.indices.tolist()}) + "\n")
        return step(self, batch)

    trainer.Trainer._train_step = recorded
    return trainer.main(args)


if __name__ == "__main__":
    sys.exit(main())
