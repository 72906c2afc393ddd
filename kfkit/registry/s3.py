"""The ``s3://bucket/prefix`` registry backend, through the MinIO Python SDK (any S3 store).

Object layout under the prefix, per model:

- ``<name>/_claims/<version>``: written first with ``If-None-Match: *``, so of two publishers of one
  version exactly one goes on to upload (the other never overwrites the winner's objects);
- ``<name>/<version>/<file>``: the files, then ``<name>/<version>/manifest.json`` last, also with
  ``If-None-Match: *``. The manifest is the commit marker: a version without one does not exist;
- ``<name>/_aliases/<alias>.json``: replaced with ``If-Match: <etag>`` (compare-and-swap);
- ``<name>/_audit/<time>-<id>.json``: one object per event, never rewritten.

S3 stores do not check what they hand back against what was uploaded (moto does not; not every gateway
does), so every file is checked against the manifest's sha256 on the client after download.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from kfkit.errors import RegistryError
from kfkit.registry.base import MANIFEST_FILE, FileDigests, Registry, utc_now, verify_folder

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["S3Registry", "parse_s3_uri", "cache_root"]

_CLAIMS = "_claims"
_ALIASES = "_aliases"
_AUDIT = "_audit"
# Answers of a store to a conditional write that lost (AWS also answers 409 while another one is in flight).
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> (bucket, "some/prefix").

    Raises:
        RegistryError: not an s3:// URI with a bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise RegistryError(f"{uri!r} is not an S3 URI: use s3://BUCKET/PREFIX")
    return parsed.netloc, parsed.path.strip("/")


def cache_root() -> Path:
    """Where downloaded versions are kept: $KFKIT_CACHE_DIR, else $XDG_CACHE_HOME/kfkit, else ~/.cache/kfkit."""
    if explicit := os.environ.get("KFKIT_CACHE_DIR"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfkit"


class S3Registry(Registry):
    """Registry in an S3 bucket under a prefix.

    Args:
        uri: ``s3://bucket/prefix``.
        endpoint: S3 endpoint URL (http://host:port); None reads $AWS_ENDPOINT_URL, else AWS.
        region: None reads $AWS_REGION / $AWS_DEFAULT_REGION.
        cache_dir: Folder for downloaded versions; None uses :func:`cache_root`.

    Credentials come from $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY (and $AWS_SESSION_TOKEN), the
    variables KServe's storage initializer reads too.
    """

    def __init__(
        self, uri: str, *, endpoint: str | None = None, region: str | None = None, cache_dir: str | Path | None = None
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        super().__init__(f"s3://{self.bucket}/{self.prefix}".rstrip("/"))
        self.endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self._cache = Path(cache_dir) if cache_dir else None
        self._client_instance: Minio | None = None

    # ---- plumbing -----------------------------------------------------------------------------------

    @property
    def _client(self) -> Minio:
        if self._client_instance is None:
            import urllib3
            from minio import Minio

            url = self.endpoint or "https://s3.amazonaws.com"
            parsed = urlparse(url if "://" in url else f"https://{url}")
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise RegistryError(f"registry.endpoint={url!r} is not an http(s) URL, e.g. http://minio.kfkit:9000")
            # Short connect timeout and few retries: a wrong endpoint should fail in seconds, not minutes.
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=5, read=120),
                retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
                maxsize=16,
            )
            self._client_instance = Minio(
                parsed.netloc,
                access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                session_token=os.environ.get("AWS_SESSION_TOKEN"),
                secure=parsed.scheme == "https",
                region=self.region,
                http_client=http,
            )
        return self._client_instance

    def _key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn store and network failures into one RegistryError naming the registry and the fix."""
        import urllib3
        from minio.error import MinioException, S3Error

        try:
            yield
        except S3Error as e:
            hint = ""
            if e.code == "NoSuchBucket":
                hint = f"; create the bucket {self.bucket!r} first (e.g. `mc mb` or `aws s3 mb`)"
            elif e.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                hint = "; check $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY and the bucket policy"
            raise RegistryError(f"{self.uri}: {what}: {e.code}: {e.message}{hint}") from e
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            where = self.endpoint or "AWS S3"
            raise RegistryError(
                f"{self.uri} at {where}: {what}: {e}; check registry.endpoint / $AWS_ENDPOINT_URL"
            ) from e

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """(bytes, etag) of an object, or None if it does not exist."""
        from minio.error import S3Error

        response = None
        try:
            response = self._client.get_object(self.bucket, key)
            return response.data, response.headers.get("ETag", "").strip('"')
        except S3Error as e:
            if e.code in _MISSING:
                return None
            raise
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def _put(self, key: str, data: bytes, *, condition: dict[str, str] | None = None) -> bool:
        """Write a small object; with a condition (If-None-Match / If-Match), False when it did not hold."""
        from minio.error import S3Error

        headers = {"Content-Type": "application/json", **(condition or {})}
        try:
            # put_object() would turn If-None-Match into user metadata (x-amz-meta-…); _put_object sends
            # headers as given. minio is pinned (requirements/main.lock), so this private call is stable.
            self._client._put_object(self.bucket, key, data, headers=headers)
            return True
        except S3Error as e:
            if condition and e.code in _LOST_RACE:
                return False
            raise

    def _list(self, prefix: str, *, recursive: bool = True) -> list[Any]:
        return list(self._client.list_objects(self.bucket, prefix=prefix, recursive=recursive))

    # ---- primitives ---------------------------------------------------------------------------------

    def version_uri(self, name: str, version: str) -> str:
        """``s3://bucket/prefix/<name>/<version>/``, the folder KServe's storage initializer downloads."""
        # The trailing slash matters: KServe lists objects by prefix, and ".../m/1" would also match ".../m/10/".
        return f"s3://{self.bucket}/{self._key(name, version)}/"

    def _names(self) -> list[str]:
        with self._errors("list models"):
            base = self._key("") if self.prefix else ""
            return [o.object_name[len(base) :].strip("/") for o in self._list(base, recursive=False) if o.is_dir]

    def _scan(self, name: str) -> tuple[list[str], list[str]]:
        """(committed versions, claimed versions) of ``name`` in one recursive listing."""
        base = self._key(name) + "/"
        committed, claimed = [], []
        with self._errors(f"list versions of {name}"):
            for obj in self._list(base):
                parts = obj.object_name[len(base) :].split("/")
                if len(parts) == 2 and parts[0].isdigit() and parts[1] == MANIFEST_FILE:
                    committed.append(parts[0])
                elif len(parts) == 2 and parts[0] == _CLAIMS and parts[1].isdigit():
                    claimed.append(parts[1])
        return committed, claimed

    def _committed(self, name: str) -> list[str]:
        return self._scan(name)[0]

    def _taken(self, name: str) -> list[str]:
        committed, claimed = self._scan(name)
        return committed + claimed

    def _manifest_bytes(self, name: str, version: str) -> bytes | None:
        with self._errors(f"read {name} version {version}"):
            found = self._get(self._key(name, version, MANIFEST_FILE))
        return found[0] if found else None

    @contextlib.contextmanager
    def _staged(self, source: Path, name: str) -> Iterator[Path]:  # noqa: ARG002
        # Upload straight from the source; _commit hashes the bytes as they are sent, so a file that
        # changes under us cannot be committed with a stale digest.
        yield source

    def _commit(self, name: str, version: str, staged: Path, files: FileDigests, manifest: bytes) -> bool:
        claim = json.dumps({"version": version, "claimed_at": utc_now(), "publish_id": uuid.uuid4().hex}).encode()
        with self._errors(f"claim {name} version {version}"):
            if not self._put(self._key(name, _CLAIMS, version), claim, condition={"If-None-Match": "*"}):
                return False
        uploaded: list[str] = []
        try:
            with self._errors(f"upload {name} version {version}"):
                for rel, (digest, size) in sorted(files.items()):
                    key = self._key(name, version, rel)
                    with open(staged / rel, "rb") as f:
                        reader = _HashingReader(f)
                        self._client.put_object(self.bucket, key, reader, length=size)
                    uploaded.append(key)
                    if reader.hexdigest() != digest:
                        raise RegistryError(f"{staged / rel} changed while it was being published; publish again")
                # The commit: readers see the version only from here on, and only one manifest can be put.
                if not self._put(self._key(name, version, MANIFEST_FILE), manifest, condition={"If-None-Match": "*"}):
                    raise RegistryError(
                        f"{name} version {version} was committed by someone else while we held its claim; "
                        "the store does not honour conditional writes"
                    )
        except BaseException:
            self._abandon(name, version, uploaded)
            raise
        return True

    def _abandon(self, name: str, version: str, uploaded: list[str]) -> None:
        """Best effort after a failed upload: remove our objects, then free the version number."""
        with contextlib.suppress(Exception):
            for key in uploaded:
                self._client.remove_object(self.bucket, key)
            self._client.remove_object(self.bucket, self._key(name, _CLAIMS, version))

    def _materialize(self, name: str, version: str, manifest: dict[str, Any], dest: Path | None) -> Path:
        if dest is None:
            tag = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
            host = urlparse(self.endpoint or "https://s3.amazonaws.com").netloc.replace(":", "_")
            dest = (self._cache or cache_root() / "registry") / host / self.bucket / self._key(name, f"{version}-{tag}")
            if dest.is_dir():
                try:
                    if verify_folder(dest) == manifest:
                        return dest
                except RegistryError:
                    pass
                shutil.rmtree(dest, ignore_errors=True)  # a damaged or stale cache copy: fetch it again
        self._check_no_extra_objects(name, version, manifest)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
        try:
            partial.mkdir(parents=True)
            with self._errors(f"download {name} version {version}"):
                for rel, digest in sorted(manifest["files"].items()):
                    self._download(self._key(name, version, rel), partial / rel, digest)
                found = self._get(self._key(name, version, MANIFEST_FILE))
                if found is None:
                    raise RegistryError(f"{self.version_uri(name, version)}: the manifest disappeared during download")
                (partial / MANIFEST_FILE).write_bytes(found[0])
            if verify_folder(partial) != manifest:  # the local copy, manifest included, is what readers get
                raise RegistryError(f"{self.version_uri(name, version)}: the manifest changed during download")
            try:
                os.rename(partial, dest)
            except OSError:
                if not dest.is_dir():  # else another process put the same version in place first: use it
                    raise
                verify_folder(dest)
            return dest
        except OSError as e:
            raise RegistryError(f"cannot write {dest}: {e}") from e
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _download(self, key: str, path: Path, digest: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        response = self._client.get_object(self.bucket, key)
        try:
            with open(path, "wb") as out:
                for chunk in response.stream(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
        finally:
            response.close()
            response.release_conn()
        if sha.hexdigest() != digest:
            raise RegistryError(
                f"s3://{self.bucket}/{key}: sha256 {sha.hexdigest()} does not match the manifest's {digest}; "
                "refusing to load it"
            )

    def _check_no_extra_objects(self, name: str, version: str, manifest: dict[str, Any]) -> None:
        # KServe's storage initializer downloads every object under the version prefix: an extra one
        # would be served without having been checked.
        base = self._key(name, version) + "/"
        with self._errors(f"list {name} version {version}"):
            present = {o.object_name[len(base) :] for o in self._list(base)}
        if extra := sorted(present - set(manifest["files"]) - {MANIFEST_FILE}):
            raise RegistryError(
                f"{self.version_uri(name, version)}: objects not in the manifest: {', '.join(extra)}; "
                "the version was modified"
            )

    def _update_alias(
        self, name: str, alias: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        key = self._key(name, _ALIASES, f"{alias}.json")
        for attempt in range(30):
            with self._errors(f"update alias {alias} of {name}"):
                found = self._get(key)
                old = json.loads(found[0]) if found else None
                new = change(old)
                condition = {"If-Match": found[1]} if found else {"If-None-Match": "*"}
                if self._put(key, (json.dumps(new, indent=2, sort_keys=True) + "\n").encode(), condition=condition):
                    return old, new
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # someone else updated it: read again
        raise RegistryError(f"{self.uri}: alias {alias} of {name} is being updated by others; retry")

    def _alias_records(self, name: str) -> dict[str, dict[str, Any]]:
        base = self._key(name, _ALIASES) + "/"
        records = {}
        with self._errors(f"read aliases of {name}"):
            for obj in self._list(base):
                alias = obj.object_name[len(base) :]
                if alias.endswith(".json") and (found := self._get(obj.object_name)):
                    records[alias[: -len(".json")]] = json.loads(found[0])
        return records

    def _append_audit(self, name: str, event: dict[str, Any]) -> None:
        stamp = event["time"].replace("-", "").replace(":", "")
        key = self._key(name, _AUDIT, f"{stamp}-{uuid.uuid4().hex[:12]}.json")
        with self._errors(f"write the audit log of {name}"):
            self._put(key, (json.dumps(event, sort_keys=True) + "\n").encode(), condition={"If-None-Match": "*"})

    def _audit_events(self, name: str) -> list[dict[str, Any]]:
        base = self._key(name, _AUDIT) + "/"
        events = []
        with self._errors(f"read the audit log of {name}"):
            for obj in sorted(self._list(base), key=lambda o: o.object_name):
                if found := self._get(obj.object_name):
                    events.append(json.loads(found[0]))
        return events


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes what passes through it (what was uploaded is what was hashed)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._sha.update(data)
        return data

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
