"""The registry's manifest format: every file's sha256 and size, the version's metadata, and a self-digest.

``manifest.json`` is a version's commit marker and its integrity record: readers refuse a version whose
manifest is not in canonical form, does not match its own digest, or lists a file that is missing,
changed or joined by an unlisted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from kfkit.errors import RegistryError

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA",
    "FileDigests",
    "sha256_file",
    "build_manifest",
    "parse_manifest",
    "verify_folder",
    "utc_now",
    "normalise_modes",
    "FILE_MODE",
    "DIR_MODE",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1

FileDigests = dict[str, tuple[str, int]]
"""Relative path -> (sha256, size) of every file of a version."""

FILE_MODE = 0o644
"""Mode of every file of a version folder: readable by the serving runtime's user, whoever published it."""
DIR_MODE = 0o755
"""Mode of every folder of a version folder."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    name: str, version: str, files: dict[str, tuple[str, int]], metadata: dict[str, Any], *, actor: str = ""
) -> bytes:
    """The manifest bytes: every file's sha256 and size, the metadata, and a digest of all of it.

    The trailing ``digest`` covers the rest of the manifest, and readers also require the exact
    canonical bytes, so any change to manifest.json itself (not only to the files it lists) is caught.
    ``created_at`` and ``actor`` (who published) make the manifest its own publish record: the audit log
    is rebuilt from them if the publish died before its event was written.
    """
    body = {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "version": version,
        "created_at": utc_now(),
        "actor": actor,
        "files": {rel: digest for rel, (digest, _) in sorted(files.items())},
        "sizes": {rel: size for rel, (_, size) in sorted(files.items())},
        "metadata": metadata,
    }
    body["digest"] = _manifest_digest(body)
    return _canonical(body)


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """Parse and check manifest bytes: valid JSON, canonical form, and a matching self-digest.

    Raises:
        RegistryError: the manifest was changed or is not a kfkit manifest.
    """
    try:
        manifest = json.loads(raw.decode("utf-8"))
        files, digest = manifest["files"], manifest.pop("digest")
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ValueError("'files' must map paths to sha256 digests")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RegistryError(f"{where} is unreadable or was modified ({e}); refusing to load the version") from e
    if _manifest_digest(manifest) != digest or _canonical({**manifest, "digest": digest}) != raw:
        raise RegistryError(f"{where} does not match its own digest: the manifest was modified; refusing to load it")
    return manifest


def verify_folder(folder: str | Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check every file of a local version folder against its manifest and return the manifest.

    Args:
        folder: The version folder (holding manifest.json unless ``manifest`` is given).
        manifest: An already parsed and checked manifest (e.g. the one fetched from S3).

    Raises:
        RegistryError: the manifest is missing or modified, a listed file is missing or changed, or an
            unlisted file was added.
    """
    folder = Path(folder)
    if manifest is None:
        path = folder / MANIFEST_FILE
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise RegistryError(f"{path} is unreadable: {e}") from e
        manifest = parse_manifest(raw, str(path))
    expected: dict[str, str] = manifest["files"]
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    if extra := sorted(present - expected.keys()):
        raise RegistryError(f"{folder}: files not in the manifest: {', '.join(extra)}; the version was modified")
    for rel, digest in expected.items():
        path = folder / rel
        if not path.is_file():
            raise RegistryError(f"{folder}: {rel} is listed in the manifest but missing")
        if (actual := sha256_file(path)) != digest:
            raise RegistryError(f"{path}: sha256 {actual} does not match the manifest's {digest}; refusing to load it")
    return manifest


def normalise_modes(folder: str | Path) -> None:
    """Give every file under ``folder`` mode 0644 and every folder (``folder`` included) 0755.

    Publishers' umasks and tools differ (safetensors writes its file 0600), and a version copied to a
    volume keeps its modes: one unreadable file there is a model the serving runtime's user cannot load.
    """
    folder = Path(folder)
    os.chmod(folder, DIR_MODE)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _canonical(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _manifest_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def utc_now() -> str:
    """Current UTC time, ISO 8601 with microseconds (sorts as text)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
