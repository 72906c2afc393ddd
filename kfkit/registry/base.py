"""The registry interface, and what its backends share: manifests, digests, numbering, aliases and audit.

A backend stores four kinds of things under ``<root>/<model name>/``:

- ``<version>/``: the version's files plus ``manifest.json`` (the commit marker: a version without one
  does not exist for readers). Nothing else lives there, so a storage URI of the folder is exactly the
  model, which is what KServe's storage initializer downloads.
- ``_aliases/<alias>.json``: which version an alias (staging, production) points at, and the versions
  it pointed at before (what ``rollback`` returns to).
- the audit log: one event per publish, promote and rollback (who, when, what, from -> to). A version's
  manifest records who published it and when, so its publish event is part of the commit: ``audit``
  rebuilds a publish event the log lacks (a publisher killed between the commit and the append).
- backend bookkeeping (the S3 backend's version claims, the file backend's staging folders and lock).
  A publisher killed mid-way leaves some behind; :meth:`Registry.gc` removes what no live publisher holds.

About 620 lines, past the usual 400: this is the whole contract every backend keeps (publish, numbering,
aliases with compare-and-swap, audit, gc), written once above the few storage hooks a backend fills in;
split, the order of a publish (stage, claim, commit, audit) would no longer read in one place.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfkit.errors import ConfigError, InvalidName, RegistryError, VersionNotFound
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
    "GcItem",
    "GC_GRACE_S",
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

_log = logging.getLogger(__name__)

DEFAULT_ALIAS = "production"
GC_GRACE_S = 3600.0
"""Default age below which ``gc`` leaves a publish's leftovers alone, whatever else it knows."""
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
    actor: str = ""
    """Who published it (from the manifest; empty for versions published before kfkit recorded it)."""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Facts recorded at publish time: metrics, threshold, lineage, gate decision."""


@dataclass(frozen=True)
class GcItem:
    """One thing :meth:`Registry.gc` found: left behind by a publish that died, or held by one still running."""

    model: str
    kind: str
    """``staging`` (a file:// staging folder), ``claim`` (an s3:// version claim and its objects),
    ``objects`` (s3:// objects under a number nobody claims) or ``model`` (a file:// model folder with
    nothing committed in it)."""
    target: str
    """The path or URI."""
    action: str
    """``remove`` (garbage) or ``keep`` (held by a live publisher, or younger than the grace period)."""
    reason: str
    """Why, for a person."""
    age_s: float = 0.0
    """Seconds since the publisher last showed a sign of life there."""
    version: str | None = None
    """The version number a claim holds."""
    size: int = 0
    """Bytes it takes (files or objects), as far as known."""
    done: bool = False
    """Removed (only when gc was told to remove)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``kfkit registry gc --json`` prints."""
        return {"model": self.model, "kind": self.kind, "target": self.target, "action": self.action,
                "reason": self.reason, "age_s": round(self.age_s, 3), "version": self.version, "size": self.size,
                "done": self.done}  # fmt: skip


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
        InvalidName: naming the value and the rule (a usage error: exit status 2).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 63:
        raise InvalidName(
            f"{what} {name!r} is not valid: use lower-case letters, digits and '-', at most 63 characters"
        )
    return name


def check_version(version: str | int) -> str:
    """A version is a positive integer without leading zeros; return it as text.

    Raises:
        InvalidName: naming the value (a usage error: exit status 2).
    """
    text = str(version)
    if not _VERSION.fullmatch(text):
        raise InvalidName(f"version {version!r} is not valid: versions are positive integers (1, 2, 3 ...)")
    return text


def _is_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and len(name) <= 63


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
        """Model names with anything stored under them: committed versions, claims, staging folders, aliases."""

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

    @abstractmethod
    def _gc(self, name: str, grace_s: float, remove: bool) -> list[GcItem]:
        """What dead publishers left under ``name``, and what live ones hold; removed if ``remove``."""

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

        The commit is one atomic step (a folder rename, or the manifest object put last); the manifest
        records who published and when, so the publish event is part of it: a failure to append the
        audit log line afterwards is logged, not raised (``audit`` rebuilds the event from the manifest).

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
        actor = actor or current_actor()
        with self._staged(Path(source_dir), name) as staged:
            files = {
                p.relative_to(staged).as_posix(): (sha256_file(p), p.stat().st_size)
                for p in sorted(staged.rglob("*"))
                if p.is_file()
            }
            for _ in range(50):  # with version=None a concurrent publisher may take our number: take the next
                number = wanted or self._next_version(name)
                manifest = build_manifest(name, number, files, metadata or {}, actor=actor)
                if self._commit(name, number, staged, files, manifest):
                    committed = json.loads(manifest)
                    try:
                        self._audit(name, "publish", None, None, number, actor=actor, reason="",
                                    time=committed["created_at"])  # fmt: skip
                    except RegistryError as e:
                        # The version is committed and its manifest is its publish record (audit() reads
                        # it), so failing now would only invite a retry that publishes it twice.
                        _log.warning("%s version %s is published, but its audit log line was not written: %s; "
                                     "`kfkit registry audit` shows it from the manifest", name, number, e)  # fmt: skip
                    return self._model_version(name, number, committed)
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
        """Names of the models with at least one committed version, sorted.

        A model whose only publishes died (or are still running) is not listed.
        """
        return sorted(name for name in self._names() if _is_name(name) and self._committed(name))

    def versions(self, name: str) -> list[ModelVersion]:
        """Committed versions of ``name``, oldest first (a publish in progress is not listed)."""
        return [self._model_version(name, version, manifest) for version, manifest in self._manifests(name)]

    def _manifests(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        check_name(name)
        out = []
        for version in sorted(self._committed(name), key=int):
            raw = self._manifest_bytes(name, version)
            if raw is not None:
                out.append((version, self._checked(raw, name, version)))
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
            actor=manifest.get("actor", ""),
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
        """The audit log of ``name``, oldest first, with a publish event for every committed version.

        The stored log is appended after a version is committed, so a publisher killed in between leaves
        a version without its event; the version's manifest records the same facts (``created_at``,
        ``actor``), so the event is rebuilt from it. Each version has one publish event.
        """
        events: list[AuditEvent] = []
        published: set[str | None] = set()
        for event in map(AuditEvent.from_dict, self._audit_events(check_name(name))):
            if event.action == "publish":
                if event.to_version in published:
                    continue
                published.add(event.to_version)
            events.append(event)
        for version in self.versions(name):
            if version.version not in published:
                events.append(
                    AuditEvent(
                        time=version.created_at,
                        actor=version.actor,
                        action="publish",
                        model=name,
                        alias=None,
                        from_version=None,
                        to_version=version.version,
                    )
                )
        return sorted(events, key=lambda e: e.time)

    # ---- housekeeping -------------------------------------------------------------------------------

    def gc(self, *, grace_s: float = GC_GRACE_S, remove: bool = False, names: list[str] | None = None) -> list[GcItem]:
        """Find (and with ``remove``, delete) what killed publishes left behind.

        That is the file backend's staging folders and the S3 backend's version claims with their
        uploaded objects (and model folders left with nothing committed). Committed versions, aliases
        and the audit log are never touched. An item is removed only if it is older than ``grace_s``
        and no live publisher holds it: a file:// publisher holds an flock on its staging folder for
        its whole run; an s3:// publisher's claim names its process (checked when gc runs on the same
        host) and is refreshed while it uploads (trusted for a lease when it does not).

        Args:
            grace_s: Leave alone anything a publisher touched fewer than this many seconds ago.
            remove: Delete what is garbage; False only reports it (a dry run).
            names: Models to look at; None means every model, those with no committed version included.

        Returns:
            Every item found, garbage (``action == "remove"``) and held (``"keep"``).

        Raises:
            InvalidName: a name in ``names`` cannot be a model name.
            ConfigError: a negative grace period.
            RegistryError: the store cannot be read or written.
        """
        if grace_s < 0:
            raise ConfigError(f"grace period {grace_s!r} is not valid: give 0 or more seconds")
        targets = [check_name(n) for n in names] if names else sorted(n for n in self._names() if _is_name(n))
        return [item for name in targets for item in self._gc(name, grace_s, remove)]

    def _alias_record(
        self, alias: str, version: str, history: list[str], actor: str | None, reason: str
    ) -> dict[str, Any]:
        return {"alias": alias, "version": version, "history": history, "updated_at": utc_now(),
                "updated_by": actor or current_actor(), "reason": reason}  # fmt: skip

    def _audit(
        self, name: str, action: str, alias: str | None, old: str | None, new: str | None, *, actor: str | None,
        reason: str, time: str | None = None,
    ) -> AuditEvent:  # fmt: skip
        event = AuditEvent(time=time or utc_now(), actor=actor or current_actor(), action=action, model=name,
                           alias=alias, from_version=old, to_version=new, reason=reason)  # fmt: skip
        self._append_audit(name, event.to_dict())
        return event
