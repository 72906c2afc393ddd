"""One registry test suite, run against both backends: file:// on disk and s3:// over HTTP (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from kfkit.errors import RegistryError, VersionNotFound
from kfkit.registry import MANIFEST_FILE, resolve, sha256_file


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_publish_numbers_versions_and_lists_every_digest(backend, release):
    registry = backend.open()
    first = registry.publish(release, name="m", metadata={"metrics": {"roc_auc": 0.97}})
    second = registry.publish(release, name="m")
    assert (first.version, second.version) == ("1", "2")
    manifest = registry.manifest("m", "1")
    assert manifest["files"] == {rel: sha256_file(release / rel) for rel in _files(release)}
    assert manifest["sizes"]["model.safetensors"] == 48
    assert manifest["metadata"] == {"metrics": {"roc_auc": 0.97}}
    assert [v.version for v in registry.versions("m")] == ["1", "2"]
    assert registry.versions("m")[0].metadata["metrics"]["roc_auc"] == 0.97
    assert registry.models() == ["m"]
    folder = registry.fetch("m", "1")
    assert {k: v for k, v in _files(folder).items() if k != MANIFEST_FILE} == _files(release)
    if backend.kind == "s3":
        assert first.uri == f"{backend.uri}/m/1/"  # the folder KServe's storage initializer downloads
        assert first.path == ""
    else:
        assert first.uri == (backend.root / "m" / "1").as_uri()
        assert Path(first.path) == folder


def test_explicit_versions_are_immutable(backend, release):
    registry = backend.open()
    assert registry.publish(release, name="m", version=5).version == "5"
    (release / "model.json").write_text('{"name": "m", "threshold": 0.7}')
    with pytest.raises(RegistryError, match=r"version 5 already exists.*next number \(6\)"):
        registry.publish(release, name="m", version="5")
    assert backend.read("m", "5", "model.json") == b'{"name": "m", "threshold": 0.5}'
    assert registry.publish(release, name="m").version == "6"
    for bad in ("05", "0", "abc", "-1"):
        with pytest.raises(RegistryError, match="positive integers"):
            registry.publish(release, name="m", version=bad)
    with pytest.raises(RegistryError, match="not valid"):
        registry.publish(release, name="Bad_Name")
    with pytest.raises(RegistryError, match="nothing to publish"):
        registry.publish(release / "missing", name="m")


def _offsets(size: int, exhaustive: bool) -> list[int]:
    if exhaustive or size <= 64:
        return list(range(size))
    return sorted({0, size - 1, *range(0, size, max(1, size // 40))})


def test_every_flipped_byte_is_refused_on_load(backend, release):
    backend.open().publish(release, name="m")
    stored = [*_files(release), MANIFEST_FILE]
    flips = 0
    for rel in stored:
        original = backend.read("m", "1", rel)
        # Every byte on disk; over HTTP every byte of small files and 40+ spread over the manifest.
        for offset in _offsets(len(original), exhaustive=backend.kind == "file"):
            corrupted = bytearray(original)
            corrupted[offset] ^= 0x01
            backend.write("m", "1", rel, bytes(corrupted))
            with pytest.raises(RegistryError, match="sha256|modified|unreadable|digest"):
                backend.open().fetch("m", "1")
            flips += 1
        backend.write("m", "1", rel, original)
    assert flips > 100
    backend.open().verify("m", "1")  # restored: loads again


def test_added_and_removed_files_are_refused(backend, release):
    backend.open().publish(release, name="m")
    backend.write("m", "1", "intruder.py", b"print('hi')")
    with pytest.raises(RegistryError, match="intruder.py"):
        backend.open().fetch("m", "1")
    backend.delete("m", "1", "intruder.py")
    original = backend.read("m", "1", "model.json")
    backend.delete("m", "1", "model.json")
    with pytest.raises(RegistryError):
        backend.open().fetch("m", "1")
    backend.write("m", "1", "model.json", original)
    assert backend.open().verify("m", "1")["version"] == "1"


def test_concurrent_publishers_of_one_version_exactly_one_wins(backend, tmp_path):
    sources = []
    for i in range(4):
        folder = tmp_path / f"src{i}"
        folder.mkdir()
        for j in range(6):
            (folder / f"part{j}.bin").write_bytes(bytes([i]) * 4096)
        sources.append(folder)

    def publish(source: Path, version: str, barrier: threading.Barrier, wins: list, losses: list) -> None:
        registry = backend.open()
        barrier.wait()
        try:
            wins.append((source, registry.publish(source, name="m", version=version)))
        except RegistryError as e:
            losses.append(str(e))

    for version in ("7", "8"):
        barrier = threading.Barrier(len(sources))
        wins, losses = [], []
        threads = [threading.Thread(target=publish, args=(s, version, barrier, wins, losses)) for s in sources]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(wins) == 1, (wins, losses)
        assert len(losses) == 3 and all(f"version {version} already exists" in m for m in losses), losses
        winner = wins[0][0]
        folder = backend.open().fetch("m", version)  # the winner's bytes only, nothing mixed in
        assert {k: v for k, v in _files(folder).items() if k != MANIFEST_FILE} == _files(winner)


def test_concurrent_publishers_without_a_version_get_distinct_numbers(backend, release):
    barrier = threading.Barrier(4)
    got: list[str] = []

    def publish() -> None:
        registry = backend.open()
        barrier.wait()
        got.append(registry.publish(release, name="m").version)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got, key=int) == ["1", "2", "3", "4"]


def test_readers_never_see_a_partial_version(backend, release, tmp_path):
    registry = backend.open()
    registry.publish(release, name="m")
    registry.publish(release, name="m")
    backend.leave_partial("m", "3", {"model.json": b"{}", "model.safetensors": b"half"})
    assert [v.version for v in registry.versions("m")] == ["1", "2"]
    with pytest.raises(VersionNotFound, match="version 3 is not published"):
        registry.fetch("m", "3")
    assert registry.publish(release, name="m").version in {"3", "4"}  # s3 skips a claimed number

    # A live publish of many files: a reader polling all the while sees the version whole or not at all.
    big = tmp_path / "big"
    big.mkdir()
    for i in range(40):
        (big / f"shard-{i:02d}.bin").write_bytes(bytes([i]) * 32_768)
    seen_absent = seen_present = 0
    publisher = threading.Thread(target=lambda: backend.open().publish(big, name="big", version=1))
    reader = backend.open()
    publisher.start()
    while publisher.is_alive() or not seen_present:
        listed = [v.version for v in reader.versions("big")] == ["1"]
        try:
            folder = backend.open().fetch("big", "1")
        except VersionNotFound:
            assert not listed  # listed versions are always loadable
            seen_absent += 1
            continue
        assert len(_files(folder)) == 41  # loadable means complete and verified, never half
        seen_present += 1
    publisher.join()
    assert seen_absent >= 1 and seen_present >= 1


def test_promote_rollback_and_audit(backend, release, monkeypatch):
    monkeypatch.setenv("KFKIT_ACTOR", "ci-bot")
    registry = backend.open()
    for _ in range(3):
        registry.publish(release, name="m")
    with pytest.raises(VersionNotFound, match="no alias 'production'"):
        registry.rollback("m")
    registry.promote("m", 1, reason="first")
    registry.promote("m", 2)
    event = registry.promote("m", 3, reason="better roc_auc")
    assert (event.from_version, event.to_version, event.actor) == ("2", "3", "ci-bot")
    assert registry.aliases("m") == {"production": "3"}
    assert registry.get("m", "production").version == "3"
    assert registry.rollback("m", reason="bad canary").to_version == "2"
    assert registry.rollback("m").to_version == "1"  # keeps walking back
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        registry.rollback("m")
    registry.promote("m", 3, alias="staging")
    registry.promote("m", "staging")  # production takes what staging has
    assert registry.aliases("m") == {"production": "3", "staging": "3"}
    with pytest.raises(VersionNotFound, match="version 9 is not published"):
        registry.promote("m", 9)

    log = [(e.action, e.alias, e.from_version, e.to_version) for e in registry.audit("m")]
    assert log == [
        ("publish", None, None, "1"), ("publish", None, None, "2"), ("publish", None, None, "3"),
        ("promote", "production", None, "1"), ("promote", "production", "1", "2"), ("promote", "production", "2", "3"),
        ("rollback", "production", "3", "2"), ("rollback", "production", "2", "1"),
        ("promote", "staging", None, "3"), ("promote", "production", "1", "3"),
    ]  # fmt: skip
    events = registry.audit("m")
    assert all(e.actor == "ci-bot" for e in events)
    assert events[3].reason == "first" and events[6].reason == "bad canary"
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_promote_refuses_a_corrupted_version(backend, release):
    registry = backend.open()
    registry.publish(release, name="m")
    backend.write("m", "1", "model.safetensors", b"tampered")
    with pytest.raises(RegistryError, match="sha256"):
        backend.open().promote("m", 1)
    assert registry.aliases("m") == {}


def test_concurrent_promotes_lose_no_update(backend, release):
    registry = backend.open()
    for _ in range(4):
        registry.publish(release, name="m")
    barrier = threading.Barrier(4)

    def promote(version: str) -> None:
        r = backend.open()
        barrier.wait()
        r.promote("m", version, verify=False)

    threads = [threading.Thread(target=promote, args=(str(v),)) for v in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    current = registry.aliases("m")["production"]
    history = registry.alias_history("m", "production")
    assert sorted([*history, current]) == ["1", "2", "3", "4"]  # every promote landed, in some order
    promotes = [e for e in registry.audit("m") if e.action == "promote"]
    assert len(promotes) == 4


def test_resolve_a_version_uri_to_a_verified_folder(backend, release, tmp_path, monkeypatch):
    version = backend.open().publish(release, name="m")
    if backend.kind == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", backend.server.endpoint)
        monkeypatch.setenv("KFKIT_CACHE_DIR", str(tmp_path / "kfkit-cache"))
        folder = resolve(version.uri)
        assert folder.is_relative_to(tmp_path / "kfkit-cache")
        assert resolve(version.uri) == folder  # cached, and checked again
        (folder / "model.json").write_text("{}")  # a damaged cache copy is fetched again, not served
        assert json.loads((resolve(version.uri) / "model.json").read_text())["threshold"] == 0.5
    else:
        folder = resolve(version.uri)
        assert folder == Path(version.path)
    assert json.loads((folder / MANIFEST_FILE).read_text())["name"] == "m"
    with pytest.raises(RegistryError, match="is not published|not a published version"):
        resolve(version.uri.rstrip("/").rsplit("/", 1)[0] + "/99")


def test_unsupported_scheme_names_the_fix():
    from kfkit.registry import open_registry

    with pytest.raises(RegistryError, match=r"'gs'.*file://PATH or s3://BUCKET/PREFIX"):
        open_registry("gs://bucket/models")


def test_every_file_of_a_version_is_0644_whatever_the_source_modes(backend, release, tmp_path, monkeypatch):
    """safetensors writes 0600; a version copied to a volume must stay readable by the serving runtime's user."""
    os.chmod(release / "model.safetensors", 0o600)
    os.chmod(release / "model.json", 0o640)
    os.chmod(release / "saved_model" / "variables" / "variables.index", 0o755)
    os.chmod(release / "saved_model" / "variables", 0o700)
    umask = os.umask(0o077)  # a publisher's (or a server's) restrictive umask changes nothing either
    try:
        version = backend.open().publish(release, name="m")
        if backend.kind == "s3":
            monkeypatch.setenv("AWS_ENDPOINT_URL", backend.server.endpoint)
            monkeypatch.setenv("KFKIT_CACHE_DIR", str(tmp_path / "kfkit-cache"))
        folders = [resolve(version.uri), backend.open().fetch("m", "1", dest=tmp_path / "copy")]
    finally:
        os.umask(umask)
    for folder in folders:
        modes = {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}
        assert set(modes) >= {*_files(release), MANIFEST_FILE}
        assert {rel: mode for rel, mode in modes.items() if (folder / rel).is_file()} == dict.fromkeys(
            [*_files(release), MANIFEST_FILE], 0o644
        )
        assert {mode for rel, mode in modes.items() if (folder / rel).is_dir()} == {0o755}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_a_version_whose_audit_line_was_lost_still_has_its_publish_event(backend, release, monkeypatch):
    registry = backend.open()
    registry.publish(release, name="m", actor="alice")

    def unwritable(name, event):
        raise RegistryError("the audit log is unwritable")

    monkeypatch.setattr(registry, "_append_audit", unwritable)
    version = registry.publish(release, name="m", actor="ci-bot")  # committed: its manifest is the record
    assert version.version == "2" and version.actor == "ci-bot"
    monkeypatch.undo()
    registry.promote("m", 2, verify=False)
    events = backend.open().audit("m")
    assert [(e.action, e.to_version, e.actor) for e in events] == [
        ("publish", "1", "alice"), ("publish", "2", "ci-bot"), ("promote", "2", events[2].actor)]  # fmt: skip
    assert events[1].time == registry.manifest("m", "2")["created_at"] == version.created_at


def test_models_with_no_committed_version_are_not_listed(backend, release):
    registry = backend.open()
    registry.publish(release, name="m")
    backend.leave_partial("killed-first-publish", "1", {"model.json": b"{}"})
    assert registry.models() == ["m"]
    with pytest.raises(VersionNotFound):
        registry.rollback("never-published")  # must not leave a model behind either
    assert registry.models() == ["m"]
