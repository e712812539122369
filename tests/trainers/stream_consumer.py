"""One rank consuming a streamed shard set, as a training process would (for test_stream_processes).

Usage: ``stream_consumer.py PATTERN RANK WORLD STOP OUT STATE [SLEEP]``. Streams batches
``[start, STOP)`` of a :class:`TrainPlan` (batch 3 per rank, seed 7, 1 worker process), where
``start`` is restored from the JSON file ``STATE`` if it exists. After each batch it appends
``{"number", "indices", "values"}`` (``values``: the grey value of every image) to ``OUT``
and then writes the iterator state to ``STATE`` (temp file, fsync, rename), sleeping
``SLEEP`` seconds between batches.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from trainers.core.stream import StreamLoader, TrainPlan, index_shards  # noqa: E402


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main() -> None:
    pattern, rank, world, stop, out, state_path = sys.argv[1:7]
    pause = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    index = index_shards(pattern)
    plan = TrainPlan(len(index), 3, rank=int(rank), world_size=int(world), seed=7)
    loader = StreamLoader(index, plan, image_size=4, workers=1, prefetch=2)
    start = 0
    if os.path.exists(state_path):
        with open(state_path) as fh:
            start = loader.restore(json.load(fh))
    with loader.batches(start, int(stop)) as batches, open(out, "a") as log:
        for batch in batches:
            values = batch.images.reshape(len(batch.images), -1)[:, 0]
            record = {
                "number": batch.number,
                "indices": batch.indices.tolist(),
                "values": values.tolist(),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
            write_atomic(state_path, json.dumps(batches.state()))
            time.sleep(pause)


if __name__ == "__main__":
    main()
