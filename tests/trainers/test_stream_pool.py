"""The stream's worker pool: order, bounded prefetch, errors, dead workers, orphaned workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from trainers.core.stream.pool import WorkerPool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Square:
    """``k -> (k * k, pid)``; raises ``ValueError`` at ``fail_at``; sleeps at ``slow_at``."""

    def __init__(self, fail_at: int = -1, slow_at: int = -1) -> None:
        self.fail_at, self.slow_at = fail_at, slow_at

    def __call__(self, k: int, slot=None) -> tuple[int, int]:
        if k == self.fail_at:
            raise ValueError(f"item {k} is bad")
        if k == self.slow_at:
            time.sleep(60)
        return k * k, os.getpid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_items_arrive_in_order_from_every_worker():
    pool = WorkerPool(Square(), 3, 14, workers=3, prefetch=2)
    out = [item for item, slot in pool]
    assert [value for value, _ in out] == [k * k for k in range(3, 14)]
    assert len({pid for _, pid in out}) == 3 and os.getpid() not in {pid for _, pid in out}
    assert all(not p.is_alive() for p in pool._processes)


def test_an_error_in_a_worker_is_raised_at_its_turn_and_stops_the_pool():
    pool = WorkerPool(Square(fail_at=5), 0, 20, workers=2, prefetch=1)
    got = []
    with pytest.raises(ValueError, match="item 5 is bad"):
        for (value, _), _slot in pool:
            got.append(value)
    assert got == [k * k for k in range(5)]
    assert all(not p.is_alive() for p in pool._processes)


def test_a_killed_worker_is_reported_not_waited_for():
    pool = WorkerPool(Square(slow_at=1), 0, 10, workers=2, prefetch=1)
    assert next(pool)[0][0] == 0
    os.kill(pool._processes[1].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="data worker 1 exited with code -9 before item 1"):
        next(pool)


def test_workers_exit_when_their_consumer_is_killed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_stream_pool import Square
        from trainers.core.stream.pool import WorkerPool
        if __name__ == "__main__":
            pool = WorkerPool(Square(), 0, 10**6, workers=2, prefetch=1)
            next(pool)
            print(*[p.pid for p in pool._processes], flush=True)
            time.sleep(60)
        """
    )
    path = tmp_path / "consumer.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)
