"""Stopping a background thread that works through a queue: finish what is queued, then stop, within a time."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

__all__ = ["drain_and_stop"]


def drain_and_stop(
    work: queue.Queue, thread: threading.Thread, timeout_s: float, *, busy: Callable[[], bool] = lambda: False
) -> None:
    """Wait until ``work`` is done (and ``busy()`` is false), then post the ``None`` that ends ``thread``.

    Gives up waiting after ``timeout_s``; the thread is a daemon, so what it still holds then is lost, which
    is what a deadline on shutdown means. The thread's loop must return when it takes ``None`` off the queue.
    """
    deadline = time.monotonic() + timeout_s
    while (work.unfinished_tasks or busy()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        work.put_nowait(None)
    except queue.Full:
        pass
    thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
