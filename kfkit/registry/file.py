"""The ``file://`` registry backend: versions are folders that appear by one atomic rename.

Layout under the root: ``<name>/<version>/`` (files + manifest.json), ``<name>/_aliases/<alias>.json``,
``<name>/_audit.jsonl`` (one JSON event per line, appended under a lock), ``<name>/.lock`` (flock for
alias updates) and ``<name>/.staging-*`` (a publish in progress; never a version to a reader).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kfkit.errors import RegistryError
from kfkit.registry.base import MANIFEST_FILE, FileDigests, Registry, verify_folder

__all__ = ["FileRegistry"]

_STAGING_PREFIX = ".staging-"
_ALIASES = "_aliases"
_AUDIT = "_audit.jsonl"
_LOCK = ".lock"


class FileRegistry(Registry):
    """Registry in a local (or mounted) folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        super().__init__(self.root.as_uri())

    def version_uri(self, name: str, version: str) -> str:
        """``file:///…/<name>/<version>``."""
        return (self.root / name / version).as_uri()

    def _local_path(self, name: str, version: str) -> str:
        return str(self.root / name / version)

    def _names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]

    def _committed(self, name: str) -> list[str]:
        return [v for v in self._taken(name) if (self.root / name / v / MANIFEST_FILE).is_file()]

    def _taken(self, name: str) -> list[str]:
        folder = self.root / name
        return [p.name for p in folder.iterdir() if p.name.isdigit() and p.is_dir()] if folder.is_dir() else []

    def _manifest_bytes(self, name: str, version: str) -> bytes | None:
        try:
            return (self.root / name / version / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RegistryError(f"cannot read {self.root / name / version / MANIFEST_FILE}: {e}") from e

    @contextlib.contextmanager
    def _staged(self, source: Path, name: str) -> Iterator[Path]:
        # The copy lives beside the versions: same file system, so the final rename is atomic.
        staging = self.root / name / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            (self.root / name).mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, staging, symlinks=True)
            yield staging
        except OSError as e:
            raise RegistryError(f"cannot publish {name!r} to {self.uri}: {e}") from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, name: str, version: str, staged: Path, files: FileDigests, manifest: bytes) -> bool:  # noqa: ARG002
        target = self.root / name / version
        try:
            (staged / MANIFEST_FILE).write_bytes(manifest)
            with open(staged / MANIFEST_FILE, "rb") as f:
                os.fsync(f.fileno())
            # rename(2) of a folder onto an existing non-empty folder fails, so of two publishers of one
            # version exactly one wins, and readers see either no folder or the complete one.
            os.rename(staged, target)
            return True
        except OSError as e:
            if target.exists():
                return False
            raise RegistryError(f"cannot publish {name} version {version} to {self.uri}: {e}") from e

    def _materialize(self, name: str, version: str, manifest: dict[str, Any], dest: Path | None) -> Path:
        folder = self.root / name / version
        verify_folder(folder, manifest)
        if dest is None:
            return folder
        shutil.copytree(folder, dest)
        verify_folder(dest, manifest)  # what was copied is what was checked
        return dest

    def verify(self, name: str, ref: str | int) -> dict[str, Any]:
        """Check every file of a version in place (no copy) and return the manifest."""
        version = self.resolve_ref(name, ref)
        manifest = self.manifest(name, version)
        verify_folder(self.root / name / version, manifest)
        return manifest

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        folder = self.root / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / _LOCK, "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes, even if we die
                yield
        except OSError as e:
            raise RegistryError(f"cannot update {self.uri}/{name}: {e}") from e

    def _update_alias(
        self, name: str, alias: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        with self._locked(name):
            path = self.root / name / _ALIASES / f"{alias}.json"
            old = self._read_json(path)
            new = change(old)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{alias}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)  # readers see the old record or the new one, never half of one
            return old, new

    def _alias_records(self, name: str) -> dict[str, dict[str, Any]]:
        folder = self.root / name / _ALIASES
        if not folder.is_dir():
            return {}
        records = {p.stem: self._read_json(p) for p in folder.glob("*.json")}
        return {k: v for k, v in records.items() if v is not None}

    def _append_audit(self, name: str, event: dict[str, Any]) -> None:
        line = (json.dumps(event, sort_keys=True) + "\n").encode("utf-8")
        with self._locked(name):
            fd = os.open(self.root / name / _AUDIT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _audit_events(self, name: str) -> list[dict[str, Any]]:
        path = self.root / name / _AUDIT
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as e:
            raise RegistryError(f"{path} is unreadable: {e}") from e

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RegistryError(f"{path} is unreadable: {e}") from e
