"""The retrain audit trail: one JSON line per retrain decision and outcome, beside the registry's audit log.

For a ``file://`` registry it is ``<registry>/<model>/_retrain_audit.jsonl``, next to the registry's own
``_audit.jsonl`` (registry gc leaves both alone); for an S3 registry it lives in the trigger's state folder.
Lines are appended under an exclusive lock and flushed to disk, so two triggers never interleave a line.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from kfkit.errors import ConfigError

__all__ = ["RetrainAudit", "audit_path", "AUDIT_FILE", "utc_now"]

AUDIT_FILE = "_retrain_audit.jsonl"


def utc_now(at: float | None = None) -> str:
    """ISO 8601 UTC time, as the registry's audit log writes it."""
    when = datetime.datetime.now(datetime.UTC) if at is None else datetime.datetime.fromtimestamp(at, datetime.UTC)
    return when.isoformat().replace("+00:00", "Z")


def audit_path(registry_uri: str, model: str, state_dir: Path) -> Path:
    """Where the retrain audit of ``model`` goes: beside the registry's audit for file://, else ``state_dir``."""
    from kfkit.registry import root_path

    if registry_uri.startswith("file://") or "://" not in registry_uri:
        return root_path(registry_uri) / model / AUDIT_FILE
    return state_dir / AUDIT_FILE


class RetrainAudit:
    """An append-only JSON-lines file of retrain records."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (a ``time`` is added when it has none).

        Raises:
            ConfigError: the file cannot be written (the message names it).
        """
        line = json.dumps({"time": utc_now(), **record}, sort_keys=True, allow_nan=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise ConfigError(f"cannot write the retrain audit {self.path}: {e}") from e

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The records, oldest first (the last ``limit`` of them); unreadable lines are skipped."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines[-limit:] if limit else lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records
