"""`kfkit registry list|show|promote|rollback|verify|audit`, on a file:// and an s3:// registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _kfkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfkit.cli", "registry", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, **(env or {})})  # fmt: skip


def _publish_two(backend, release):
    registry = backend.open()
    registry.publish(release, name="m", metadata={"metrics": {"roc_auc": 0.91, "pr_auc": 0.8}, "threshold": 0.42,
                                                  "run_id": "run-a"})  # fmt: skip
    (release / "model.json").write_text('{"name": "m", "threshold": 0.6}')
    registry.publish(release, name="m", metadata={"metrics": {"roc_auc": 0.95}, "run_id": "run-b"})


@pytest.mark.slow
def test_registry_cli(backend, release):
    _publish_two(backend, release)
    if backend.kind == "file":
        uri = ["--registry-uri", backend.uri]
    else:  # through the config overrides, as `kfkit run registry=s3 ...` would name it
        uri = [
            f"registry.uri={backend.uri}",
            f"registry.endpoint={backend.server.endpoint}",
            "registry.region=us-east-1",
        ]

    listing = _kfkit("list", *uri)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].split() == ["MODEL", "VERSIONS", "LATEST", "ALIASES"]
    assert listing.stdout.splitlines()[2].split() == ["m", "2", "2"]

    promoted = _kfkit("promote", "m", "1", "--reason", "first", *uri)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith("m production -> version 1, by ")
    assert _kfkit("promote", "m", "2", *uri).stdout.startswith("m production -> version 2 (was 1)")

    versions = json.loads(_kfkit("list", "m", "--json", *uri).stdout)
    assert [v["version"] for v in versions["versions"]] == ["1", "2"]
    assert versions["aliases"] == {"production": "2"} and versions["versions"][0]["metrics"]["roc_auc"] == 0.91
    table = _kfkit("list", "m", *uri).stdout.splitlines()
    assert table[1].split()[:3] == ["VERSION", "CREATED", "(UTC)"]
    assert "production" in table[3] and "0.9100" in table[2] and "0.4200" in table[2]

    shown = _kfkit("show", "m", *uri)  # default: what production points at
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("m version 2  (production)")
    assert f"storage URI  {backend.uri}/m/2" in shown.stdout and "saved_model/variables/variables.index" in shown.stdout
    detail = json.loads(_kfkit("show", "m", "1", "--json", *uri).stdout)
    assert detail["files"]["model.safetensors"]["size"] == 48 and len(detail["files"]) == 4

    rolled = _kfkit("rollback", "m", "--reason", "canary errors", *uri)
    assert rolled.stdout.startswith("m production -> version 1 (rolled back from 2)")
    audit = json.loads(_kfkit("audit", "m", "--json", *uri).stdout)
    assert [(e["action"], e["from"], e["to"]) for e in audit][-3:] == [
        ("promote", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1")]  # fmt: skip
    assert audit[-1]["reason"] == "canary errors"
    assert "rollback" in _kfkit("audit", "m", *uri).stdout

    ok = _kfkit("verify", "m", *uri)
    assert ok.returncode == 0 and ok.stdout.count(" ok ") == 2, ok.stdout
    backend.write("m", "2", "model.json", b'{"name": "m", "threshold": 0.1}')
    bad = _kfkit("verify", "m", *uri)
    assert bad.returncode == 1
    assert "FAILED" in bad.stdout and "sha256" in bad.stdout
    assert bad.stderr.strip() == "kfkit registry verify: 1 of 2 versions of m failed: 2"


@pytest.mark.parametrize(
    ("args", "expected", "status"),
    [
        (["show", "nope"], "nope version 1 is not published", 2),
        (["promote", "m"], "takes NAME VERSION|ALIAS; got ['m']", 2),
        (["rollback", "m"], "no alias 'production'", 2),
        (["show", "m", "staging"], "m has no alias 'staging'", 2),
        (["list", "--registry-uri", "gs://b/models"], "'gs' is not supported", 1),
        (["list", "registry.urii=x"], "urii", 2),
    ],
)
def test_registry_cli_errors_are_one_line(tmp_path, release, args, expected, status):
    from kfkit.registry import open_registry

    open_registry(f"file://{tmp_path / 'reg'}").publish(release, name="m")
    extra = [] if "--registry-uri" in args else ["--registry-uri", f"file://{tmp_path / 'reg'}"]
    result = _kfkit(*args, *extra)
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kfkit registry {args[0]}: error:"), result.stderr
    assert expected in lines[0]


def test_run_checks_an_s3_registry_before_training(s3_server, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kfkit.cli", "run", "registry=s3", "registry.uri=s3://no-such-bucket/models",
         f"registry.endpoint={s3_server.endpoint}", f"work_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "create the bucket 'no-such-bucket'" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "pipeline_root").exists()


@pytest.mark.parametrize(
    ("args", "value"),
    [
        (["promote", "breast-cancer-mlp", "01", "--alias", "production"], "version '01'"),
        (["promote", "breast-cancer-mlp", "1", "--alias", "Prod"], "alias 'Prod'"),
        (["show", "Breast"], "model name 'Breast'"),
        (["list", "Breast"], "model name 'Breast'"),
        (["verify", "breast-cancer-mlp", "01"], "version '01'"),
        (["rollback", "breast-cancer-mlp", "--alias", "Prod"], "alias 'Prod'"),
        (["audit", "Breast"], "model name 'Breast'"),
        (["gc", "Breast"], "model name 'Breast'"),
    ],
)
def test_invalid_names_versions_and_aliases_are_usage_errors(tmp_path, release, args, value):
    """The help says usage errors exit 2: a name that cannot be one is the user's input, like an unknown one."""
    from kfkit.registry import open_registry

    uri = f"file://{tmp_path / 'reg'}"
    open_registry(uri).publish(release, name="breast-cancer-mlp")
    result = _kfkit(*args, f"registry.uri={uri}")
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kfkit registry {args[0]}: error: "), result.stderr
    assert value in lines[0] and "is not valid" in lines[0]
