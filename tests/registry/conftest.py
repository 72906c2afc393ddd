"""Registry fixtures: an S3 server over HTTP on 127.0.0.1 (moto), and one registry per backend."""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

BUCKET = "kfkit-test"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free 127.0.0.1 port, with a bucket and the credentials env variables set."""
    from minio import Minio
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = Minio(f"{host}:{port}", access_key="testing", secret_key="testing", secure=False, region="us-east-1")
    client.make_bucket(BUCKET)
    try:
        yield SimpleNamespace(endpoint=endpoint, client=client, bucket=BUCKET)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class FileBackend:
    """Test access to a file:// registry's stored bytes, as an operator (or an attacker) would have."""

    kind = "file"

    def __init__(self, root: Path) -> None:
        self.uri = f"file://{root}"
        self.root = root

    def open(self, cache_dir: Path | None = None):
        from kfkit.registry import open_registry

        return open_registry(self.uri, cache_dir=cache_dir)

    def read(self, name: str, version: str, rel: str) -> bytes:
        return (self.root / name / version / rel).read_bytes()

    def write(self, name: str, version: str, rel: str, data: bytes) -> None:
        path = self.root / name / version / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(self, name: str, version: str, rel: str) -> None:
        (self.root / name / version / rel).unlink()

    def leave_partial(self, name: str, version: str, files: dict[str, bytes]) -> None:
        """What a publisher killed mid-way leaves behind: a staging folder, never the version folder."""
        staging = self.root / name / f".staging-{uuid.uuid4().hex}"
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)


class S3Backend:
    """Test access to an s3:// registry's objects, through a separate MinIO client."""

    kind = "s3"

    def __init__(self, server: SimpleNamespace, prefix: str, cache_root: Path) -> None:
        self.server = server
        self.prefix = prefix
        self.uri = f"s3://{server.bucket}/{prefix}"
        self.cache_root = cache_root

    def open(self, cache_dir: Path | None = None):
        from kfkit.registry import open_registry

        # A fresh cache per registry object unless told: a cached good copy must not hide a corrupted store.
        cache = cache_dir or self.cache_root / uuid.uuid4().hex
        return open_registry(self.uri, endpoint=self.server.endpoint, region="us-east-1", cache_dir=cache)

    def _key(self, name: str, version: str, rel: str) -> str:
        return f"{self.prefix}/{name}/{version}/{rel}"

    def read(self, name: str, version: str, rel: str) -> bytes:
        response = self.server.client.get_object(self.server.bucket, self._key(name, version, rel))
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def write(self, name: str, version: str, rel: str, data: bytes) -> None:
        self.server.client.put_object(self.server.bucket, self._key(name, version, rel), io.BytesIO(data), len(data))

    def delete(self, name: str, version: str, rel: str) -> None:
        self.server.client.remove_object(self.server.bucket, self._key(name, version, rel))

    def leave_partial(self, name: str, version: str, files: dict[str, bytes]) -> None:
        """What a publisher killed mid-way leaves behind: its claim and some objects, but no manifest."""
        claim = b'{"version": "%s"}' % version.encode()
        key = f"{self.prefix}/{name}/_claims/{version}"
        self.server.client.put_object(self.server.bucket, key, io.BytesIO(claim), len(claim))
        for rel, data in files.items():
            self.write(name, version, rel, data)


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path):
    """The same tests run against a file:// registry on disk and an s3:// registry over HTTP (moto)."""
    if request.param == "file":
        return FileBackend(tmp_path / "registry")
    server = request.getfixturevalue("s3_server")
    return S3Backend(server, f"reg-{uuid.uuid4().hex[:10]}", tmp_path / "cache")


@pytest.fixture
def s3_backend(s3_server, tmp_path) -> S3Backend:
    """An s3:// registry alone, for what only the S3 backend does."""
    return S3Backend(s3_server, f"reg-{uuid.uuid4().hex[:10]}", tmp_path / "cache")


@pytest.fixture
def release(tmp_path) -> Path:
    """A small model folder: weights, spec, and a nested SavedModel-like folder."""
    folder = tmp_path / "release"
    (folder / "saved_model" / "variables").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(48)))
    (folder / "model.json").write_text('{"name": "m", "threshold": 0.5}')
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01pb")
    (folder / "saved_model" / "variables" / "variables.index").write_bytes(b"idx")
    return folder
