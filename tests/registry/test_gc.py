"""Housekeeping after crashes: publishes killed with SIGKILL, then `kfkit registry gc`, on both backends."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfkit.errors import RegistryError

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("publish_child.py")
# Where each backend's publisher is killed, in turn: the points a real crash hits.
KILL_POINTS = {"file": ["mid-copy", "after-commit"], "s3": ["after-commit", "after-claim", "mid-upload"]}


def _overrides(backend) -> list[str]:
    if backend.kind == "file":
        return [f"registry.uri={backend.uri}"]
    return [f"registry.uri={backend.uri}", f"registry.endpoint={backend.server.endpoint}", "registry.region=us-east-1"]


def _kfkit(backend, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfkit.cli", "registry", *args, *_overrides(backend)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip


def _kill_at(backend, source: Path, name: str, point: str) -> None:
    """Start a publish in a child process, let it reach ``point``, and SIGKILL it there."""
    endpoint = backend.server.endpoint if backend.kind == "s3" else ""
    child = subprocess.Popen([sys.executable, str(CHILD), backend.uri, endpoint, str(source), name, point],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        line = child.stdout.readline() if ready else ""
        assert line.strip() == "READY", f"the publish did not reach {point}: {line!r} {child.stderr.read()}"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
        child.stderr.close()


def _s3_keys(backend, under: str = "") -> list[str]:
    prefix = f"{backend.prefix}/{under}"
    objects = backend.server.client.list_objects(backend.server.bucket, prefix=prefix, recursive=True)
    return [o.object_name[len(backend.prefix) + 1 :] for o in objects]


def _leaked_claims(backend, name: str) -> list[str]:
    keys = set(_s3_keys(backend, f"{name}/"))
    claims = [k.rsplit("/", 1)[1] for k in keys if k.startswith(f"{name}/_claims/")]
    return [v for v in claims if f"{name}/{v}/manifest.json" not in keys]


def _staging_folders(backend) -> list[Path]:
    return sorted(backend.root.rglob(".staging-*")) if backend.kind == "file" else []


@pytest.mark.slow
def test_gc_after_nine_killed_publishes(backend, release):
    """Nine SIGKILLs at the crash points, then `gc --yes --grace 0`: nothing left, nothing lost."""
    # A killed first publish of a model: it must not show up as a model with 0 versions.
    first_point = KILL_POINTS[backend.kind][0 if backend.kind == "file" else 1]
    _kill_at(backend, release, "empty", first_point)
    assert backend.open().models() == []
    for i in range(8):
        _kill_at(backend, release, "m", KILL_POINTS[backend.kind][i % len(KILL_POINTS[backend.kind])])

    registry = backend.open()
    committed = [v.version for v in registry.versions("m")]
    if backend.kind == "file":
        assert committed == ["1", "2", "3", "4"]
        assert len(_staging_folders(backend)) == 9  # what the kills left: one staging folder each
    else:
        assert committed == ["1", "4", "7"]
        assert sorted(_leaked_claims(backend, "m"), key=int) == ["2", "3", "5", "6", "8"]
        assert _leaked_claims(backend, "empty") == ["1"]
    assert registry.models() == ["m"]
    listing = _kfkit(backend, "list")
    assert listing.returncode == 0, listing.stderr
    assert [row.split()[0] for row in listing.stdout.splitlines()[2:]] == ["m"]
    # Every committed version has its publish event, those killed before the log line was written too.
    events = registry.audit("m")
    assert [(e.action, e.to_version) for e in events] == [("publish", v) for v in committed]
    assert all(e.actor and e.time == registry.manifest("m", e.to_version)["created_at"] for e in events)

    dry = _kfkit(backend, "gc", "--grace", "0", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["items"]
    assert planned and all(i["action"] == "remove" and not i["done"] for i in planned), planned
    assert len(_staging_folders(backend)) == (9 if backend.kind == "file" else 0)  # a dry run removes nothing

    swept = _kfkit(backend, "gc", "--yes", "--grace", "0")
    assert swept.returncode == 0, swept.stderr
    assert "removed" in swept.stdout.splitlines()[-1], swept.stdout

    registry = backend.open()
    assert _staging_folders(backend) == []
    assert registry.models() == ["m"]
    assert [v.version for v in registry.versions("m")] == committed  # nothing committed was touched
    assert {e.to_version for e in registry.audit("m") if e.action == "publish"} == set(committed)
    for version in committed:
        registry.verify("m", version)
    if backend.kind == "file":
        assert not (backend.root / "empty").exists()
        assert registry.publish(release, name="m").version == "5"
    else:
        assert _leaked_claims(backend, "m") == [] and _s3_keys(backend, "empty/") == []
        assert [k for k in _s3_keys(backend, "m/") if k.split("/")[1] in {"2", "3", "5", "6", "8"}] == []
        assert registry.publish(release, name="m").version == "8"  # the next after the last committed (7)
    assert "nothing to remove" in _kfkit(backend, "gc", "--yes", "--grace", "0").stdout


@pytest.mark.slow
def test_gc_never_removes_what_a_running_publish_needs(backend, release, monkeypatch):
    """gc --yes --grace 0 runs while a publish is paused mid-way; the publish then completes and verifies."""
    registry = backend.open()
    paused, resume = threading.Event(), threading.Event()

    def pause() -> None:
        paused.set()
        assert resume.wait(60)

    if backend.kind == "file":
        copytree = shutil.copytree

        def copy(src, dst, **kwargs):
            result = shutil.copy2(src, dst, **kwargs)
            pause()
            return result

        def slow_copytree(src, dst, symlinks=False, ignore=None, copy_function=None, *args, **kwargs):
            return copytree(src, dst, symlinks, ignore, copy, *args, **kwargs)  # recurses through shutil.copytree

        monkeypatch.setattr(shutil, "copytree", slow_copytree)
    else:
        client = registry._client
        put = client.put_object

        def put_object(*args, **kwargs):
            result = put(*args, **kwargs)
            pause()
            return result

        monkeypatch.setattr(client, "put_object", put_object)
    outcome: dict = {}

    def publish() -> None:
        try:
            outcome["version"] = registry.publish(release, name="m")
        except Exception as e:  # reported by the assertion below
            outcome["error"] = e

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        assert paused.wait(60)
        swept = _kfkit(backend, "gc", "--yes", "--grace", "0", "--json")
    finally:
        resume.set()
        publisher.join(60)
    assert swept.returncode == 0, swept.stderr
    items = json.loads(swept.stdout)["items"]
    assert [(i["action"], i["kind"]) for i in items] == [("keep", "staging" if backend.kind == "file" else "claim")]
    assert "running" in items[0]["reason"] or "lock" in items[0]["reason"], items
    assert "error" not in outcome, outcome
    assert outcome["version"].version == "1"
    assert backend.open().verify("m", "1")["version"] == "1"
    assert _staging_folders(backend) == []
    assert "nothing to remove" in _kfkit(backend, "gc", "--yes", "--grace", "0").stdout


def test_gc_is_a_dry_run_by_default_and_keeps_what_is_young(backend, release):
    registry = backend.open()
    registry.publish(release, name="m")
    backend.leave_partial("m", "2", {"model.json": b"{}"})  # as an older kfkit's killed publish left it
    backend.leave_partial("e", "1", {"model.json": b"{}"})
    assert registry.models() == ["m"]

    young = registry.gc(grace_s=3600, remove=True)
    assert young and all(i.action == "keep" and "grace" in i.reason and not i.done for i in young), young
    if backend.kind == "s3":  # a claim without a process id: trusted for the lease after it was written
        assert {i.version for i in registry.gc(grace_s=0)} == {"1", "2"}
        assert all("cannot check" in i.reason for i in registry.gc(grace_s=0))
        return
    planned = registry.gc(grace_s=0)
    assert {(i.model, i.kind, i.action) for i in planned} == {
        ("m", "staging", "remove"), ("e", "staging", "remove"), ("e", "model", "remove")}  # fmt: skip
    assert len(_staging_folders(backend)) == 2  # only reported
    removed = registry.gc(grace_s=0, remove=True)
    assert all(i.done for i in removed) and len(removed) == 3
    assert _staging_folders(backend) == [] and not (backend.root / "e").exists()
    assert registry.publish(release, name="m").version == "2"


def test_s3_gc_frees_the_numbers_of_dead_local_publishers_only(s3_backend, release):
    """A claim gc cannot check (another host) is trusted for a lease, then tombstoned: its number stays taken."""
    from kfkit.registry import s3 as s3_module

    backend = s3_backend
    registry = backend.open()
    registry.publish(release, name="m")
    now = time.time()

    def claim(version: str, age_s: float, **identity) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - age_s))
        body = {"version": version, "publish_id": "x", "claimed_at": stamp, "heartbeat_at": stamp, **identity}
        backend.leave_partial("m", version, {"model.json": b"{}"})
        backend.write("m", "_claims", version, json.dumps(body).encode())

    mine = s3_module._process_identity()
    claim("2", 5, host="elsewhere", pid=1, boot_id="b", pidns="p")  # another host, heartbeat 5 s ago
    claim("3", 7200, host="elsewhere", pid=1, boot_id="b", pidns="p")  # another host, silent for 2 h
    claim("4", 5, **{**mine, "pid": 2**22 + 7})  # this host, a pid that does not exist

    items = {i.version: i for i in registry.gc(grace_s=0, remove=True)}
    assert (items["2"].action, items["3"].action, items["4"].action) == ("keep", "remove", "remove")
    assert items["3"].done and "tombstone" in items["3"].reason
    assert items["4"].done and "is gone" in items["4"].reason
    keys = _s3_keys(backend, "m/")
    assert "m/_claims/3" in keys and not [k for k in keys if k.startswith(("m/3/", "m/4/"))]
    assert "m/_claims/4" not in keys and "m/2/model.json" in keys
    assert registry.publish(release, name="m").version == "4"  # 2 is held, 3 stays a tombstone, 4 was freed


def test_s3_a_publisher_whose_claim_gc_took_over_does_not_commit(s3_backend, release, monkeypatch):
    """A stalled publisher gc presumed dead notices at its next heartbeat and stops; nothing is committed."""
    from kfkit.registry import s3 as s3_module

    backend = s3_backend
    registry = backend.open()
    paused, resume = threading.Event(), threading.Event()
    client = registry._client
    put = client.put_object

    def put_object(*args, **kwargs):
        result = put(*args, **kwargs)
        paused.set()
        assert resume.wait(60)
        return result

    monkeypatch.setattr(client, "put_object", put_object)
    outcome: dict = {}

    def publish() -> None:
        try:
            outcome["version"] = registry.publish(release, name="m")
        except RegistryError as e:
            outcome["error"] = str(e)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        assert paused.wait(60)
        # As seen from another host after the lease ran out:
        monkeypatch.setattr(s3_module, "_publisher_state", lambda claim: "unknown")
        monkeypatch.setattr(s3_module, "_LEASE_S", 0.0)
        reaped = backend.open().gc(grace_s=0, remove=True)
        assert [(i.version, i.done) for i in reaped] == [("1", True)]
    finally:
        resume.set()
        publisher.join(60)
    assert "taken over" in outcome.get("error", ""), outcome
    assert backend.open().versions("m") == []
    assert _s3_keys(backend, "m/") == ["m/_claims/1"]  # the tombstone: number 1 is never handed out again
    monkeypatch.undo()
    assert backend.open().publish(release, name="m").version == "2"


def test_s3_gc_aborts_the_multipart_uploads_of_a_dead_publisher(s3_backend):
    from kfkit.registry import s3 as s3_module

    backend = s3_backend
    client, bucket = backend.server.client, backend.server.bucket
    key = f"{backend.prefix}/m/1/model.safetensors"
    client._create_multipart_upload(bucket, key, {})
    body = json.dumps({"version": "1", **s3_module._process_identity(), "pid": 2**22 + 9}).encode()
    backend.write("m", "_claims", "1", body)
    items = backend.open().gc(grace_s=0, remove=True)
    assert [(i.version, i.done) for i in items] == [("1", True)]
    uploads = client._list_multipart_uploads(bucket, prefix=f"{backend.prefix}/m/").uploads
    assert uploads == [] and _s3_keys(backend, "m/") == []


def test_s3_gc_removes_objects_nobody_claims(s3_backend, release):
    backend = s3_backend
    registry = backend.open()
    registry.publish(release, name="m")
    backend.write("m", "2", "model.json", b"{}")  # e.g. a PUT that landed after its dead publisher's claim went
    assert [(i.kind, i.action) for i in registry.gc(grace_s=3600)] == [("objects", "keep")]
    assert [(i.kind, i.version, i.done) for i in registry.gc(grace_s=0, remove=True)] == [("objects", "2", True)]
    kept = sorted(k for k in _s3_keys(backend, "m/") if not k.startswith("m/_audit/"))
    assert kept == sorted(["m/_claims/1", *(f"m/1/{rel}" for rel in _release_files())])
    assert registry.publish(release, name="m").version == "2"


def _release_files() -> list[str]:
    return ["manifest.json", "model.json", "model.safetensors", "saved_model/saved_model.pb",
            "saved_model/variables/variables.index"]  # fmt: skip
