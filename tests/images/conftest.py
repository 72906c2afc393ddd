"""Image fixtures: both images built once per session (skipped when their inputs did not change)."""

from __future__ import annotations

import subprocess

import pytest
from images_helpers import REPO, build_images, require_tools


@pytest.fixture(scope="session")
def image_commit() -> str:
    """HEAD as the build sees it; read before the build, since a commit may land while it runs."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def images(tmp_path_factory, image_commit) -> dict[str, str]:
    """``{"kfkit": ref, "kfkit-drift": ref}``, built by scripts/build-images.sh into buildah's storage."""
    require_tools()
    return build_images(tmp_path_factory.mktemp("images") / "build.log")
