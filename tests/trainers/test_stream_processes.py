"""The streamed pipeline across real processes: two ranks read every sample exactly once per
epoch, each from its own process and worker (nothing shared but the files); a rank killed with
SIGKILL mid-epoch resumes from its last saved state to the batches of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("PIL")

from test_stream import make_shards  # noqa: E402

CONSUMER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_consumer.py")
SIZES = [6, 6, 5]  # unequal shards, 17 samples; global batch 6 does not divide them


def run(pattern, rank, world, stop, out, state, pause=0.0) -> subprocess.Popen:
    args = [pattern, rank, world, stop, out, state, pause]
    return subprocess.Popen([sys.executable, CONSUMER, *map(str, args)])


def records(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_two_rank_processes_read_every_sample_exactly_once_per_epoch(tmp_path):
    pattern = make_shards(tmp_path, SIZES)
    stop = 9  # 9 global batches of 6 = 54 stream positions: 3 whole epochs of 17 and 3 more
    procs = [
        run(pattern, rank, 2, stop, tmp_path / f"r{rank}.jsonl", tmp_path / f"s{rank}.json")
        for rank in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ranks = [records(tmp_path / f"r{rank}.jsonl") for rank in range(2)]
    assert [[r["number"] for r in rank] for rank in ranks] == [list(range(stop))] * 2
    stream = np.concatenate([ranks[rank][k]["indices"] for k in range(stop) for rank in range(2)])
    for epoch in stream[: 3 * 17].reshape(3, 17):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(17))
    for rank in ranks:
        for r in rank:
            assert r["values"] == r["indices"]  # the pixels are those of the named sample


def test_kill_9_mid_epoch_resumes_to_the_uninterrupted_batches(tmp_path):
    pattern = make_shards(tmp_path, SIZES)
    stop = 12
    whole = run(pattern, 1, 2, stop, tmp_path / "whole.jsonl", tmp_path / "whole.json")
    assert whole.wait(timeout=120) == 0
    out, state = tmp_path / "killed.jsonl", tmp_path / "killed.json"
    victim = run(pattern, 1, 2, stop, out, state, pause=0.3)
    deadline = time.monotonic() + 120
    while (not out.exists() or len(records(out)) < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    done = len(records(out))
    assert 4 <= done < stop and json.loads(state.read_text())["next_batch"] in (done - 1, done)
    assert run(pattern, 1, 2, stop, out, state).wait(timeout=120) == 0
    resumed = {r["number"]: r for r in records(out)}  # a batch logged twice must agree
    for r in records(out):
        assert resumed[r["number"]] == r
    assert [resumed[k] for k in range(stop)] == records(tmp_path / "whole.jsonl")
