"""Staleness rules: which online rows are older than the view's TTL.

What serving does with them is ``features.stale_policy`` (kfkit.config.features.STALE_POLICIES): ``reject``
fails the request with a 404 naming the stale ids and their age; ``flag`` scores them and names them in the
response header ``kfkit-stale-entities``. Never a silent default value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["stale_ids"]


def stale_ids(
    ids: Sequence[Any], event_times: Sequence[datetime | None], *, ttl_s: int, now: datetime
) -> list[tuple[Any, float]]:
    """``(id, age in seconds)`` for each id whose row is older than ``ttl_s`` at ``now`` (none when ttl_s is 0).

    The online store keeps a row until it is overwritten (Feast's online reads ignore the TTL), so age is
    judged here, from the event time Feast stored with the row. Naive times are UTC (SQLite stores them so).
    """
    if ttl_s <= 0:
        return []
    stale = []
    for value, when in zip(ids, event_times, strict=True):
        if when is None:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        age = (now - when).total_seconds()
        if age > ttl_s:
            stale.append((value, age))
    return stale
