"""The pipeline's release path on an s3:// registry: gate against an S3 champion, publish, promote, serve."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from kfkit.config import compose
from kfkit.evaluation.metrics import evaluate
from kfkit.evaluation.report import write_report
from kfkit.gate import run_gate
from kfkit.model import load_scorer
from kfkit.registry import from_config, resolve
from kfkit.registry.publish import assemble, promote_release, publish_release


@pytest.fixture
def s3_cfg(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # what `kfkit run` passes to steps and the server
    monkeypatch.setenv("KFKIT_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"s3://{s3_server.bucket}/team-{uuid.uuid4().hex[:8]}"
    return compose(
        [
            "registry=s3",
            f"registry.uri={uri}",
            f"registry.endpoint={s3_server.endpoint}",
            "registry.region=us-east-1",
            "training.nproc=1",
        ]
    )


def _release(cfg, trained, tmp_path, tag: str):
    evaluation = tmp_path / f"eval-{tag}"
    write_report(evaluate(trained["model"], trained["prepared"], cfg.evaluation), evaluation, title=tag)
    decision = run_gate(cfg, prepared_dir=trained["prepared"], evaluation_dir=evaluation)
    (tmp_path / f"gate-{tag}.json").write_text(json.dumps(decision.to_dict()))
    release = assemble(
        cfg,
        model_dir=trained["model"],
        prepared_dir=trained["prepared"],
        evaluation_dir=evaluation,
        out_dir=tmp_path / f"release-{tag}",
        run_id=f"run-{tag}",
        gate_path=tmp_path / f"gate-{tag}.json",
    )
    return decision, evaluation, release


def test_gate_publish_promote_and_resolve_on_s3(s3_cfg, trained_breast_cancer, tmp_path):
    first, evaluation, release = _release(s3_cfg, trained_breast_cancer, tmp_path, "a")
    assert first.passed and first.champion is None
    version = publish_release(s3_cfg, release, run_id="run-a")
    assert version.uri == f"{s3_cfg.registry.uri}/breast-cancer-mlp/1/"
    assert promote_release(s3_cfg, version, run_id="run-a").to_version == "1"

    second, _, _ = _release(s3_cfg, trained_breast_cancer, tmp_path, "b")  # production is now an S3 champion
    assert second.passed and second.champion["uri"] == version.uri
    assert second.champion["metrics"]["roc_auc"] == pytest.approx(second.candidate["metrics"]["roc_auc"])

    folder = resolve(version.uri)  # what `kfkit serve --model-uri s3://…/1/` does first
    score, spec = load_scorer(folder)
    assert spec.threshold == json.loads((evaluation / "metrics.json").read_text())["threshold"]
    assert {"lineage.json", "config.json", "gate.json", "reference.parquet"} <= {p.name for p in folder.iterdir()}
    registry = from_config(s3_cfg.registry)
    assert registry.get("breast-cancer-mlp", "production").metadata["lineage"]["pipeline_run_id"] == "run-a"
    assert [e.action for e in registry.audit("breast-cancer-mlp")] == ["publish", "promote"]


@pytest.mark.slow
def test_kserve_server_serves_an_s3_version(s3_cfg, trained_breast_cancer, tmp_path, free_port):
    from kfkit.deploy.local import infer_v2, start_server, stop_server

    _, _, release = _release(s3_cfg, trained_breast_cancer, tmp_path, "a")
    version = publish_release(s3_cfg, release)
    endpoint = start_server(
        version.uri,
        model_name="breast-cancer-mlp",
        http_port=free_port(),
        grpc_port=free_port(),
        log_path=tmp_path / "server.log",
        timeout_s=120,
    )
    try:
        test = pd.read_parquet(trained_breast_cancer["prepared"] / "test.parquet")
        score, spec = load_scorer(trained_breast_cancer["model"])
        rows = test[spec.feature_names].to_numpy(dtype="float32")[:5]
        answer = infer_v2(endpoint, rows.tolist())
        served = {o["name"]: o["data"] for o in answer["outputs"]}
        np.testing.assert_allclose(served["probability"], score(rows), atol=1e-6)
        threshold = json.loads((release / "model.json").read_text())["threshold"]
        assert served["label"] == [int(p >= threshold) for p in served["probability"]]
    finally:
        stop_server(endpoint)
