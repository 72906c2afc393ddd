"""The open test window: rows and logged probabilities in preallocated arrays, closed by count or by time.

A window closes when it holds ``window_size`` rows, or when ``window_seconds`` have passed since it
opened and it holds at least ``min_window_rows``; a multi-row request may fill one window and start the
next. With ``overlap`` the newest rows of a closed window open the next one (a sliding window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClosedWindow", "WindowBuffer"]


@dataclass(slots=True)
class ClosedWindow:
    """A window handed to the test worker: copies, so ingestion goes on at once."""

    index: int
    """Window number, from 1, unique for the life of the state directory."""
    rows: np.ndarray
    """float32 ``[n, n_features]``."""
    probabilities: np.ndarray
    """float32 ``[m]``: logged response probabilities received while the window was open."""
    start: float
    """Arrival time (Unix seconds) of the first row."""
    end: float
    """Arrival time of the last row."""
    reason: str
    """Why it closed: size or time."""


class WindowBuffer:
    """Rows in, closed windows out (returned by :meth:`add` and :meth:`tick`); no locking: one thread uses it."""

    def __init__(
        self, n_features: int, *, size: int, seconds: float, min_rows: int, overlap: float, next_index: int = 1
    ) -> None:
        """An empty window of ``size`` rows; ``seconds`` 0 makes count windows only."""
        self.size, self.seconds, self.min_rows = size, seconds, min_rows
        self.carry = int(overlap * size)
        self.index = next_index
        self._rows = np.empty((size, n_features), dtype=np.float32)
        self._times = np.empty(size, dtype=np.float64)
        self._probabilities = np.empty(2 * size, dtype=np.float32)
        self.n = 0
        self.n_probabilities = 0
        self.opened_at: float | None = None

    def add(self, rows: np.ndarray, now: float) -> list[ClosedWindow]:
        """Append request rows (float32 ``[k, n_features]``); the windows they filled, if any."""
        closed = []
        start, total = 0, rows.shape[0]
        while start < total:
            if self.opened_at is None:
                self.opened_at = now
            take = min(total - start, self.size - self.n)
            self._rows[self.n : self.n + take] = rows[start : start + take]
            self._times[self.n : self.n + take] = now
            self.n += take
            start += take
            if self.n == self.size:
                closed.append(self._close("size", now))
        return closed

    def add_probabilities(self, probabilities: np.ndarray) -> None:
        """Append logged probabilities; beyond twice the window size the oldest are kept and the rest dropped."""
        take = min(probabilities.size, self._probabilities.size - self.n_probabilities)
        self._probabilities[self.n_probabilities : self.n_probabilities + take] = probabilities[:take]
        self.n_probabilities += take

    def tick(self, now: float) -> ClosedWindow | None:
        """Close the window if its time is up and it holds enough rows (called every second or so)."""
        if self.seconds and self.opened_at is not None and self.n >= self.min_rows:
            if now - self.opened_at >= self.seconds:
                return self._close("time", now)
        return None

    def _close(self, reason: str, now: float) -> ClosedWindow:
        n, m = self.n, self.n_probabilities
        window = ClosedWindow(
            index=self.index,
            rows=self._rows[:n].copy(),
            probabilities=self._probabilities[:m].copy(),
            start=float(self._times[0]),
            end=float(self._times[n - 1]),
            reason=reason,
        )
        self.index += 1
        keep = min(self.carry, n)
        if keep:
            self._rows[:keep] = self._rows[n - keep : n]
            self._times[:keep] = self._times[n - keep : n]
        keep_probabilities = int(m * keep / n) if n else 0
        if keep_probabilities:
            self._probabilities[:keep_probabilities] = self._probabilities[m - keep_probabilities : m]
        self.n, self.n_probabilities = keep, keep_probabilities
        self.opened_at = now if keep else None
        return window

    # State across restarts (state.py writes these as .npy and JSON, never a pickle).
    def snapshot(self) -> dict:
        """The open window: rows, their times, probabilities, and the window counters."""
        return {
            "rows": self._rows[: self.n].copy(),
            "times": self._times[: self.n].copy(),
            "probabilities": self._probabilities[: self.n_probabilities].copy(),
            "index": self.index,
            "opened_at": self.opened_at,
        }

    def restore(self, rows: np.ndarray, times: np.ndarray, probabilities: np.ndarray, index: int, opened_at) -> None:
        """Reload a saved open window (rows beyond the size, from a bigger earlier setting, are dropped)."""
        n = min(rows.shape[0], self.size - 1)
        self._rows[:n] = rows[rows.shape[0] - n :]
        self._times[:n] = times[times.shape[0] - n :]
        m = min(probabilities.size, self._probabilities.size)
        self._probabilities[:m] = probabilities[:m]
        self.n, self.n_probabilities, self.index = n, m, index
        self.opened_at = opened_at if n else None
