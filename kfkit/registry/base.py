"""The registry interface, and what its backends share: manifests, digests, numbering, aliases and audit.

A backend stores four kinds of things under ``<root>/<model name>/``:

- ``<version>/``: the version's files plus ``manifest.json`` (the commit marker: a version without one
  does not exist for readers). Nothing else lives there, so a storage URI of the folder is exactly the
  model, which is what KServe's storage initializer downloads.
- ``_aliases/<alias>.json``: which version an alias (staging, production) points at, and the versions
  it pointed at before (what ``rollback`` returns to).
- the audit log: one event per publish, promote and rollback (who, when, what, from -> to).
- backend bookkeeping (the S3 backend's version claims, the file backend's staging folders and lock).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfkit.errors import RegistryError, VersionNotFound
from kfkit.registry.manifest import (
    MANIFEST_FILE,
    FileDigests,
    build_manifest,
    parse_manifest,
    sha256_file,
    utc_now,
    verify_folder,
)

__all__ = [
    "Registry",
    "ModelVersion",
    "AuditEvent",
    "MANIFEST_FILE",
    "DEFAULT_ALIAS",
    "sha256_file",
    "verify_folder",
    "parse_manifest",
    "check_name",
    "check_version",
    "current_actor",
    "FileDigests",
]

DEFAULT_ALIAS = "production"
# Model names and aliases become URL path segments and Kubernetes names: DNS-1123 labels.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


@dataclass(frozen=True)
class ModelVersion:
    """One published version."""

    name: str
    version: str
    uri: str
    """Storage URI of the version folder: ``file:///…/<name>/<version>`` or ``s3://bucket/prefix/<name>/<version>/``
    (what ``kfkit serve --model-uri`` and an InferenceService's ``storageUri`` take)."""
    path: str = ""
    """Local folder of the version (file:// registries only; empty for s3://)."""
    created_at: str = ""
    """UTC time the version was committed (ISO 8601)."""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Facts recorded at publish time: metrics, threshold, lineage, gate decision."""


@dataclass(frozen=True)
class AuditEvent:
    """One line of a model's audit log."""

    time: str
    """UTC, ISO 8601 with microseconds."""
    actor: str
    """Who: $KFKIT_ACTOR, else user@host."""
    action: str
    """publish, promote or rollback."""
    model: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the log (``from``/``to`` keys)."""
        return {
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "model": self.model,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEvent:
        """Read one stored event."""
        return cls(time=data["time"], actor=data["actor"], action=data["action"], model=data["model"],
                   alias=data.get("alias"), from_version=data.get("from"), to_version=data.get("to"),
                   reason=data.get("reason", ""))  # fmt: skip


def current_actor() -> str:
    """Who is acting, for the audit log: ``$KFKIT_ACTOR`` (set it in CI and pipelines), else user@host."""
    if actor := os.environ.get("KFKIT_ACTOR"):
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def check_name(name: str, what: str = "model name") -> str:
    """Refuse names that cannot be a path segment and a Kubernetes name.

    Raises:
        RegistryError: naming the value and the rule.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 63:
        raise RegistryError(
            f"{what} {name!r} is not valid: use lower-case letters, digits and '-', at most 63 characters"
        )
    return name


def check_version(version: str | int) -> str:
    """A version is a positive integer without leading zeros; return it as text.

    Raises:
        RegistryError: naming the value.
    """
    text = str(version)
    if not _VERSION.fullmatch(text):
        raise RegistryError(f"version {version!r} is not valid: versions are positive integers (1, 2, 3 ...)")
    return text


def source_files(source_dir: str | Path) -> list[Path]:
    """The files to publish from ``source_dir`` (recursively), refusing an empty or unsafe folder.

    Raises:
        RegistryError: the folder is missing or empty, or already holds a manifest.json.
    """
    source = Path(source_dir)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    if not files:
        raise RegistryError(f"nothing to publish: {source} has no files")
    if (source / MANIFEST_FILE).exists():
        raise RegistryError(f"{source} already holds a {MANIFEST_FILE}: publish the model files, not a version folder")
    if links := [p for p in files if p.is_symlink()]:
        raise RegistryError(f"{source}: symbolic links cannot be published ({links[0]}); copy the file instead")
    return files


class Registry(ABC):
    """A model registry: immutable, digest-verified versions, aliases with promote/rollback, and an audit log.

    Backends (``file://`` and ``s3://``) implement the storage primitives below; publishing, version
    numbering, alias history and verification are shared, so both behave the same.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        """The registry root URI."""

    # ---- storage primitives (per backend) ------------------------------------------------------------

    @abstractmethod
    def version_uri(self, name: str, version: str) -> str:
        """Storage URI of a version folder."""

    @abstractmethod
    def _names(self) -> list[str]:
        """Model names with at least one committed version, claim or alias."""

    @abstractmethod
    def _committed(self, name: str) -> list[str]:
        """Versions of ``name`` that have a manifest (unsorted)."""

    @abstractmethod
    def _taken(self, name: str) -> list[str]:
        """Version numbers that are committed or claimed by a publish in progress (unsorted)."""

    @abstractmethod
    def _manifest_bytes(self, name: str, version: str) -> bytes | None:
        """The stored manifest of a version, or None if the version is not committed."""

    @abstractmethod
    @contextlib.contextmanager
    def _staged(self, source: Path, name: str) -> Iterator[Path]:
        """A local folder holding exactly the bytes that will be committed (removed afterwards)."""

    @abstractmethod
    def _commit(self, name: str, version: str, staged: Path, files: FileDigests, manifest: bytes) -> bool:
        """Make ``staged`` version ``version`` all at once; False if that version exists (or is claimed)."""

    @abstractmethod
    def _materialize(self, name: str, version: str, manifest: dict[str, Any], dest: Path | None) -> Path:
        """A verified local folder of the version: in place, in the cache (``dest=None``), or in ``dest``."""

    @abstractmethod
    def _update_alias(
        self, name: str, alias: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Atomically replace an alias record by ``change(old)``; return (old, new). Concurrent updates retry."""

    @abstractmethod
    def _alias_records(self, name: str) -> dict[str, dict[str, Any]]:
        """Every alias record of ``name``."""

    @abstractmethod
    def _append_audit(self, name: str, event: dict[str, Any]) -> None:
        """Add one event to the append-only audit log of ``name``."""

    @abstractmethod
    def _audit_events(self, name: str) -> list[dict[str, Any]]:
        """The audit log of ``name``, oldest first."""

    def _local_path(self, name: str, version: str) -> str:  # noqa: ARG002 - only file:// versions have one
        return ""

    # ---- publishing ---------------------------------------------------------------------------------

    def publish(
        self,
        source_dir: str | Path,
        *,
        name: str,
        version: str | int | None = None,
        metadata: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Publish the files of ``source_dir`` as an immutable version of ``name``, all at once.

        Args:
            source_dir: Folder with the files (weights, exported model, config, metrics, model card ...).
            name: Model name.
            version: Version number to create; None takes the next free number.
            metadata: Facts recorded in the manifest (metrics, lineage, gate decision).
            actor: Who publishes (audit log); default :func:`current_actor`.

        Returns:
            The new version.

        Raises:
            RegistryError: the folder is empty, ``version`` already exists (or another publisher just took
                it), or the store cannot be written.
        """
        check_name(name)
        wanted = check_version(version) if version is not None else None
        source_files(source_dir)
        with self._staged(Path(source_dir), name) as staged:
            files = {
                p.relative_to(staged).as_posix(): (sha256_file(p), p.stat().st_size)
                for p in sorted(staged.rglob("*"))
                if p.is_file()
            }
            for _ in range(50):  # with version=None a concurrent publisher may take our number: take the next
                number = wanted or self._next_version(name)
                manifest = build_manifest(name, number, files, metadata or {})
                if self._commit(name, number, staged, files, manifest):
                    self._audit(name, "publish", None, None, number, actor=actor, reason="")
                    return self._model_version(name, number, json.loads(manifest))
                if wanted:
                    raise RegistryError(
                        f"{name} version {wanted} already exists in {self.uri} (or another publish holds it); "
                        f"versions are immutable: publish without a version to get the next number "
                        f"({self._next_version(name)})"
                    )
            raise RegistryError(f"could not claim a free version number for {name!r} in {self.uri}; retry")

    def _next_version(self, name: str) -> str:
        return str(max((int(v) for v in self._taken(name)), default=0) + 1)

    # ---- reading ------------------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Model names in the registry, sorted."""
        return sorted(self._names())

    def versions(self, name: str) -> list[ModelVersion]:
        """Committed versions of ``name``, oldest first (a publish in progress is not listed)."""
        check_name(name)
        out = []
        for version in sorted(self._committed(name), key=int):
            raw = self._manifest_bytes(name, version)
            if raw is not None:
                out.append(self._model_version(name, version, self._checked(raw, name, version)))
        return out

    def get(self, name: str, ref: str | int) -> ModelVersion:
        """A version by number or alias (its manifest checked, its files not yet).

        Raises:
            VersionNotFound: no such model, version or alias.
            RegistryError: the manifest was modified.
        """
        version = self.resolve_ref(name, ref)
        return self._model_version(name, version, self.manifest(name, version))

    def manifest(self, name: str, version: str | int) -> dict[str, Any]:
        """The checked manifest of a committed version.

        Raises:
            VersionNotFound: the version is not committed.
            RegistryError: the manifest was modified.
        """
        version = check_version(version)
        raw = self._manifest_bytes(check_name(name), version)
        if raw is None:
            known = ", ".join(sorted(self._committed(name), key=int)) or "none"
            raise VersionNotFound(
                f"{name} version {version} is not published in {self.uri} (published versions: {known}); "
                "see `kfkit registry list " + name + "`"
            )
        return self._checked(raw, name, version)

    def resolve_ref(self, name: str, ref: str | int) -> str:
        """The version number that ``ref`` (a number or an alias) names.

        Raises:
            VersionNotFound: an unknown alias.
        """
        check_name(name)
        text = str(ref)
        if text.isdigit():
            return check_version(text)
        alias = check_name(text, "alias")
        record = self._alias_records(name).get(alias)
        if record is None:
            known = ", ".join(sorted(self._alias_records(name))) or "none"
            raise VersionNotFound(f"{name} has no alias {alias!r} in {self.uri} (aliases: {known})")
        return record["version"]

    def fetch(self, name: str, ref: str | int, *, dest: str | Path | None = None) -> Path:
        """A local folder of the version whose every file matches the manifest.

        Args:
            name: Model name.
            ref: Version number or alias.
            dest: Where to put the files (S3); None uses the folder itself (file://) or the cache (S3).

        Raises:
            VersionNotFound: no such version.
            RegistryError: a file is missing, changed or added; the manifest was modified.
        """
        version = self.resolve_ref(name, ref)
        return self._materialize(name, version, self.manifest(name, version), Path(dest) if dest else None)

    def verify(self, name: str, ref: str | int) -> dict[str, Any]:
        """Read every byte of a version from the store and check it; return the manifest.

        Raises:
            VersionNotFound: no such version.
            RegistryError: anything does not match.
        """
        import tempfile

        version = self.resolve_ref(name, ref)
        manifest = self.manifest(name, version)
        with tempfile.TemporaryDirectory(prefix="kfkit-verify-") as scratch:
            self._materialize(name, version, manifest, Path(scratch) / "v")
        return manifest

    def _checked(self, raw: bytes, name: str, version: str) -> dict[str, Any]:
        manifest = parse_manifest(raw, f"{self.version_uri(name, version).rstrip('/')}/{MANIFEST_FILE}")
        if manifest.get("name") != name or manifest.get("version") != version:
            raise RegistryError(
                f"{self.version_uri(name, version)}: the manifest names {manifest.get('name')} version "
                f"{manifest.get('version')}; the version was moved or modified"
            )
        return manifest

    def _model_version(self, name: str, version: str, manifest: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            name=name,
            version=version,
            uri=self.version_uri(name, version),
            path=self._local_path(name, version),
            created_at=manifest.get("created_at", ""),
            metadata=manifest.get("metadata", {}),
        )

    # ---- aliases and audit --------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> version of ``name``."""
        return {alias: record["version"] for alias, record in sorted(self._alias_records(check_name(name)).items())}

    def alias_history(self, name: str, alias: str) -> list[str]:
        """Versions ``alias`` pointed at before the current one, oldest first (what rollback walks back)."""
        record = self._alias_records(check_name(name)).get(alias)
        return list(record.get("history", [])) if record else []

    def promote(
        self,
        name: str,
        ref: str | int,
        *,
        alias: str = DEFAULT_ALIAS,
        actor: str | None = None,
        reason: str = "",
        verify: bool = True,
    ) -> AuditEvent:
        """Point ``alias`` at a version (by number or by another alias, e.g. staging -> production).

        Args:
            name: Model name.
            ref: Version number, or an alias whose version is promoted.
            alias: Alias to move.
            actor: Who (audit log).
            reason: Why (audit log).
            verify: Read and check every file of the version first (never promote corrupted bytes).

        Returns:
            The audit event written.

        Raises:
            VersionNotFound: the version does not exist.
            RegistryError: the version fails verification.
        """
        check_name(alias, "alias")
        version = self.resolve_ref(name, ref)
        if verify:
            self.verify(name, version)
        else:
            self.manifest(name, version)

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            history = list(old.get("history", [])) if old else []
            if old and old["version"] != version:
                history.append(old["version"])
            return self._alias_record(alias, version, history, actor, reason)

        old, _ = self._update_alias(name, alias, change)
        return self._audit(name, "promote", alias, old["version"] if old else None, version, actor=actor, reason=reason)

    def rollback(
        self, name: str, *, alias: str = DEFAULT_ALIAS, actor: str | None = None, reason: str = ""
    ) -> AuditEvent:
        """Point ``alias`` back at the version it pointed at before the last promote.

        Repeated rollbacks keep walking back (3 -> 2 -> 1).

        Raises:
            VersionNotFound: the alias does not exist.
            RegistryError: the alias has no earlier version.
        """
        check_name(name)
        check_name(alias, "alias")

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            if old is None:
                raise VersionNotFound(f"{name} has no alias {alias!r} in {self.uri}: nothing to roll back")
            history = list(old.get("history", []))
            if not history:
                raise RegistryError(
                    f"{name} {alias} is at version {old['version']} and has no earlier version to roll back to; "
                    f"promote a version instead (kfkit registry promote {name} VERSION --alias {alias})"
                )
            previous = history.pop()
            self.manifest(name, previous)  # it must still exist
            return self._alias_record(alias, previous, history, actor, reason)

        old, new = self._update_alias(name, alias, change)
        assert old is not None
        return self._audit(name, "rollback", alias, old["version"], new["version"], actor=actor, reason=reason)

    def audit(self, name: str) -> list[AuditEvent]:
        """The audit log of ``name``, oldest first."""
        return [AuditEvent.from_dict(e) for e in self._audit_events(check_name(name))]

    def _alias_record(
        self, alias: str, version: str, history: list[str], actor: str | None, reason: str
    ) -> dict[str, Any]:
        return {"alias": alias, "version": version, "history": history, "updated_at": utc_now(),
                "updated_by": actor or current_actor(), "reason": reason}  # fmt: skip

    def _audit(
        self, name: str, action: str, alias: str | None, old: str | None, new: str | None, *, actor: str | None,
        reason: str,
    ) -> AuditEvent:  # fmt: skip
        event = AuditEvent(time=utc_now(), actor=actor or current_actor(), action=action, model=name, alias=alias,
                           from_version=old, to_version=new, reason=reason)  # fmt: skip
        self._append_audit(name, event.to_dict())
        return event
