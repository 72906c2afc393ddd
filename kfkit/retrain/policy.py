"""When drift events start a retrain: hysteresis (K of the last M windows), one retrain per burst, a cooldown.

A drift test at p=0.05 run hourly on an unchanged stream raises about 1.2 false alarms a day. So a single
drifted window never retrains. Each stream of windows (one per model version and kind of drift) keeps the
drift flags of its latest ``window_span`` windows, by window index, with unreported windows counting as no
drift (a detector may send drifted windows only; performance events count in arrival order). A retrain
starts when ``min_drifted`` of them drifted, and then the stream is *latched*: the rest of that burst starts
nothing more until the count falls below ``min_drifted`` again. No retrain starts within ``cooldown_s`` of
the previous one (a burst still going when the cooldown ends retrains then), nor while one is running.
Redelivered events (same source and id) are counted once. Everything is bounded: a fixed number of
remembered ids, streams and windows per stream.

Pure logic, no I/O: :class:`RetrainPolicy` is fed events and a clock, and answers a :class:`Decision`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import RetrainConfig
    from kfkit.retrain.events import DriftEvent

__all__ = ["Decision", "RetrainPolicy", "check_retrain", "ACTIONS"]

ACTIONS = ("retrain", "no_drift", "hold", "burst", "running", "cooldown", "stale", "duplicate")
"""What a decision can be: ``retrain`` starts a run; the others say why not."""
MAX_STREAMS = 64
"""Streams (model version x kind) kept; the least recently updated is forgotten first."""


def check_retrain(retrain: RetrainConfig) -> None:
    """Check the trigger's settings, naming the key, the value and the bound.

    Raises:
        ConfigError: a value is out of bounds.
    """
    if retrain.window_span < 1:
        raise ConfigError(f"retrain.window_span={retrain.window_span} must be at least 1")
    if not 1 <= retrain.min_drifted <= retrain.window_span:
        raise ConfigError(
            f"retrain.min_drifted={retrain.min_drifted} must be between 1 and retrain.window_span="
            f"{retrain.window_span} (drift in K of the last M windows)"
        )
    for key in ("cooldown_s", "dedup_capacity", "timeout_s", "kfp_poll_s", "startup_timeout_s"):
        if getattr(retrain, key) < (0 if key == "cooldown_s" else 1):
            raise ConfigError(
                f"retrain.{key}={getattr(retrain, key)} must be {'>= 0' if key == 'cooldown_s' else '>= 1'}"
            )
    for key in ("port", "detector_port"):
        if not 0 < getattr(retrain, key) < 65536:
            raise ConfigError(f"retrain.{key}={getattr(retrain, key)} is not a TCP port (1-65535)")
    if (retrain.kfp_pipeline_id is None) != (retrain.kfp_version_id is None):
        raise ConfigError("retrain.kfp_pipeline_id and retrain.kfp_version_id go together: set both or neither")


@dataclass
class Decision:
    """What the trigger made of one event, and why."""

    action: str
    """One of :data:`ACTIONS`."""
    reason: str
    """One sentence a person reads (the audit record's ``reason`` when ``action`` is retrain)."""
    time: float
    """When it was decided (seconds since the epoch)."""
    event: dict[str, Any] = field(default_factory=dict)
    """The event's id, source, subject, kind, window, is_drift and drifted features."""
    stream: str = ""
    """``<subject> <kind>``: the stream of windows the event belongs to."""
    drifted_windows: list[int] = field(default_factory=list)
    """Drifted window indices among the latest ``window_span`` of the stream."""
    windows: list[int] = field(default_factory=list)
    """The window indices looked at (the latest ``window_span``)."""

    @property
    def fires(self) -> bool:
        """Whether this decision starts a retrain."""
        return self.action == "retrain"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass
class _Stream:
    latest: int | None = None
    flags: dict[int, bool] = field(default_factory=dict)
    latched: bool = False
    arrivals: int = 0


class RetrainPolicy:
    """Hysteresis, burst latch, cooldown and deduplication over a stream of drift events.

    Not thread-safe: the trigger calls it under its lock.
    """

    def __init__(self, *, min_drifted: int, window_span: int, cooldown_s: float, dedup_capacity: int) -> None:
        """Set K (``min_drifted``) of M (``window_span``), the cooldown and how many event ids to remember."""
        self.k = min_drifted
        self.m = window_span
        self.cooldown_s = cooldown_s
        self.dedup_capacity = dedup_capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self.last_retrain: float | None = None
        """When the latest retrain was started (seconds since the epoch)."""
        self.counts = {action: 0 for action in ACTIONS}
        """Decisions made, by action."""

    @classmethod
    def from_config(cls, retrain: RetrainConfig) -> RetrainPolicy:
        """The policy ``retrain.*`` describes (checked)."""
        check_retrain(retrain)
        return cls(
            min_drifted=retrain.min_drifted,
            window_span=retrain.window_span,
            cooldown_s=retrain.cooldown_s,
            dedup_capacity=retrain.dedup_capacity,
        )

    def cooldown_until(self) -> float | None:
        """When the cooldown ends (None: not cooling down since no retrain started yet)."""
        return None if self.last_retrain is None else self.last_retrain + self.cooldown_s

    def observe(self, event: DriftEvent, *, now: float, running: bool = False) -> Decision:
        """Record one event and decide whether it starts a retrain.

        Args:
            event: The checked event.
            now: The current time (seconds since the epoch).
            running: Whether a retrain run is in progress (then none starts; the burst is answered by it).
        """
        decision = self._observe(event, now=now, running=running)
        self.counts[decision.action] += 1
        return decision

    def _observe(self, event: DriftEvent, *, now: float, running: bool) -> Decision:
        summary = {
            "id": event.id,
            "source": event.source,
            "subject": event.subject,
            "kind": event.kind,
            "window": event.window,
            "is_drift": event.is_drift,
            "drifted_features": event.drifted_features,
        }
        key = (event.source, event.id)
        if key in self._seen:
            self._seen.move_to_end(key)
            return Decision("duplicate", f"event {event.id!r} from {event.source} was already counted", now, summary)
        self._seen[key] = None
        while len(self._seen) > self.dedup_capacity:
            self._seen.popitem(last=False)

        name = f"{event.subject} {event.kind}"
        stream = self._stream(name)
        # A performance event carries the open data window's index, which several of them can share while
        # labels come in without traffic: each covers its own labelled rows, so they count in arrival order.
        index = event.window if event.window is not None and event.kind == "data" else stream.arrivals
        stream.arrivals = max(stream.arrivals, index + 1)
        summary["window"] = index
        if stream.latest is not None and index <= stream.latest - self.m:
            return Decision(
                "stale",
                f"window {index} is older than the latest {self.m} windows of {name} "
                f"(latest {stream.latest}); not counted",
                now,
                summary,
                name,
            )
        self._record(stream, index, event.is_drift)
        looked_at = list(range(stream.latest - self.m + 1, stream.latest + 1))
        drifted = [w for w in looked_at if stream.flags.get(w)]
        evidence = {"stream": name, "drifted_windows": drifted, "windows": [w for w in looked_at if w >= 0]}
        tally = f"drift in {len(drifted)} of the last {self.m} windows of {name}"
        if not event.is_drift:
            return Decision("no_drift", f"window {index}: no drift ({tally})", now, summary, **evidence)
        if len(drifted) < self.k:
            return Decision(
                "hold", f"window {index} drifted; {tally}, a retrain needs {self.k}", now, summary, **evidence
            )
        if stream.latched:
            return Decision(
                "burst",
                f"window {index} drifted; {tally}, but this burst has been answered by a "
                "retrain already (one per burst)",
                now,
                summary,
                **evidence,
            )
        if running:
            stream.latched = True
            return Decision(
                "running", f"{tally}; a retrain is running, and answers this burst", now, summary, **evidence
            )
        until = self.cooldown_until()
        if until is not None and now < until:
            return Decision(
                "cooldown",
                f"{tally}, but the last retrain started {now - self.last_retrain:.0f} s ago "
                f"(retrain.cooldown_s={self.cooldown_s:g}); it retrains after the cooldown if the "
                "drift goes on",
                now,
                summary,
                **evidence,
            )
        stream.latched = True
        self.last_retrain = now
        features = ", ".join(event.drifted_features) or "no feature named"
        reason = (
            f"drift in {len(drifted)} of the last {self.m} windows (windows {', '.join(map(str, drifted))}) of "
            f"{event.subject} ({event.kind}); window {index} drifted in {features}"
        )
        return Decision("retrain", reason, now, summary, **evidence)

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
            while len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        self._streams.move_to_end(name)
        return stream

    def _record(self, stream: _Stream, index: int, drifted: bool) -> None:
        """Set a window's flag; step the latest index forward, releasing the latch where the burst ended."""
        stream.flags[index] = drifted
        if stream.latest is None:
            stream.latest = index
        elif index > stream.latest:
            # Step through the windows in between (unreported: no drift) so a burst that ended there ends.
            for latest in range(max(stream.latest + 1, index - self.m), index + 1):
                if stream.latched and self._drifted(stream, latest) < self.k:
                    stream.latched = False
            stream.latest = index
        for old in [w for w in stream.flags if w <= stream.latest - self.m]:
            del stream.flags[old]
        if stream.latched and self._drifted(stream, stream.latest) < self.k:
            stream.latched = False

    def _drifted(self, stream: _Stream, latest: int) -> int:
        return sum(1 for w in range(latest - self.m + 1, latest + 1) if stream.flags.get(w))

    # ---- persistence: a restarted trigger keeps its history ----------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state (what :meth:`load_state` restores)."""
        return {
            "seen": [list(key) for key in self._seen],
            "streams": {
                name: {
                    "latest": s.latest,
                    "flags": {str(w): f for w, f in s.flags.items()},
                    "latched": s.latched,
                    "arrivals": s.arrivals,
                }
                for name, s in self._streams.items()
            },
            "last_retrain": self.last_retrain,
            "counts": dict(self.counts),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`to_state`'s output (unknown or malformed parts are skipped)."""
        for key in state.get("seen", [])[-self.dedup_capacity :]:
            if isinstance(key, list) and len(key) == 2:
                self._seen[(str(key[0]), str(key[1]))] = None
        for name, s in list(state.get("streams", {}).items())[-MAX_STREAMS:]:
            try:
                self._streams[name] = _Stream(
                    latest=None if s["latest"] is None else int(s["latest"]),
                    flags={int(w): bool(f) for w, f in s["flags"].items()},
                    latched=bool(s["latched"]),
                    arrivals=int(s.get("arrivals", 0)),
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
        last = state.get("last_retrain")
        self.last_retrain = float(last) if isinstance(last, int | float) else None
        for action, count in state.get("counts", {}).items():
            if action in self.counts and isinstance(count, int):
                self.counts[action] = count

    def streams(self) -> dict[str, dict[str, Any]]:
        """Each stream's latest window, drifted windows among the latest M, and whether its burst is latched."""
        return {
            name: {
                "latest_window": s.latest,
                "drifted_windows": sorted(w for w, f in s.flags.items() if f),
                "latched": s.latched,
            }
            for name, s in self._streams.items()
        }
