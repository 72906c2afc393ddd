"""scripts/build-images.sh's command line: help, and bad arguments refused before anything is built."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-images.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_help_names_registry_and_tag() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "--registry" in result.stdout and "--tag" in result.stdout and "make images" in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tag", "no spaces"], "--tag 'no spaces'"),
        (["--registry", "Upper/Case"], "--registry 'Upper/Case'"),
        (["--only", "both"], "--only 'both'"),
        (["--push"], "unknown argument '--push'"),
    ],
)
def test_bad_arguments_are_refused_with_the_value(args: list[str], named: str) -> None:
    result = _run(*args)
    assert result.returncode == 2 and named in result.stderr, (result.returncode, result.stderr)
    assert "building" not in result.stderr
