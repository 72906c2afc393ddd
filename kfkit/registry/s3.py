"""The ``s3://bucket/prefix`` registry backend, through the MinIO Python SDK (any S3 store).

Object layout under the prefix, per model:

- ``<name>/_claims/<version>``: written first with ``If-None-Match: *``, so of two publishers of one
  version exactly one goes on to upload (the other never overwrites the winner's objects). The claim
  names its publisher (host, boot id, pid namespace, pid and the process's start time) and is
  rewritten with ``If-Match`` every few seconds while the upload runs (its heartbeat). A committed
  version keeps its claim for good: it is what stops a later publisher of that number from uploading
  over the version's files;
- ``<name>/<version>/<file>``: the files, then ``<name>/<version>/manifest.json`` last, also with
  ``If-None-Match: *``. The manifest is the commit marker: a version without one does not exist;
- ``<name>/_aliases/<alias>.json``: replaced with ``If-Match: <etag>`` (compare-and-swap);
- ``<name>/_audit/<time>-<id>.json``: one object per event, never rewritten.

S3 stores do not check what they hand back against what was uploaded (moto does not; not every gateway
does), so every file is checked against the manifest's sha256 on the client after download.

``gc`` and killed publishers: a claim without a manifest is garbage once its publisher is gone. On the
publisher's own host (same boot, same pid namespace) gc knows that for certain (no such process, or
another one with its pid), so it removes the objects and then the claim, and the number is free for
the next publish (1, 2 after a killed publish of 2, not 1, 3). A publisher gc cannot check (another
host or container) is presumed dead only when its claim has not been refreshed for a lease of
``_LEASE_S`` seconds (or the grace period, if longer); its objects are removed but its claim is kept as
a tombstone, so that number is never reused: a publisher that was only stalled (a paused VM, a network
partition) may still be uploading, and with the same keys it would overwrite the files of whoever
took the number next. It notices the tombstone at its next heartbeat and stops without committing.

About 690 lines, past the usual 400: the S3 commit protocol (claim with If-None-Match, upload while the
claim's heartbeat runs, manifest last) and the gc that must recognise a live publisher of that same
protocol are one piece of reasoning about races; they are kept together so a change to one is read
beside the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from kfkit.errors import RegistryError
from kfkit.registry.base import MANIFEST_FILE, FileDigests, GcItem, Registry, utc_now, verify_folder
from kfkit.registry.manifest import normalise_modes

if TYPE_CHECKING:
    from minio import Minio

__all__ = ["S3Registry", "parse_s3_uri", "cache_root"]

_CLAIMS = "_claims"
_ALIASES = "_aliases"
_AUDIT = "_audit"
# Answers of a store to a conditional write that lost (AWS also answers 409 while another one is in flight).
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_HEARTBEAT_S = 10.0
"""How often a publisher rewrites its claim while it uploads."""
_LEASE_S = 600.0
"""How long gc trusts a claim it cannot check (another host's publisher) after its last heartbeat."""


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

    def _put(self, key: str, data: bytes, *, condition: dict[str, str] | None = None) -> str | None:
        """Write a small object and return its ETag ("" if the store sends none).

        With a condition (If-None-Match / If-Match), None when it did not hold.
        """
        from minio.error import S3Error

        headers = {"Content-Type": "application/json", **(condition or {})}
        try:
            # put_object() would turn If-None-Match into user metadata (x-amz-meta-…); _put_object sends
            # headers as given. minio is pinned (requirements/main.lock), so this private call is stable.
            return self._client._put_object(self.bucket, key, data, headers=headers).etag or ""
        except S3Error as e:
            if condition and e.code in _LOST_RACE:
                return None
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
        claim = _Claim(self, name, version)
        with self._errors(f"claim {name} version {version}"):
            if not claim.take():
                return False
        uploaded: list[str] = []
        try:
            with self._errors(f"upload {name} version {version}"):
                if not self._clear_leftovers(name, version):
                    return False  # committed, but its claim was deleted: ours stays, as the version's guard
                claim.start_heartbeat()
                for rel, (digest, size) in sorted(files.items()):
                    claim.check()
                    key = self._key(name, version, rel)
                    with open(staged / rel, "rb") as f:
                        reader = _HashingReader(f)
                        self._client.put_object(self.bucket, key, reader, length=size)
                    uploaded.append(key)
                    if reader.hexdigest() != digest:
                        raise RegistryError(f"{staged / rel} changed while it was being published; publish again")
                claim.refresh()  # still ours right now (gc did not take it over), so commit
                # The commit: readers see the version only from here on, and only one manifest can be put.
                committed = self._put(
                    self._key(name, version, MANIFEST_FILE), manifest, condition={"If-None-Match": "*"}
                )
                if committed is None:
                    raise RegistryError(
                        f"{name} version {version} was committed by someone else while we held its claim; "
                        "the store does not honour conditional writes"
                    )
        except BaseException:
            claim.stop()
            self._abandon(claim, uploaded)
            raise
        finally:
            claim.stop()
        return True

    def _clear_leftovers(self, name: str, version: str) -> bool:
        """Remove objects a dead publisher of this number left (we hold its claim now); False if committed."""
        base = self._key(name, version) + "/"
        leftovers = [o.object_name for o in self._list(base)]
        if base + MANIFEST_FILE in leftovers:
            return False
        for key in leftovers:
            self._client.remove_object(self.bucket, key)
        return True

    def _abandon(self, claim: _Claim, uploaded: list[str]) -> None:
        """Best effort after a failed upload: remove our objects, then free the version number if still ours."""
        with contextlib.suppress(Exception):
            for key in uploaded:
                self._client.remove_object(self.bucket, key)
            if claim.owned():  # not if gc took it over: its tombstone keeps the number taken
                self._client.remove_object(self.bucket, claim.key)

    def _materialize(self, name: str, version: str, manifest: dict[str, Any], dest: Path | None) -> Path:
        if dest is None:
            tag = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
            host = urlparse(self.endpoint or "https://s3.amazonaws.com").netloc.replace(":", "_")
            dest = (self._cache or cache_root() / "registry") / host / self.bucket / self._key(name, f"{version}-{tag}")
            if dest.is_dir():
                try:
                    if verify_folder(dest) == manifest:
                        with contextlib.suppress(OSError):  # a copy cached by an older kfkit may be 0600
                            normalise_modes(dest)
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
            normalise_modes(partial)  # 0644/0755 whatever the umask: the serving runtime's user reads it
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
                written = self._put(
                    key, (json.dumps(new, indent=2, sort_keys=True) + "\n").encode(), condition=condition
                )
                if written is not None:
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

    # ---- gc -------------------------------------------------------------------------------------------

    def _gc(self, name: str, grace_s: float, remove: bool) -> list[GcItem]:
        base = self._key(name) + "/"
        with self._errors(f"list {name}"):
            objects = self._list(base)
        committed: set[str] = set()
        claims: dict[str, Any] = {}
        stored: dict[str, list[Any]] = {}
        for obj in objects:
            parts = obj.object_name[len(base) :].split("/")
            if len(parts) == 2 and parts[0] == _CLAIMS and parts[1].isdigit():
                claims[parts[1]] = obj
            elif len(parts) >= 2 and parts[0].isdigit():
                stored.setdefault(parts[0], []).append(obj)
                if parts[1:] == [MANIFEST_FILE]:
                    committed.add(parts[0])
        items = []
        with self._errors(f"gc {name}"):
            for version in sorted(claims.keys() - committed, key=int):
                item = self._gc_claim(name, version, claims[version], stored.get(version, []), grace_s, remove)
                if item is not None:
                    items.append(item)
            for version in sorted(stored.keys() - committed - claims.keys(), key=int):
                items.append(self._gc_orphans(name, version, stored[version], grace_s, remove))
        return items

    def _gc_claim(
        self, name: str, version: str, obj: Any, objects: list[Any], grace_s: float, remove: bool
    ) -> GcItem | None:
        key = obj.object_name
        found = self._get(key)
        if found is None:
            return None  # its publisher gave it up meanwhile
        raw, etag = found
        try:
            claim = json.loads(raw)
        except ValueError:
            claim = {}
        claim = claim if isinstance(claim, dict) else {}
        seen = _parse_time(claim.get("heartbeat_at") or claim.get("claimed_at")) or _timestamp(obj.last_modified)
        age = time.time() - seen
        reaped = "reaped_at" in claim
        if reaped and not objects:
            return None  # a tombstone: the number stays taken, nothing else is left
        state = "dead" if reaped else _publisher_state(claim)
        who = f"pid {claim.get('pid')} on {claim.get('host')}" if claim.get("pid") else "a publisher that left no id"
        item = GcItem(model=name, kind="claim", target=f"s3://{self.bucket}/{key}", action="remove", age_s=age,
                      version=version, size=sum(o.size or 0 for o in objects),
                      reason=f"{len(objects)} uploaded objects, no manifest; ")  # fmt: skip
        if state == "alive":
            return replace(item, action="keep", reason=f"its publisher ({who}) is running")
        if age < grace_s:
            return replace(item, action="keep", reason=f"younger than the grace period ({grace_s:g} s)")
        if state == "unknown" and age < max(grace_s, _LEASE_S):
            return replace(item, action="keep", reason=f"refreshed {age:.0f} s ago by {who}, which gc cannot check "
                           f"from here; trusted for {_LEASE_S:g} s after its last heartbeat")  # fmt: skip
        if reaped:
            item = replace(item, reason=item.reason + "uploaded after its claim was taken over; the number stays taken")
        elif state == "dead":
            item = replace(item, reason=item.reason + f"its publisher ({who}) is gone; the number is freed")
        else:
            item = replace(item, reason=item.reason + f"no heartbeat for {age:.0f} s from {who}; the claim stays "
                           "as a tombstone so the number is never reused")  # fmt: skip
        if not remove:
            return item
        # Take it over first (compare-and-swap): a publisher that is alive after all fails its next heartbeat
        # and stops instead of committing; one that refreshed since we read the claim makes this fail.
        tombstone = {**claim, "reaped_at": utc_now(), "reaped_by": _process_identity()}
        if self._put(key, json.dumps(tombstone).encode(), condition={"If-Match": etag} if etag else None) is None:
            return replace(item, action="keep", reason="its publisher refreshed it just now")
        if self._get(self._key(name, version, MANIFEST_FILE)) is not None:
            return replace(item, action="keep", reason="committed meanwhile")
        self._remove_prefix(self._key(name, version) + "/")
        if state == "dead" and not reaped:
            self._client.remove_object(self.bucket, key)
        return replace(item, done=True)

    def _gc_orphans(self, name: str, version: str, objects: list[Any], grace_s: float, remove: bool) -> GcItem:
        """Objects under a number that nobody claims (uploaded by a publisher after gc freed its number)."""
        newest = max((_timestamp(o.last_modified) for o in objects), default=0.0)
        item = GcItem(model=name, kind="objects", target=f"s3://{self.bucket}/{self._key(name, version)}/",
                      action="remove", age_s=time.time() - newest, version=version,
                      size=sum(o.size or 0 for o in objects),
                      reason=f"{len(objects)} objects with neither a claim nor a manifest")  # fmt: skip
        if item.age_s < grace_s:
            return replace(item, action="keep", reason=f"younger than the grace period ({grace_s:g} s)")
        if not remove:
            return item
        # Claim the number ourselves while we delete, so no publisher starts uploading into it meanwhile.
        claim = _Claim(self, name, version, gc=True)
        if not claim.take():
            return replace(item, action="keep", reason="a publisher claimed the number just now")
        if self._get(self._key(name, version, MANIFEST_FILE)) is not None:
            return replace(item, action="keep", reason="committed meanwhile")  # our claim stays as its guard
        try:
            self._remove_prefix(self._key(name, version) + "/")
        finally:
            self._client.remove_object(self.bucket, claim.key)
        return replace(item, done=True)

    def _remove_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` and abort its unfinished multipart uploads."""
        from minio.error import S3Error

        for obj in self._list(prefix):
            self._client.remove_object(self.bucket, obj.object_name)
        with contextlib.suppress(S3Error):  # a store without ListMultipartUploads: nothing more we can do
            uploads = self._client._list_multipart_uploads(self.bucket, prefix=prefix).uploads
            for upload in uploads:
                self._client._abort_multipart_upload(self.bucket, upload.object_name, upload.upload_id)


class _Claim:
    """A publisher's claim on a version number: taken with If-None-Match, then refreshed with If-Match.

    A background thread refreshes it every ``_HEARTBEAT_S`` seconds while the files upload, so gc
    can tell a slow publish from a dead one; if a refresh finds the claim changed (gc took it over),
    the publish stops before its commit.
    """

    def __init__(self, registry: S3Registry, name: str, version: str, *, gc: bool = False) -> None:
        self._registry = registry
        self.name, self.version = name, version
        self.key = registry._key(name, _CLAIMS, version)
        self._body = {"version": version, "publish_id": uuid.uuid4().hex, "claimed_at": utc_now(),
                      **({"gc": True} if gc else {}), **_process_identity()}  # fmt: skip
        self._etag: str | None = None
        self._lost = ""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def _bytes(self) -> bytes:
        return json.dumps({**self._body, "heartbeat_at": utc_now()}, sort_keys=True).encode()

    def take(self) -> bool:
        """Write the claim if nobody holds the number; False if somebody does."""
        self._etag = self._registry._put(self.key, self._bytes(), condition={"If-None-Match": "*"})
        return self._etag is not None

    def refresh(self) -> None:
        """Rewrite the claim (a heartbeat), only if it is still the one we wrote.

        Raises:
            RegistryError: gc took the claim over; the publish must stop without committing.
        """
        with self._lock:
            if not self._lost:
                condition = {"If-Match": self._etag} if self._etag else None
                etag = self._registry._put(self.key, self._bytes(), condition=condition)
                if etag is None:
                    self._lost = (
                        f"{self._registry.uri}: the claim on {self.name} version {self.version} was taken over "
                        "while we uploaded (by `kfkit registry gc`, which found no heartbeat); publish again"
                    )
                else:
                    self._etag = etag
            if self._lost:
                raise RegistryError(self._lost)

    def check(self) -> None:
        """Raise if a heartbeat found the claim taken over."""
        if self._lost:
            raise RegistryError(self._lost)

    def owned(self) -> bool:
        """Whether the stored claim is still ours (not taken over by gc)."""
        if self._lost:
            return False
        found = self._registry._get(self.key)
        if found is None:
            return False
        try:
            stored = json.loads(found[0])
        except ValueError:
            return False
        return stored.get("publish_id") == self._body["publish_id"] and "reaped_at" not in stored

    def start_heartbeat(self) -> None:
        """Refresh the claim in the background until :meth:`stop`."""
        self._thread = threading.Thread(target=self._beat, name=f"kfkit-claim-{self.version}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(_HEARTBEAT_S):
            try:
                self.refresh()
            except RegistryError:
                return  # taken over: the upload loop sees it at its next check
            except Exception:  # a failed heartbeat is retried at the next beat
                continue

    def stop(self) -> None:
        """Stop the heartbeat (idempotent)."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


def _process_identity() -> dict[str, Any]:
    """What names this process for gc: host, boot, pid namespace, pid and start time (Linux /proc)."""
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    with contextlib.suppress(OSError):
        identity["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        identity["pidns"] = os.readlink("/proc/self/ns/pid")
    if (started := _process_start(os.getpid())) is not None:
        identity["pid_start"] = started[0]
    return identity


def _process_start(pid: int) -> tuple[str, str] | None:
    """(start time in clock ticks since boot, state) of a process, from /proc; None if there is none."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return (fields[19], fields[0]) if len(fields) > 19 else None


def _publisher_state(claim: dict[str, Any]) -> str:
    """``alive``, ``dead`` or ``unknown``: what this host can tell about the process a claim names.

    Only a claim written on this boot of this host, in this pid namespace, can be checked; anything
    else (another host, another container, a claim from an older kfkit) is ``unknown``.
    """
    mine = _process_identity()
    if not all(claim.get(k) and claim.get(k) == mine.get(k) for k in ("host", "boot_id", "pidns")):
        return "unknown"
    try:
        pid = int(claim["pid"])
    except (KeyError, TypeError, ValueError):
        return "unknown"
    found = _process_start(pid)
    if found is None:
        return "dead"
    started, state = found
    if state in ("Z", "X") or (claim.get("pid_start") and claim["pid_start"] != started):
        return "dead"  # exited (not yet reaped by its parent), or its pid now belongs to another process
    return "alive"


def _parse_time(text: Any) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


def _timestamp(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


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
