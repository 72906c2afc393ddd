"""The model registry: immutable, digest-verified versions under a file:// root.

Layout: ``<root>/<model name>/<version>/`` holding the model files plus ``manifest.json``, which lists
the sha256 of every other file. A version appears by one atomic rename of a fully written staging
folder, so a reader never sees half a version and an existing version is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from kfkit.errors import RegistryError

__all__ = ["ModelVersion", "publish", "resolve", "verify", "root_path", "sha256_file", "MANIFEST_FILE"]

MANIFEST_FILE = "manifest.json"
_STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class ModelVersion:
    """One published version."""

    name: str
    version: str
    uri: str
    """file:// URI of the version folder: what `kfkit serve --model-uri` takes."""
    path: str
    """Local folder of the version."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def root_path(registry_uri: str) -> Path:
    """The local folder behind a ``file://`` registry URI (relative paths resolve against the cwd).

    Raises:
        RegistryError: the scheme is not file://.
    """
    parsed = urlparse(registry_uri)
    if parsed.scheme not in ("file", ""):
        raise RegistryError(
            f"registry.uri={registry_uri!r}: scheme {parsed.scheme!r} is not supported yet; use file://PATH"
        )
    raw = registry_uri[len("file://") :] if parsed.scheme == "file" else registry_uri
    return Path(raw).expanduser().resolve()


def publish(model_dir: str | Path, *, registry_uri: str, name: str, metadata: dict | None = None) -> ModelVersion:
    """Copy ``model_dir`` into the registry as the next version of ``name``.

    Args:
        model_dir: Folder with the files to publish (weights, spec, metrics, reference data ...).
        registry_uri: Registry root, ``file://PATH``.
        name: Model name; versions are numbered 1, 2, 3 ... per name.
        metadata: Extra facts recorded in the manifest (metrics, dataset, run id).

    Returns:
        The new version.

    Raises:
        RegistryError: the source folder is empty or missing, or the registry cannot be written.
    """
    source = Path(model_dir)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    if not files:
        raise RegistryError(f"nothing to publish: {source} has no files")
    model_root = root_path(registry_uri) / name
    staging = model_root / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        model_root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, staging)
        digests = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        for _ in range(20):  # another publisher may take the number we picked: pick the next one
            version = str(_next_version(model_root))
            manifest = {
                "name": name,
                "version": version,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": digests,
                "metadata": metadata or {},
            }
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            target = model_root / version
            try:
                os.rename(staging, target)  # atomic; fails if the version folder already exists
            except OSError:
                if target.exists():
                    continue
                raise
            return ModelVersion(name=name, version=version, uri=target.as_uri(), path=str(target))
        raise RegistryError(f"could not pick a free version number for {name!r} under {model_root}; retry")
    except OSError as e:
        raise RegistryError(f"cannot publish {name!r} to {registry_uri}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve(model_uri: str) -> Path:
    """The verified local folder of a version URI (``file:///…/<name>/<version>`` or a plain path).

    Raises:
        RegistryError: the folder does not exist, or its files do not match the manifest.
    """
    folder = root_path(model_uri)
    if not (folder / MANIFEST_FILE).is_file():
        raise RegistryError(
            f"{model_uri} is not a published version (no {MANIFEST_FILE}); "
            "pass the URI that `kfkit run` printed, e.g. file:///…/registry/<name>/<version>"
        )
    verify(folder)
    return folder


def verify(folder: str | Path) -> dict:
    """Check every file of a version against its manifest and return the manifest.

    Raises:
        RegistryError: a listed file is missing, changed, or an unlisted file was added.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        expected: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RegistryError(f"{folder / MANIFEST_FILE} is unreadable: {e}") from e
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


def _next_version(model_root: Path) -> int:
    numbers = [int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=0) + 1
