"""Ordered, bounded prefetch of ``make(k)`` for ``k`` in a range, in worker processes.

Worker ``w`` of ``W`` computes items ``start + w, start + w + W, ...`` in turn and puts each
into its own queue of at most ``prefetch`` items, so the consumer takes item ``k`` from
queue ``(k - start) mod W`` and items arrive in order with at most ``W * prefetch`` made
ahead (memory is bounded whatever the range). Bulk data (decoded images) skips pickling:
each worker writes it into one of its ``prefetch`` shared-memory slots (created and freed by
the consumer, on the same machine), which the consumer hands back once it has read it.
Workers are started with ``spawn`` (no inherited threads or CUDA/JAX state) and import only
what ``make`` needs.

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
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

__all__ = ["WorkerPool"]

_POLL_SECONDS = 0.2


def _wait(get: Callable[..., Any], stop: Any, parent: int) -> tuple[bool, Any]:
    """``(True, get())`` once ``get`` succeeds, ``(False, None)`` if asked to stop first."""
    while not (stop.is_set() or os.getppid() != parent):
        try:
            return True, get(timeout=_POLL_SECONDS)
        except queue.Empty:
            continue
    return False, None


def _offer(put: Callable[..., Any], item: Any, stop: Any, parent: int) -> bool:
    """``put(item)`` unless asked to stop first; whether it was put."""
    while not (stop.is_set() or os.getppid() != parent):
        try:
            put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _work(
    make: Callable[[int, np.ndarray | None], Any],
    numbers: range,
    out: Any,
    free: Any,
    slot_names: list[str],
    stop: Any,
    parent: int,
) -> None:
    """Worker loop: ``("ok", slot, make(k, slot array))`` for each ``k``, or ``("error",
    slot, exception)`` and return. Without slots, ``slot`` is ``None``."""
    blocks = [SharedMemory(name=name) for name in slot_names]
    slots = [np.ndarray((b.size,), dtype=np.uint8, buffer=b.buf) for b in blocks]
    for k in numbers:
        slot = None
        if slots:
            ready, slot = _wait(free.get, stop, parent)
            if not ready:
                out.cancel_join_thread()
                return
        try:
            item: tuple[str, Any, Any] = (
                "ok",
                slot,
                make(k, None if slot is None else slots[slot]),
            )
        except Exception as err:  # reported to the consumer, which decides
            try:
                pickle.dumps(err)
                item = ("error", slot, err)
            except Exception:
                item = ("error", slot, RuntimeError(traceback.format_exc()))
        if not _offer(out.put, item, stop, parent):
            out.cancel_join_thread()  # never wait on a consumer that stopped reading
            return
        if item[0] == "error":
            return


def _shutdown(processes: list[Any], stop: Any, queues: list[Any], blocks: list[Any]) -> None:
    stop.set()
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.terminate()
            process.join()
    for q in queues:
        q.close()
        q.cancel_join_thread()
    for block in blocks:
        try:
            block.close()
        except BufferError:  # a view of the slot is still alive; the mapping goes with it
            pass
        block.unlink()


class WorkerPool:
    """Iterator over ``make(k, slot)`` for ``k`` in ``range(start, stop)``, made in processes.

    Parameters
    ----------
    make : callable
        Picklable; ``make(k, slot)`` returns a picklable item. ``slot`` is a ``uint8``
        array of ``slot_bytes`` in shared memory for ``make`` to write its bulk data into
        (so that it is not pickled), or ``None`` when ``slot_bytes`` is 0.
    start, stop : int
        The range of ``k``.
    workers : int
        Worker processes (at least 1).
    prefetch : int
        Items each worker keeps ready (and shared-memory slots per worker).
    slot_bytes : int, default 0
        Size of a slot; 0: no slots.

    Notes
    -----
    ``next()`` returns ``(item, slot)``: ``slot`` is the array ``make`` wrote into, valid
    only until the following ``next()`` (copy what you keep), or ``None``.
    """

    def __init__(
        self,
        make: Callable[[int, np.ndarray | None], Any],
        start: int,
        stop: int,
        *,
        workers: int,
        prefetch: int,
        slot_bytes: int = 0,
    ) -> None:
        context = mp.get_context("spawn")
        self.start, self.stop, self.next = start, stop, start
        self._stop = context.Event()
        self._queues = [context.Queue(maxsize=prefetch) for _ in range(workers)]
        self._free = [context.Queue() for _ in range(workers)]
        count = prefetch if slot_bytes else 0
        self._blocks = [SharedMemory(create=True, size=slot_bytes) for _ in range(workers * count)]
        self._slots = [np.ndarray((b.size,), np.uint8, buffer=b.buf) for b in self._blocks]
        self._held: tuple[int, int] | None = None  # (worker, slot) handed out last
        self._processes = []
        for w in range(workers):
            names = [b.name for b in self._blocks[w * count : (w + 1) * count]]
            for slot in range(count):
                self._free[w].put(slot)
            self._processes.append(
                context.Process(
                    target=_work,
                    args=(
                        make,
                        range(start + w, stop, workers),
                        self._queues[w],
                        self._free[w],
                        names,
                        self._stop,
                        os.getpid(),
                    ),
                    daemon=True,
                    name=f"stream-worker-{w}",
                )
            )
        for process in self._processes:
            process.start()
        self._finalizer = weakref.finalize(
            self, _shutdown, self._processes, self._stop, self._queues + self._free, self._blocks
        )
        self._count = count

    def __iter__(self) -> WorkerPool:
        return self

    def __next__(self) -> tuple[Any, np.ndarray | None]:
        if self._held is not None:
            self._free[self._held[0]].put(self._held[1])
            self._held = None
        if self.next >= self.stop or not self._finalizer.alive:
            self.close()
            raise StopIteration
        w = (self.next - self.start) % len(self._processes)
        while True:
            try:
                kind, slot, item = self._queues[w].get(timeout=_POLL_SECONDS)
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
        if slot is None:
            return item, None
        self._held = (w, slot)
        return item, self._slots[w * self._count + slot]

    def close(self) -> None:
        """Stop and join the workers, free the shared memory (idempotent)."""
        self._slots.clear()
        self._finalizer()
