"""Ground truth arriving late (``POST /v1/feedback``): labels joined to logged predictions by request id.

Rolling accuracy, precision and recall at the model's threshold, ROC-AUC and PR-AUC (average precision)
over the last ``performance_window`` labelled rows; a metric below its floor (after
``performance_min_labels`` labels) asks for an ``org.kfkit.drift.performance`` event, at most once per
``performance_window`` new labels while it stays below.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.serving.drift.settings import DriftSettings
from kfkit.serving.messages import json_kind

__all__ = ["Feedback", "rolling_metrics", "parse_feedback"]

MAX_LABELS_PER_POST = 100_000
_UNKNOWN_REPORTED = 20


def parse_feedback(payload: Any) -> list[tuple[str, list[int]]]:
    """``{"id", "label"}`` or ``{"labels": [{"id", "label"}, ...]}`` to (id, labels) pairs.

    A label is 0 or 1, or a list of them for a multi-row request (one per row).

    Raises:
        InvalidInput: the body is neither shape, or an id or label is not valid (the message names which).
    """
    if isinstance(payload, dict) and "labels" in payload:
        items = payload["labels"]
        if not isinstance(items, list) or not items:
            raise InvalidInput(f'"labels" must be a non-empty list of {{"id", "label"}}, not {json_kind(items)}')
    elif isinstance(payload, dict) and "id" in payload:
        items = [payload]
    else:
        raise InvalidInput('send {"id": "<ce-id>", "label": 0|1} or {"labels": [{"id": ..., "label": ...}, ...]}')
    if len(items) > MAX_LABELS_PER_POST:
        raise InvalidInput(f"{len(items)} labels in one request; send at most {MAX_LABELS_PER_POST} per POST")
    out = []
    for i, item in enumerate(items):
        where = f"labels[{i}]" if len(items) > 1 or "labels" in payload else "body"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} is {json_kind(item)}, not an object with id and label")
        event_id, label = item.get("id"), item.get("label")
        if not isinstance(event_id, str) or not event_id:
            raise InvalidInput(f'{where}: "id" must be the request\'s ce-id (a non-empty string)')
        labels = label if isinstance(label, list) else [label]
        if not labels or not all(type(v) is int and v in (0, 1) for v in labels):
            raise InvalidInput(f'{where}: "label" must be 0 or 1 (or a list of them, one per row), got {label!r:.60}')
        out.append((event_id, labels))
    return out


class Feedback:
    """Logged predictions by id (bounded), labelled rows (rolling), and the floors check."""

    def __init__(self, settings: DriftSettings, threshold: float, *, capacity: int = 100_000) -> None:
        """Keep up to ``capacity`` predictions waiting for their labels; the oldest go first."""
        self.settings, self.threshold, self.capacity = settings, threshold, capacity
        self.predictions: OrderedDict[str, np.ndarray] = OrderedDict()
        self.labelled: deque[tuple[float, int]] = deque(maxlen=settings.performance_window)
        self.counts = {"joined": 0, "unknown": 0, "duplicate": 0, "mismatched": 0}
        self.metrics: dict[str, float | None] = {}
        self.below: list[str] = []
        self.joined_at_last_event: int | None = None
        self._done: OrderedDict[str, None] = OrderedDict()  # ids already labelled: a repeat is a duplicate
        self.times: deque[float] = deque(maxlen=settings.performance_window)

    def remember(self, event_id: str, probabilities: np.ndarray) -> None:
        """Keep a logged prediction until its label comes (or it is pushed out)."""
        self.predictions[event_id] = probabilities
        if len(self.predictions) > self.capacity:
            self.predictions.popitem(last=False)

    def add(self, labels: list[tuple[str, list[int]]], now: float) -> dict[str, Any]:
        """Join labels to predictions and update the rolling metrics; the answer to the POST."""
        joined, unknown, duplicate = 0, [], 0
        for event_id, values in labels:
            probabilities = self.predictions.get(event_id)
            if probabilities is None:
                if event_id in self._done:
                    duplicate += 1
                else:
                    unknown.append(event_id)
                continue
            if len(values) == 1 and probabilities.size > 1:
                values = values * probabilities.size
            if len(values) != probabilities.size:
                self.counts["mismatched"] += 1
                unknown.append(event_id)
                continue
            del self.predictions[event_id]  # a label joins once
            self._done[event_id] = None
            if len(self._done) > self.capacity:
                self._done.popitem(last=False)
            for p, y in zip(probabilities.tolist(), values, strict=True):
                self.labelled.append((p, y))
                self.times.append(now)
            joined += len(values)
        self.counts["joined"] += joined
        self.counts["unknown"] += len(unknown)
        self.counts["duplicate"] += duplicate
        self.metrics = rolling_metrics(self.labelled, self.threshold)
        return {
            "joined": joined,
            "unknown": len(unknown),
            "unknown_ids": unknown[:_UNKNOWN_REPORTED],
            "duplicate": duplicate,
            "labelled_rows": len(self.labelled),
            "metrics": self.metrics,
        }

    def breach(self) -> list[str] | None:
        """Metrics below their floors, when an event is due now (None: no event)."""
        if len(self.labelled) < self.settings.performance_min_labels:
            return None
        below = [
            m
            for m, floor in self.settings.performance_floors.items()
            if self.metrics.get(m) is not None and self.metrics[m] < floor
        ]
        self.below = below
        if not below:
            self.joined_at_last_event = None  # recovered: the next drop raises an event at once
            return None
        total, last = self.counts["joined"], self.joined_at_last_event
        if last is not None and total - last < self.settings.performance_window:
            return None
        self.joined_at_last_event = total
        return below

    def span(self) -> tuple[float, float]:
        """Arrival times of the oldest and newest labels in the rolling window."""
        return (self.times[0], self.times[-1]) if self.times else (0.0, 0.0)


def rolling_metrics(labelled: Any, threshold: float) -> dict[str, float | None]:
    """accuracy, precision, recall (at ``threshold``), roc_auc, pr_auc of (probability, label) pairs.

    A metric that is undefined on these rows (recall without positives, AUCs with one class) is None.
    """
    if not labelled:
        return {}
    pairs = np.asarray(labelled, dtype=np.float64)
    p, y = pairs[:, 0], pairs[:, 1].astype(np.int64)
    predicted = p >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    positives, called = int(y.sum()), int(predicted.sum())
    out: dict[str, float | None] = {
        "accuracy": float(np.mean(predicted == (y == 1))),
        "precision": tp / called if called else None,
        "recall": tp / positives if positives else None,
        "roc_auc": None,
        "pr_auc": None,
    }
    if 0 < positives < y.size:
        out["roc_auc"] = _roc_auc(p, y)
        out["pr_auc"] = _average_precision(p, y)
    return out


def _roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney U over positives and negatives, ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(p)
    positives = int(y.sum())
    negatives = y.size - positives
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_precision(p: np.ndarray, y: np.ndarray) -> float:
    """Average precision (scikit-learn's definition): precision at each threshold weighted by the recall step."""
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tps = np.cumsum(y)[distinct]
    precision = tps / (distinct + 1)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
