"""The ``file://`` registry backend: versions are folders that appear by one atomic rename.

Layout under the root: ``<name>/<version>/`` (files + manifest.json), ``<name>/_aliases/<alias>.json``,
``<name>/_audit.jsonl`` (one JSON event per line, appended under a lock), ``<name>/.lock`` (flock for
alias updates) and ``<name>/.staging-*/`` (a publish in progress; never a version to a reader).

A staging folder holds ``version/`` (the copy, renamed to ``<name>/<version>`` by the commit) and
``.lock``, which its publisher holds an flock on from before the copy until the folder is removed. The
kernel drops the lock when the publisher dies, however it dies, so ``gc`` removes exactly the staging
folders whose lock it can take.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from kfkit.errors import RegistryError
from kfkit.registry.base import MANIFEST_FILE, FileDigests, GcItem, Registry, verify_folder
from kfkit.registry.manifest import FILE_MODE, normalise_modes

__all__ = ["FileRegistry"]

_STAGING_PREFIX = ".staging-"
_ALIASES = "_aliases"
_AUDIT = "_audit.jsonl"
_LOCK = ".lock"
_PAYLOAD = "version"


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
        return [entry for entry in _entries(folder) if entry.isdigit() and (folder / entry).is_dir()]

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
        staging, lock = self._new_staging(name)
        try:
            payload = staging / _PAYLOAD
            shutil.copytree(source, payload, symlinks=True)
            normalise_modes(payload)  # every file 0644 whatever the source had (safetensors writes 0600)
            yield payload
        except OSError as e:
            raise RegistryError(f"cannot publish {name!r} to {self.uri}: {e}") from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            os.close(lock)  # only now: gc never finds our folder unlocked while it exists

    def _new_staging(self, name: str) -> tuple[Path, int]:
        """A fresh staging folder and the descriptor of its ``.lock``, flocked."""
        folder = self.root / name
        for _ in range(20):
            staging = folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                staging.mkdir()
                lock = os.open(staging / _LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
            except FileNotFoundError:
                continue  # gc removed the (empty) model folder or our folder before we locked it: again
            except OSError as e:
                raise RegistryError(f"cannot publish {name!r} to {self.uri}: {e}") from e
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits only while a gc that took it first removes the folder
            if _same_file(lock, staging / _LOCK):
                return staging, lock
            os.close(lock)  # gc removed it between our mkdir and our flock
        raise RegistryError(
            f"cannot create a staging folder in {folder}: it keeps being removed (a gc with --grace 0?)"
        )

    def _commit(self, name: str, version: str, staged: Path, files: FileDigests, manifest: bytes) -> bool:  # noqa: ARG002
        target = self.root / name / version
        try:
            fd = os.open(staged / MANIFEST_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                os.write(fd, manifest)
                os.fchmod(fd, FILE_MODE)  # whatever the umask
                os.fsync(fd)
            finally:
                os.close(fd)
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
        normalise_modes(dest)
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
            for _ in range(20):
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    lock = open(folder / _LOCK, "a")  # closed by the with below, after the yield
                except FileNotFoundError:
                    continue  # gc removed the empty model folder just now
                with lock:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes, even if we die
                    if _same_file(lock.fileno(), folder / _LOCK):  # else gc unlinked it while we waited
                        yield
                        return
            raise RegistryError(f"cannot lock {folder / _LOCK}: it keeps being removed")
        except OSError as e:
            raise RegistryError(f"cannot update {self.uri}/{name}: {e}") from e

    def _update_alias(
        self, name: str, alias: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        if not (self.root / name).is_dir():
            change(None)  # a rollback of a model that does not exist raises here, before a folder is made for it
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

    # ---- gc -------------------------------------------------------------------------------------------

    def _gc(self, name: str, grace_s: float, remove: bool) -> list[GcItem]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        stagings = sorted(folder / entry for entry in _entries(folder) if entry.startswith(_STAGING_PREFIX))
        items = [
            self._gc_staging(name, staging, grace_s, remove)
            for staging in stagings
            if staging.is_dir() and not staging.is_symlink()
        ]
        items = [i for i in items if i is not None]
        if self._committed(name):
            return items
        if remove:
            if empty := self._gc_empty_model(name):
                items.append(empty)
            return items
        left = _entries(folder) - {Path(i.target).name for i in items if i.action == "remove"}
        if left <= {_LOCK}:  # what the removals would leave: an empty model
            items.append(GcItem(model=name, kind="model", target=str(folder), action="remove",
                                reason="no version was ever committed"))  # fmt: skip
        return items

    def _gc_staging(self, name: str, staging: Path, grace_s: float, remove: bool) -> GcItem | None:
        lock_path = staging / _LOCK
        age = time.time() - _last_touched(staging, lock_path)
        size = _size(staging)
        item = GcItem(model=name, kind="staging", target=str(staging), action="remove", age_s=age, size=size,
                      reason="left by a publish that is no longer running")  # fmt: skip
        try:
            # Without --yes we only look: open the lock without creating one. A folder without a lock
            # comes from kfkit before locks (or a publisher in the instant between mkdir and lock).
            flags = os.O_RDWR | os.O_CREAT if remove else os.O_RDONLY
            lock = os.open(lock_path, flags, FILE_MODE)
        except FileNotFoundError:
            if not staging.exists():
                return None  # its publish just finished
            if age < grace_s:
                return _kept(item, f"younger than the grace period ({grace_s:g} s)")
            return item
        except OSError as e:
            raise RegistryError(f"cannot read {lock_path}: {e}") from e
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _kept(item, "a running publish holds its lock")
            if not _same_file(lock, lock_path):
                return None  # removed by its publisher (or another gc) while we looked
            if age < grace_s:
                return _kept(item, f"younger than the grace period ({grace_s:g} s)")
            if remove:  # holding the lock: no publisher can be in it, and none can start using it
                shutil.rmtree(staging, ignore_errors=True)
                if staging.exists():
                    return _kept(item, "could not be removed completely")
                return replace(item, done=True)
            return item
        finally:
            os.close(lock)

    def _gc_empty_model(self, name: str) -> GcItem | None:
        """Remove a model folder holding nothing but (at most) its lock file."""
        folder = self.root / name
        entries = _entries(folder)
        if not folder.is_dir() or not entries <= {_LOCK}:
            return None
        try:
            if entries:
                with open(folder / _LOCK, "a") as lock:
                    try:
                        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return None  # someone is promoting or publishing into it right now
                    (folder / _LOCK).unlink()  # _locked() notices a lock file unlinked under it
            folder.rmdir()
        except OSError:
            return None  # a publisher started using it meanwhile: it is not empty any more
        return GcItem(model=name, kind="model", target=str(folder), action="remove", done=True,
                      reason="no version was ever committed")  # fmt: skip

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RegistryError(f"{path} is unreadable: {e}") from e


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a lock file can be unlinked while we wait on it)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _last_touched(*paths: Path) -> float:
    """The newest mtime/ctime of ``paths`` (ctime too: copytree sets a folder's mtime to its source's)."""
    times = [0.0]
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            times += [st.st_mtime, st.st_ctime]
    return max(times)


def _size(folder: Path) -> int:
    """Bytes of the files under ``folder``, as far as they are still there (a publish may be removing it)."""
    total = 0
    for parent, _, names in os.walk(folder):  # os.walk skips what vanishes under it
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _entries(folder: Path) -> set[str]:
    """Names in ``folder``; empty if it is gone (removed by a concurrent gc)."""
    try:
        return {p.name for p in folder.iterdir()}
    except FileNotFoundError:
        return set()


def _kept(item: GcItem, reason: str) -> GcItem:
    return replace(item, action="keep", reason=reason)
