"""The retrain trigger: drift events in, decisions and retraining runs out, every firing in the audit trail.

:class:`Trigger` ties the pieces together: :func:`~kfkit.retrain.events.parse_drift_event` checks an event,
:class:`~kfkit.retrain.policy.RetrainPolicy` decides, a launcher (:mod:`kfkit.retrain.launch`) starts the
run, and :class:`~kfkit.retrain.audit.RetrainAudit` records why it fired and how the run ended. Its state
(remembered event ids, window history, cooldown, runs) is saved after every change, so a restarted trigger
neither retrains twice for one burst nor forgets a cooldown.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import InvalidInput
from kfkit.retrain.audit import RetrainAudit, audit_path, utc_now
from kfkit.retrain.events import DriftEvent, parse_drift_event
from kfkit.retrain.launch import KfpLauncher, LocalLauncher, RunRecord, production_version
from kfkit.retrain.policy import Decision, RetrainPolicy

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["Trigger", "STATE_FILE"]

STATE_FILE = "trigger-state.json"
_KEEP_DECISIONS = 200
_KEEP_RUNS = 50


class Trigger:
    """Receives drift events for one model and starts at most one retraining run per burst."""

    def __init__(
        self,
        cfg: KfkitConfig,
        overrides: list[str],
        state_dir: str | Path,
        *,
        launcher: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build the trigger for ``cfg`` (composed from ``overrides``), keeping its state in ``state_dir``.

        Args:
            cfg: The config; ``retrain.*`` sets the policy and the launch, ``model`` and ``registry`` what
                is retrained and where the audit goes.
            overrides: The overrides ``cfg`` came from; a retrain run starts from the same ones.
            state_dir: Folder for the state file, run logs and (S3 registries) the audit file.
            launcher: Starts runs (default: a KFP launcher when retrain.kfp_host is set, else a local one).
            clock: Seconds since the epoch (tests pass a fake one).

        Raises:
            ConfigError: a retrain.* value is out of bounds.
        """
        self.cfg = cfg
        self.model = cfg.model.name
        self.state_dir = Path(state_dir)
        self.policy = RetrainPolicy.from_config(cfg.retrain)
        self.audit = RetrainAudit(audit_path(cfg.registry.uri, self.model, self.state_dir))
        if launcher is None:
            launcher = (KfpLauncher if cfg.retrain.kfp_host else LocalLauncher)(cfg, overrides, self.state_dir)
        self.launcher = launcher
        self._clock = clock
        self._lock = threading.RLock()  # a launcher may report a failed start from inside start()
        self._decisions: deque[dict[str, Any]] = deque(maxlen=_KEEP_DECISIONS)
        self._runs: list[RunRecord] = []
        self._running: RunRecord | None = None
        self._events = {"received": 0, "accepted": 0, "duplicate": 0, "rejected": 0}
        self._features: dict[str, list[str]] = {}
        self._load()

    # ---- events ----------------------------------------------------------------------------------------------

    def handle(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Take one drift event; the answer says what was decided (a duplicate is answered as accepted).

        Raises:
            InvalidInput: the event is malformed (4xx, counted as rejected), or about another model (422).
        """
        with self._lock:
            self._events["received"] += 1
        try:
            event = parse_drift_event(headers, body)
            if event.model and event.model != self.model:
                raise InvalidInput(
                    f"drift event {event.id!r} is about model {event.model!r}; this trigger retrains {self.model!r} "
                    "(send it to that model's trigger)",
                    status_code=422,
                )
        except InvalidInput:
            with self._lock:
                self._events["rejected"] += 1
            raise
        with self._lock:
            decision = self.policy.observe(event, now=self._clock(), running=self._running is not None)
            self._events["duplicate" if decision.action == "duplicate" else "accepted"] += 1
            if decision.action != "duplicate":
                self._decisions.append(decision.to_dict())
            record = self._fire(decision, event) if decision.fires else None
            self._save()
        answer: dict[str, Any] = {"action": decision.action, "reason": decision.reason}
        if record is not None:
            answer["run"] = record.run
        return answer

    def _fire(self, decision: Decision, event: DriftEvent) -> RunRecord:
        record = RunRecord(
            run=self._next_run(), reason=decision.reason, decision=decision.to_dict(), mode=self.launcher.mode
        )
        self.audit.append(
            {
                "action": "retrain",
                "model": self.model,
                "run": record.run,
                "mode": record.mode,
                "reason": decision.reason,
                "window": event.window if event.window is not None else decision.event.get("window"),
                "stream": decision.stream,
                "drifted_windows": decision.drifted_windows,
                "windows": decision.windows,
                "features": event.drifted_features,
                "statistics": self._statistics(event),
                "event": {
                    k: getattr(event, k) for k in ("id", "source", "type", "subject", "rows", "start", "end", "report")
                },
                "policy": {
                    "min_drifted": self.policy.k,
                    "window_span": self.policy.m,
                    "cooldown_s": self.policy.cooldown_s,
                },
                "dry_run": self.cfg.retrain.dry_run,
            }
        )
        self._runs = [*self._runs, record][-_KEEP_RUNS:]
        if self.cfg.retrain.dry_run:
            record.state, record.finished, record.gate = "dry_run", utc_now(), "retrain.dry_run=true: nothing started"
            return record
        self._running = record
        self.launcher.start(record, self._finished)
        return record

    def _finished(self, record: RunRecord) -> None:
        with self._lock:
            if self._running is record:
                self._running = None
            self.audit.append(
                {
                    "action": "retrain_finished",
                    "model": self.model,
                    "run": record.run,
                    "state": record.state,
                    "version": record.version,
                    "gate": record.gate,
                    "production_before": record.production_before,
                    "production_after": record.production_after,
                    "log": record.log,
                    "kfp_run_id": record.kfp_run_id,
                }
            )
            self._save()

    def _next_run(self) -> int:
        return max((r.run for r in self._runs), default=self._run_counter) + 1

    def _statistics(self, event: DriftEvent) -> dict[str, Any]:
        """The test's numbers, per feature by name where the version's feature names are known."""
        stats = event.statistics()
        names = self._feature_names(event.version)
        per_feature = {}
        for i, name in enumerate(names):
            p_val = event.p_val[i] if isinstance(event.p_val, list) and i < len(event.p_val) else None
            distance = event.distance[i] if isinstance(event.distance, list) and i < len(event.distance) else None
            if name in event.drifted_features or (
                p_val is not None and event.threshold is not None and p_val < event.threshold
            ):
                per_feature[name] = {"p_val": p_val, "distance": distance}
        if per_feature:
            stats["drifted"] = per_feature
        return stats

    def _feature_names(self, version: str) -> list[str]:
        """Feature names of ``version`` (its model.json), or [] if it cannot be read."""
        if not version:
            return []
        if version not in self._features:
            from kfkit.errors import KfkitError
            from kfkit.registry import open_registry

            names: list[str] = []
            try:
                registry = open_registry(
                    self.cfg.registry.uri, endpoint=self.cfg.registry.endpoint, region=self.cfg.registry.region
                )
                folder = registry.fetch(self.model, version)
                names = [str(n) for n in json.loads((folder / "model.json").read_text()).get("feature_names", [])]
            except (KfkitError, OSError, ValueError):
                pass
            self._features = {**dict(list(self._features.items())[-7:]), version: names}
        return self._features[version]

    # ---- status and state ------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/retrain/status`` answers: the policy, counts, streams, decisions and runs."""
        production = production_version(self.cfg)  # a registry read: not under the lock events need
        with self._lock:
            until = self.policy.cooldown_until()
            return {
                "model": self.model,
                "mode": self.launcher.mode,
                "dry_run": self.cfg.retrain.dry_run,
                "policy": {
                    "min_drifted": self.policy.k,
                    "window_span": self.policy.m,
                    "cooldown_s": self.policy.cooldown_s,
                    "cooldown_until": utc_now(until) if until is not None and until > self._clock() else None,
                    "dedup_capacity": self.policy.dedup_capacity,
                },
                "events": dict(self._events),
                "decisions_by_action": dict(self.policy.counts),
                "streams": self.policy.streams(),
                "running": self._running.to_dict() if self._running else None,
                "production": production,
                "runs": [r.to_dict() for r in self._runs],
                "decisions": list(self._decisions)[-50:],
                "audit": str(self.audit.path),
            }

    def stop(self) -> None:
        """Stop a run in progress (it is recorded as stopped)."""
        self.launcher.stop()

    def _save(self) -> None:
        state = {
            "model": self.model,
            "policy": self.policy.to_state(),
            "runs": [r.to_dict() for r in self._runs],
            "run_counter": max((r.run for r in self._runs), default=self._run_counter),
            "events": self._events,
            "decisions": list(self._decisions),
        }
        path = self.state_dir / STATE_FILE
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state, allow_nan=False))
        os.replace(temporary, path)

    def _load(self) -> None:
        self._run_counter = 0
        try:
            state = json.loads((self.state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # a damaged state file: start afresh rather than refuse to run (the audit keeps the history)
        if not isinstance(state, dict) or state.get("model") != self.model:
            return
        self.policy.load_state(state.get("policy", {}))
        self._run_counter = int(state.get("run_counter", 0) or 0)
        for raw in state.get("runs", [])[-_KEEP_RUNS:]:
            try:
                record = RunRecord(**raw)
            except TypeError:
                continue
            if record.state == "running":
                record.state, record.finished = "stopped", utc_now()
                record.gate = "the trigger restarted while this run was going; see its log"
            self._runs.append(record)
        for key, value in state.get("events", {}).items():
            if key in self._events and isinstance(value, int):
                self._events[key] = value
        self._decisions.extend(d for d in state.get("decisions", []) if isinstance(d, dict))
