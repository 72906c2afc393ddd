"""Adaptive batching: rows from concurrent requests share one forward pass, run in a worker thread.

One collector task per event loop takes every request that is waiting when the worker is free, up to
``max_batch_size`` rows, runs one forward pass on the worker thread, and hands each request its slice of
the result. While a pass runs, new requests queue up, so batches grow with load and a lone request never
waits for company: before dispatching, the collector gives requests already being parsed a couple of
event-loop turns to join, and never holds the first one longer than ``max_batch_latency_ms``.

Callers on threads of their own (the thread-pool gRPC server) batch without the event loop
(:meth:`AdaptiveBatcher.submit_blocking`): the caller that finds no pass running runs one on its own thread
with every request queued by then, and hands the next pass to the first request that queued meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

__all__ = ["AdaptiveBatcher"]

# Event-loop turns without a new request before a batch goes. Requests whose bytes have arrived reach the
# batcher within a few turns (gRPC's, handed over by its poller thread, take more than HTTP's), so under load
# a batch waits up to _MAX_IDLE_TURNS quiet turns; when waiting stops finding company (one client at a time)
# the wait shrinks to _MIN_IDLE_TURNS, so a lone request pays almost nothing. Measured on one core: gRPC at
# concurrency 8 went from ~1,400 to ~2,000 req/s (2 -> 16 turns) with batch-1 latency unchanged.
_MIN_IDLE_TURNS = 1
_MAX_IDLE_TURNS = 16

Score = Callable[[np.ndarray], np.ndarray]
BatchObserver = Callable[[int, int, float], None]


class AdaptiveBatcher:
    """Merges concurrent scoring calls into batched forward passes on one worker thread."""

    def __init__(
        self,
        score: Score,
        *,
        max_batch_size: int,
        max_batch_latency_ms: float,
        initializer: Callable[[], None] | None = None,
        on_batch: BatchObserver | None = None,
    ) -> None:
        """Create the batcher and its worker thread.

        Args:
            score: Maps a float32 array (rows x features) to one score per row; called on the worker thread.
            max_batch_size: Most rows per forward pass (a single request with more rows runs alone, unsplit);
                1 turns batching off (each request is its own pass, still on the worker thread).
            max_batch_latency_ms: Longest the first request of a batch waits for others to join.
            initializer: Run once on the worker thread before its first pass (e.g. to fix torch's threads).
            on_batch: Called after each pass with (rows, requests, seconds), for metrics.
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size} must be at least 1")
        if max_batch_latency_ms < 0:
            raise ValueError(f"max_batch_latency_ms={max_batch_latency_ms} must not be negative")
        self._score = score
        self.max_batch_size = max_batch_size
        self._max_wait_s = max_batch_latency_ms / 1000.0
        self._on_batch = on_batch
        self._worker = _Worker(score, initializer)
        self._pending: deque[tuple[np.ndarray, asyncio.Future, float]] = deque()
        self._pending_rows = 0
        self._submitted = 0  # requests ever submitted: the collector watches it to see arrivals
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task | None = None
        self._collector_waiting = False
        self._idle_turns = _MAX_IDLE_TURNS
        self._closed = False
        self._callers = _CallerBatches(score, max_batch_size, on_batch)

    def run_sync(self, features: np.ndarray) -> np.ndarray:
        """Score on the worker thread and wait (for warm-up and callers outside an event loop)."""
        return self._worker.run_sync(features)

    async def submit(self, features: np.ndarray) -> np.ndarray:
        """Score ``features`` (float32, rows x features) as part of a batch; returns its rows' scores.

        Raises:
            RuntimeError: the batcher was closed.
            Exception: whatever ``score`` raised for the batch this request was in.
        """
        if self._closed:
            raise RuntimeError("the model is unloading; retry on another replica")
        loop = asyncio.get_running_loop()
        if self.max_batch_size == 1:
            return await self._run(loop, features, 1)
        if loop is not self._loop or self._collector is None or self._collector.done():
            self._bind(loop)
        future = loop.create_future()
        self._pending.append((features, future, loop.time()))
        self._pending_rows += len(features)
        self._submitted += 1
        if self._collector_waiting:
            self._wakeup.set()
        return await future

    def submit_blocking(self, features: np.ndarray) -> np.ndarray:
        """Score ``features`` as part of a batch, from a thread that is not running an event loop.

        Concurrent callers share passes as :meth:`submit`'s do: while one caller's pass runs, the others
        queue; the next pass takes them all (up to ``max_batch_size`` rows) and runs on the thread of the
        first of them, so a lone caller scores on its own thread with no hand-off at all.

        Raises:
            RuntimeError: the batcher was closed.
            Exception: whatever ``score`` raised for the batch this request was in.
        """
        return self._callers.submit(features)

    def close(self) -> None:
        """Stop the collector and the worker thread (requests still queued fail)."""
        self._closed = True
        self._callers.close()
        if self._collector is not None and not self._collector.done():
            self._collector.cancel()
        while self._pending:
            _, future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(RuntimeError("the model was unloaded before this request was scored"))
        self._worker.stop()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a collector on ``loop`` (again, if an earlier loop ended: tests run one loop per test)."""
        if self._loop is not loop:
            self._pending.clear()
            self._pending_rows = 0
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._collector_waiting = False
        self._collector = loop.create_task(self._collect(), name="kfkit-batch-collector")

    async def _run(self, loop: asyncio.AbstractEventLoop, features: np.ndarray, requests: int) -> np.ndarray:
        started = time.perf_counter()
        scores = await self._worker.run(loop, features)
        if self._on_batch is not None:
            self._on_batch(len(features), requests, time.perf_counter() - started)
        return scores

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        while True:
            if not self._pending:
                self._collector_waiting = True
                try:
                    await wakeup.wait()
                finally:
                    self._collector_waiting = False
                wakeup.clear()
                continue
            await self._wait_for_company(loop)
            batch = self._take()
            features = batch[0][0] if len(batch) == 1 else np.concatenate([item[0] for item in batch])
            try:
                scores = await self._run(loop, features, len(batch))
            except asyncio.CancelledError:
                for _, future, _ in batch:
                    if not future.done():
                        future.cancel()
                raise
            except Exception as e:
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            offset = 0
            for rows, future, _ in batch:
                end = offset + len(rows)
                if not future.done():  # the client may have gone
                    future.set_result(scores[offset:end])
                offset = end

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give requests that are already being parsed a chance to join, within the latency budget."""
        if self._max_wait_s <= 0:
            return
        deadline = self._pending[0][2] + self._max_wait_s
        before, idle = self._submitted, 0
        while self._pending_rows < self.max_batch_size and idle < self._idle_turns:
            seen = self._submitted
            await asyncio.sleep(0)
            idle = idle + 1 if self._submitted == seen else 0
            if loop.time() >= deadline:
                break
        # Waiting paid off: keep waiting as long next time; it did not: wait half as long (down to one turn).
        if self._submitted > before:
            self._idle_turns = _MAX_IDLE_TURNS
        else:
            self._idle_turns = max(_MIN_IDLE_TURNS, self._idle_turns // 2)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future, float]]:
        """Pop requests in arrival order up to ``max_batch_size`` rows (always at least one)."""
        batch = [self._pending.popleft()]
        rows = len(batch[0][0])
        while self._pending and rows + len(self._pending[0][0]) <= self.max_batch_size:
            item = self._pending.popleft()
            rows += len(item[0])
            batch.append(item)
        self._pending_rows -= rows
        return batch


class _Slot:
    """One caller's request in :class:`_CallerBatches`: its rows, and the lock it sleeps on until answered."""

    __slots__ = ("error", "features", "lead", "result", "wake")

    def __init__(self, features: np.ndarray) -> None:
        self.features = features
        # A held lock is the cheapest one-shot wake-up: the caller blocks acquiring it, the answer releases it.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.lead = False


class _CallerBatches:
    """Batching for callers on their own threads: the first caller of each pass runs it for everyone queued.

    Invariant: while no pass runs, nothing is queued (the end of each pass hands the queue to its head).
    """

    def __init__(self, score: Score, max_batch_size: int, on_batch: BatchObserver | None) -> None:
        self._score = score
        self._max_rows = max_batch_size
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._pending: deque[_Slot] = deque()
        self._running = False
        self._closed = False

    def submit(self, features: np.ndarray) -> np.ndarray:
        slot = _Slot(features)
        with self._lock:
            if self._closed:
                raise RuntimeError("the model is unloading; retry on another replica")
            self._pending.append(slot)
            lead, self._running = not self._running, True
        if not lead:
            slot.wake.acquire()  # until a pass answered this slot, or made it the next pass's leader
            lead = slot.lead and slot.error is None  # close() fails a promoted slot too
        if lead:
            self._run_pass()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._pending = list(self._pending), deque()
        for slot in waiting:
            slot.error = RuntimeError("the model was unloaded before this request was scored")
            slot.wake.release()

    def _run_pass(self) -> None:
        """Score the head of the queue (this caller's slot) and whoever fits behind it, then hand over."""
        with self._lock:
            batch = [self._pending.popleft()]
            rows = len(batch[0].features)
            while self._pending and rows + len(self._pending[0].features) <= self._max_rows:
                slot = self._pending.popleft()
                rows += len(slot.features)
                batch.append(slot)
        started = time.perf_counter()
        try:
            features = batch[0].features if len(batch) == 1 else np.concatenate([s.features for s in batch])
            scores = self._score(features)
        except Exception as e:
            for slot in batch:
                slot.error = e
        else:
            offset = 0
            for slot in batch:
                end = offset + len(slot.features)
                slot.result = scores[offset:end]
                offset = end
            if self._on_batch is not None:
                self._on_batch(rows, len(batch), time.perf_counter() - started)
        with self._lock:
            nxt = self._pending[0] if self._pending else None
            if nxt is None:
                self._running = False
            else:
                nxt.lead = True
        for slot in batch[1:]:  # batch[0] is the caller running this pass
            slot.wake.release()
        if nxt is not None:
            nxt.wake.release()


class _Worker:
    """The thread that runs every forward pass; results go back with ``call_soon_threadsafe``.

    Leaner than ``loop.run_in_executor``: one queue put and one loop wake-up per pass, no
    concurrent.futures.Future chained to an asyncio one.
    """

    def __init__(self, score: Score, initializer: Callable[[], None] | None) -> None:
        self._score = score
        self._initializer = initializer
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="kfkit-infer", daemon=True)
        self._thread.start()

    def run(self, loop: asyncio.AbstractEventLoop, features: np.ndarray) -> asyncio.Future:
        """Queue a pass; the returned future (of ``loop``) gets its scores."""
        future = loop.create_future()
        self._jobs.put((features, loop, future))
        return future

    def run_sync(self, features: np.ndarray) -> np.ndarray:
        """Queue a pass and wait for it (outside an event loop)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((features, None, future))
        return future.result()

    def stop(self) -> None:
        """End the thread after the passes already queued."""
        self._jobs.put(None)

    def _main(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (job := self._jobs.get()) is not None:
            features, loop, future = job
            try:
                result, error = self._score(features), None
            except Exception as e:
                result, error = None, e
            if loop is None:
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
                continue
            try:
                loop.call_soon_threadsafe(_deliver, future, result, error)
            except RuntimeError:  # the loop closed meanwhile: no one is waiting
                continue


def _deliver(future: asyncio.Future, result: np.ndarray | None, error: Exception | None) -> None:
    if future.done():  # cancelled: the request went away
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
