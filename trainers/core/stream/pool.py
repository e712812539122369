"""Ordered, bounded prefetch of ``make(k)`` for ``k`` in a range, in worker processes.

Worker ``w`` of ``W`` computes items ``start + w, start + w + W, ...`` in turn and puts each
into its own queue of at most ``prefetch`` items, so the consumer takes item ``k`` from
queue ``(k - start) mod W`` and items arrive in order with at most ``W * prefetch`` made
ahead (memory is bounded whatever the range). Workers are started with ``spawn`` (no
inherited threads or CUDA/JAX state) and import only what ``make`` needs.

A failure inside ``make`` reaches the consumer at the failing item's turn: the exception
is re-raised there if it pickles, else as a :class:`RuntimeError` carrying the worker's
traceback. A worker that dies (killed, out of memory) is reported with its exit code
instead of a hang; a worker whose consumer died exits by itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import traceback
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool"]

_POLL_SECONDS = 0.2


def _work(make: Callable[[int], Any], numbers: range, out: Any, stop: Any, parent: int) -> None:
    """Worker loop: ``("ok", make(k))`` for each ``k``, or ``("error", ...)`` then return."""
    for k in numbers:
        try:
            item: tuple[str, Any] = ("ok", make(k))
        except Exception as err:  # reported to the consumer, which decides
            try:
                pickle.dumps(err)
                item = ("error", err)
            except Exception:
                item = ("error", RuntimeError(traceback.format_exc()))
        while True:
            if stop.is_set() or os.getppid() != parent:
                out.cancel_join_thread()  # never wait on a consumer that stopped reading
                return
            try:
                out.put(item, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        if item[0] == "error":
            return


def _shutdown(processes: list[Any], stop: Any, queues: list[Any]) -> None:
    stop.set()
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.terminate()
            process.join()
    for q in queues:
        q.close()
        q.cancel_join_thread()


class WorkerPool:
    """Iterator over ``make(k)`` for ``k`` in ``range(start, stop)``, made in processes.

    Parameters
    ----------
    make : callable
        Picklable; ``make(k)`` returns a picklable item.
    start, stop : int
        The range of ``k``.
    workers : int
        Worker processes (at least 1).
    prefetch : int
        Items each worker keeps ready.
    """

    def __init__(
        self, make: Callable[[int], Any], start: int, stop: int, *, workers: int, prefetch: int
    ) -> None:
        context = mp.get_context("spawn")
        self.start, self.stop, self.next = start, stop, start
        self._stop = context.Event()
        self._queues = [context.Queue(maxsize=prefetch) for _ in range(workers)]
        self._processes = [
            context.Process(
                target=_work,
                args=(make, range(start + w, stop, workers), q, self._stop, os.getpid()),
                daemon=True,
                name=f"stream-worker-{w}",
            )
            for w, q in enumerate(self._queues)
        ]
        for process in self._processes:
            process.start()
        self._finalizer = weakref.finalize(
            self, _shutdown, self._processes, self._stop, self._queues
        )

    def __iter__(self) -> WorkerPool:
        return self

    def __next__(self) -> Any:
        if self.next >= self.stop or not self._finalizer.alive:
            self.close()
            raise StopIteration
        w = (self.next - self.start) % len(self._processes)
        while True:
            try:
                kind, item = self._queues[w].get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                code = self._processes[w].exitcode
                if code is not None and self._queues[w].empty():
                    self.close()
                    raise RuntimeError(
                        f"data worker {w} exited with code {code} before item {self.next} "
                        "(killed, or out of memory?)"
                    ) from None
        if kind == "error":
            self.close()
            raise item
        self.next += 1
        return item

    def close(self) -> None:
        """Stop and join the workers (idempotent)."""
        self._finalizer()
