"""The file:// registry: numbering, immutability, digest verification."""

import json
import os

import pytest

from kfkit.errors import RegistryError
from kfkit.registry import MANIFEST_FILE, publish_folder, resolve, sha256_file, verify


@pytest.fixture
def release(tmp_path):
    folder = tmp_path / "release"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights" * 10)
    (folder / "model.json").write_text('{"name": "m"}')
    (folder / "sub" / "extra.txt").write_text("x")
    return folder


def test_publish_numbers_versions_and_lists_digests(tmp_path, release):
    uri = f"file://{tmp_path}/reg"
    first = publish_folder(release, registry_uri=uri, name="m", metadata={"accuracy": 0.9})
    second = publish_folder(release, registry_uri=uri, name="m")
    assert (first.version, second.version) == ("1", "2")
    manifest = json.loads((tmp_path / "reg/m/1" / MANIFEST_FILE).read_text())
    assert manifest["files"]["model.safetensors"] == sha256_file(release / "model.safetensors")
    assert set(manifest["files"]) == {"model.safetensors", "model.json", "sub/extra.txt"}
    assert manifest["metadata"] == {"accuracy": 0.9}
    assert resolve(first.uri) == tmp_path / "reg/m/1"
    assert not [p for p in (tmp_path / "reg/m").iterdir() if p.name.startswith(".staging")]


def test_every_flipped_byte_is_caught(tmp_path, release):
    version = publish_folder(release, registry_uri=f"file://{tmp_path}/reg", name="m")
    folder = tmp_path / "reg/m/1"
    for rel in ("model.safetensors", "model.json", "sub/extra.txt"):
        path = folder / rel
        original = path.read_bytes()
        for offset in range(len(original)):
            corrupted = bytearray(original)
            corrupted[offset] ^= 0x01
            path.write_bytes(bytes(corrupted))
            with pytest.raises(RegistryError, match="sha256"):
                resolve(version.uri)
        path.write_bytes(original)
    verify(folder)


def test_added_or_removed_files_are_caught(tmp_path, release):
    publish_folder(release, registry_uri=f"file://{tmp_path}/reg", name="m")
    folder = tmp_path / "reg/m/1"
    (folder / "intruder.py").write_text("print('hi')")
    with pytest.raises(RegistryError, match="intruder.py"):
        verify(folder)
    os.remove(folder / "intruder.py")
    os.remove(folder / "model.json")
    with pytest.raises(RegistryError, match="missing"):
        verify(folder)


def test_not_a_version_and_unsupported_scheme(tmp_path, release):
    with pytest.raises(RegistryError, match="not a published version"):
        resolve(f"file://{tmp_path}")
    with pytest.raises(RegistryError, match="gs"):
        publish_folder(release, registry_uri="gs://bucket/reg", name="m")
    with pytest.raises(RegistryError, match="nothing to publish"):
        publish_folder(tmp_path / "empty", registry_uri=f"file://{tmp_path}/reg", name="m")


def test_existing_version_is_never_overwritten(tmp_path, release):
    uri = f"file://{tmp_path}/reg"
    publish_folder(release, registry_uri=uri, name="m")
    before = sha256_file(tmp_path / "reg/m/1/model.safetensors")
    (release / "model.safetensors").write_bytes(b"other")
    again = publish_folder(release, registry_uri=uri, name="m")
    assert again.version == "2"
    assert sha256_file(tmp_path / "reg/m/1/model.safetensors") == before


def test_a_modified_manifest_is_caught(tmp_path, release):
    version = publish_folder(release, registry_uri=f"file://{tmp_path}/reg", name="m", metadata={"note": "a"})
    path = tmp_path / "reg/m/1" / MANIFEST_FILE
    original = path.read_text()
    path.write_text(original.replace('"note": "a"', '"note": "b"'))  # valid JSON, only metadata changed
    with pytest.raises(RegistryError, match="does not match its own digest"):
        resolve(version.uri)
    path.write_text(original.replace("\n", "\n ", 1))  # same content, other bytes
    with pytest.raises(RegistryError, match="modified"):
        resolve(version.uri)
    path.write_text(original)
    assert resolve(str(tmp_path / "reg/m/1")) == tmp_path / "reg/m/1"  # a plain path, as KServe's /mnt/models
