"""What the deploy tests share: the test bucket, the lineage commit, and versions published as the pipeline does."""

from __future__ import annotations

from pathlib import Path

BUCKET = "kfkit-deploy"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def publish_versions(registry, name: str, count: int, tmp_path: Path) -> list:
    """Publish ``count`` small versions of ``name`` with lineage metadata, as the pipeline's publish writes it."""
    versions = []
    for i in range(1, count + 1):
        folder = tmp_path / f"{name}-{i}"
        folder.mkdir()
        (folder / "model.json").write_text(f'{{"name": "{name}", "weights": {i}}}\n')
        code = {"kfkit": "0.1.0", "git_commit": GIT_COMMIT}
        lineage = {"dataset_sha256": "d" * 64, "pipeline_run_id": f"run-{i}", "code": code}
        metadata = {"run_id": f"run-{i}", "lineage": lineage}
        versions.append(registry.publish(folder, name=name, metadata=metadata))
    return versions
