"""The model registry: immutable, digest-verified versions with aliases, promote/rollback and an audit log.

One interface (:class:`Registry`), two backends: ``file://PATH`` (:class:`FileRegistry`) and
``s3://BUCKET/PREFIX`` through the MinIO SDK (:class:`S3Registry`). :func:`open_registry` picks one by
URI; :func:`resolve` turns a version URI into a verified local folder, whichever backend holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from kfkit.errors import RegistryError
from kfkit.registry.base import (
    DEFAULT_ALIAS,
    MANIFEST_FILE,
    AuditEvent,
    ModelVersion,
    Registry,
    check_name,
    check_version,
    current_actor,
    sha256_file,
    verify_folder,
)

if TYPE_CHECKING:
    from kfkit.config import RegistryConfig

__all__ = [
    "Registry",
    "ModelVersion",
    "AuditEvent",
    "MANIFEST_FILE",
    "DEFAULT_ALIAS",
    "open_registry",
    "from_config",
    "publish_folder",
    "resolve",
    "verify",
    "root_path",
    "split_version_uri",
    "sha256_file",
    "current_actor",
    "check_name",
    "check_version",
]

SCHEMES = ("file", "s3")


def root_path(registry_uri: str) -> Path:
    """The local folder behind a ``file://`` URI or a plain path (relative paths resolve against the cwd).

    Raises:
        RegistryError: the scheme is not file://.
    """
    parsed = urlparse(registry_uri)
    if parsed.scheme not in ("file", ""):
        raise RegistryError(
            f"registry.uri={registry_uri!r}: scheme {parsed.scheme!r} is not a local path; use file://PATH"
        )
    raw = registry_uri[len("file://") :] if parsed.scheme == "file" else registry_uri
    return Path(raw).expanduser().resolve()


def open_registry(
    uri: str, *, endpoint: str | None = None, region: str | None = None, cache_dir: str | Path | None = None
) -> Registry:
    """The registry at ``uri``: ``file://PATH`` (or a plain path) or ``s3://BUCKET/PREFIX``.

    Args:
        uri: Registry root.
        endpoint: S3 endpoint URL (s3:// only); None reads $AWS_ENDPOINT_URL.
        region: S3 region (s3:// only); None reads $AWS_REGION.
        cache_dir: Where S3 versions are downloaded; None uses $KFKIT_CACHE_DIR or ~/.cache/kfkit.

    Raises:
        RegistryError: an unsupported scheme.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("file", ""):
        from kfkit.registry.file import FileRegistry

        return FileRegistry(root_path(uri))
    if scheme == "s3":
        from kfkit.registry.s3 import S3Registry

        return S3Registry(uri, endpoint=endpoint, region=region, cache_dir=cache_dir)
    raise RegistryError(
        f"registry.uri={uri!r}: scheme {scheme!r} is not supported; use file://PATH or s3://BUCKET/PREFIX"
    )


def from_config(cfg: RegistryConfig) -> Registry:
    """The registry a config's ``registry`` group names."""
    return open_registry(cfg.uri, endpoint=cfg.endpoint, region=cfg.region)


def publish_folder(
    model_dir: str | Path,
    *,
    registry_uri: str,
    name: str,
    version: str | int | None = None,
    metadata: dict[str, Any] | None = None,
    endpoint: str | None = None,
    region: str | None = None,
) -> ModelVersion:
    """Publish ``model_dir`` as a new immutable version of ``name`` (see :meth:`Registry.publish`)."""
    registry = open_registry(registry_uri, endpoint=endpoint, region=region)
    return registry.publish(model_dir, name=name, version=version, metadata=metadata)


def split_version_uri(model_uri: str) -> tuple[str, str, str]:
    """``<root>/<name>/<version>[/]`` -> (root URI, name, version).

    Raises:
        RegistryError: the URI does not end in a model name and a version number.
    """
    parts = model_uri.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        raise RegistryError(
            f"{model_uri!r} is not a version URI: expected <registry>/<name>/<version>, "
            "e.g. s3://kfkit-models/fraud-mlp/3/ or file:///…/registry/fraud-mlp/3"
        )
    root, name, version = parts
    return root, check_name(name), check_version(version)


def resolve(
    model_uri: str, *, endpoint: str | None = None, region: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The verified local folder of a version URI.

    ``file:///…/<name>/<version>`` or a plain path is checked in place (also a folder KServe's storage
    initializer filled, e.g. /mnt/models); ``s3://bucket/prefix/<name>/<version>/`` is downloaded to
    the cache, checked, then returned.

    Raises:
        RegistryError: not a published version, or its files do not match its manifest.
    """
    scheme = urlparse(model_uri).scheme
    if scheme == "s3":
        root, name, version = split_version_uri(model_uri)
        return open_registry(root, endpoint=endpoint, region=region, cache_dir=cache_dir).fetch(name, version)
    if scheme not in ("file", ""):
        raise RegistryError(f"{model_uri!r}: scheme {scheme!r} is not supported; use file://PATH or s3://BUCKET/…")
    folder = root_path(model_uri)
    if not (folder / MANIFEST_FILE).is_file():
        raise RegistryError(
            f"{model_uri} is not a published version (no {MANIFEST_FILE}); "
            "pass the URI that `kfkit run` printed, e.g. file:///…/registry/<name>/<version>"
        )
    verify_folder(folder)
    return folder


def verify(folder: str | Path) -> dict[str, Any]:
    """Check every file of a local version folder against its manifest and return the manifest.

    Raises:
        RegistryError: a listed file is missing or changed, an unlisted file was added, or the manifest
            itself was modified.
    """
    return verify_folder(folder)
