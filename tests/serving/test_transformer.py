"""The Feast transformer end to end: a local Feast repo (SQLite online store), a kfkit predictor, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch

from kfkit.data.sources import synthetic_fraud
from kfkit.deploy.local import free_port, start_server, stop_server
from kfkit.errors import ConfigError
from kfkit.model import ModelSpec, build_model, predict_proba, save_model
from kfkit.registry import publish_folder

pytestmark = pytest.mark.slow  # feast takes seconds to import; two servers start

FEATURES = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
NAME = "fraud-mlp"
MISSING_ID = 987654321


def _feast_repo(root: Path, frame) -> Path:
    """A Feast repository like a user's: parquet offline source, SQLite online store, applied and materialized."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32

    repo = root / "feature_repo"
    repo.mkdir()
    frame[["card_id", "event_timestamp", *FEATURES]].to_parquet(repo / "transactions.parquet")
    (repo / "feature_store.yaml").write_text(
        "project: kfkit_test\nprovider: local\n"
        f"registry: {repo / 'registry.db'}\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 2\n"
    )
    store = FeatureStore(repo_path=str(repo))
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(repo / "transactions.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(
        name="card_features", entities=[card], ttl=timedelta(days=3650), source=source, online=True,
        schema=[Field(name=n, dtype=Float32) for n in FEATURES],
    )  # fmt: skip
    store.apply([card, view, FeatureService(name="fraud_model", features=[view])])
    start, end = frame.event_timestamp.min().to_pydatetime(), frame.event_timestamp.max().to_pydatetime()
    store.materialize(start_date=start - timedelta(days=1), end_date=end + timedelta(days=1))
    return repo


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/v2/models/{NAME}/ready", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"transformer not ready; log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer")
    frame = synthetic_fraud(n_rows=400, seed=11)
    repo = _feast_repo(root, frame)
    latest = frame.sort_values("event_timestamp").groupby("card_id").tail(1).set_index("card_id")

    torch.manual_seed(0)
    spec = ModelSpec(name=NAME, feature_names=FEATURES, hidden_dims=[8])
    net = build_model(spec)
    data = frame[FEATURES].to_numpy(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(data.mean(0)))
        net.feature_std.copy_(torch.from_numpy(data.std(0)))
    net.eval()
    version = publish_folder(
        save_model(net, spec, root / "model"), registry_uri=f"file://{root / 'registry'}", name=NAME
    )

    predictor = start_server(
        version.uri, model_name=NAME, http_port=free_port(), grpc_port=free_port(), log_path=root / "predictor.log"
    )
    port = free_port()
    log = root / "transformer.log"
    command = [sys.executable, "-m", "kfkit.serving.transformer", "--feast-repo", str(repo), "--model-uri", version.uri]
    command += ["--predictor-host", f"127.0.0.1:{predictor.http_port}", "--http_port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process, log)
        ids = [int(i) for i in latest.index[:3]]
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            yield SimpleNamespace(
                client=client, net=net, ids=ids, rows=latest.loc[ids, FEATURES].to_numpy(np.float32), repo=repo,
                log=log, process=process, predictor=predictor, frame=frame,
            )  # fmt: skip
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        stop_server(predictor)


def _expected(stack, rows=None) -> np.ndarray:
    return predict_proba(stack.net, stack.rows if rows is None else rows)


def test_v1_entity_ids_are_scored_with_online_features(stack):
    response = stack.client.post(f"/v1/models/{NAME}:predict", json={"instances": [{"card_id": i} for i in stack.ids]})
    assert response.status_code == 200, response.text
    got = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(got, _expected(stack), rtol=0, atol=1e-6)


def test_v2_entity_id_tensor_is_scored_with_online_features(stack):
    body = {"inputs": [{"name": "card_id", "shape": [3], "datatype": "INT64", "data": stack.ids}]}
    response = stack.client.post(f"/v2/models/{NAME}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    np.testing.assert_allclose(outputs["probability"]["data"], _expected(stack), rtol=0, atol=1e-6)
    assert outputs["label"]["data"] == (_expected(stack) >= 0.5).astype(int).tolist()


def test_repeated_ids_and_raw_rows_mix_in_one_v1_request(stack):
    raw = stack.rows[1].tolist()
    named = dict(zip(FEATURES, stack.rows[2].tolist(), strict=True))
    instances = [{"card_id": stack.ids[0]}, raw, {"card_id": stack.ids[0]}, named]
    response = stack.client.post(f"/v1/models/{NAME}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    got = [p["probability"] for p in response.json()["predictions"]]
    expected = _expected(stack, stack.rows[[0, 1, 0, 2]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("protocol", ["v1-rows", "v1-named", "v2"])
def test_raw_features_pass_through(stack, protocol):
    rows = stack.rows[:2]
    if protocol == "v2":
        body = {
            "inputs": [{"name": "features", "shape": [2, 30], "datatype": "FP32", "data": rows.reshape(-1).tolist()}]
        }
        response = stack.client.post(f"/v2/models/{NAME}/infer", json=body)
        got = next(o for o in response.json()["outputs"] if o["name"] == "probability")["data"]
    else:
        instances = (
            rows.tolist() if protocol == "v1-rows" else [dict(zip(FEATURES, r, strict=True)) for r in rows.tolist()]
        )
        response = stack.client.post(f"/v1/models/{NAME}:predict", json={"instances": instances})
        got = [p["probability"] for p in response.json()["predictions"]]
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(got, _expected(stack, rows), rtol=0, atol=1e-6)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_missing_entity_id_is_404_naming_it(stack, protocol):
    ids = [stack.ids[0], MISSING_ID]
    if protocol == "v1":
        response = stack.client.post(f"/v1/models/{NAME}:predict", json={"instances": [{"card_id": i} for i in ids]})
    else:
        body = {"inputs": [{"name": "card_id", "shape": [2], "datatype": "INT64", "data": ids}]}
        response = stack.client.post(f"/v2/models/{NAME}/infer", json=body)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert str(MISSING_ID) in error and "card_id" in error and str(stack.ids[0]) not in error
    assert stack.client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        (f"/v1/models/{NAME}:predict", {"instances": [{"card_id": "abc"}]}, 400, "'abc' is not an integer"),
        (f"/v1/models/{NAME}:predict", {"instances": [{"card_id": 1, "amount": 3.0}]}, 400, "mixes the entity key"),
        (
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "card_id", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            400,
            "datatype FP32",
        ),
        (f"/v1/models/{NAME}:predict", {"instances": [[1.0, 2.0]]}, 400, "predictor answered 400"),
    ],
    ids=["string-id", "mixed-row", "float-ids", "predictor-4xx"],
)
def test_bad_requests_are_4xx_with_json_error(stack, path, body, status, fragment):
    response = stack.client.post(path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_lookup_without_a_feature_service_gives_the_same_rows(stack):
    from kfkit.features.online import OnlineFeatureLookup

    service = OnlineFeatureLookup(stack.repo, FEATURES)
    assert service.feature_service == "fraud_model" and service.entity_key == "card_id"
    reversed_order = OnlineFeatureLookup(stack.repo, FEATURES[::-1])
    np.testing.assert_array_equal(reversed_order.lookup(stack.ids).rows[:, ::-1], service.lookup(stack.ids).rows)
    np.testing.assert_array_equal(service.lookup(stack.ids).rows, stack.rows)
    assert service.transforms == {} and service.lookup(stack.ids).stale == []  # a plain Feast repo: no kfkit spec


def test_lookup_rejects_an_unknown_feature_or_service(stack):
    from kfkit.features.online import OnlineFeatureLookup

    with pytest.raises(ConfigError, match="'nope'"):
        OnlineFeatureLookup(stack.repo, [*FEATURES, "nope"])
    with pytest.raises(ConfigError, match="'other' is not registered"):
        OnlineFeatureLookup(stack.repo, FEATURES, feature_service="other")
    with pytest.raises(ConfigError, match="no feature_store.yaml"):
        OnlineFeatureLookup(stack.repo.parent, FEATURES)


def test_cli_fails_at_once_on_a_bad_repo(tmp_path, stack):
    command = [sys.executable, "-m", "kfkit.serving.transformer", "--feast-repo", str(tmp_path)]
    command += ["--model-uri", "file:///nonexistent/x/1", "--predictor-host", "127.0.0.1:1"]
    command += ["--http_port", str(free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("python -m kfkit.serving.transformer: error:")


def test_an_unreachable_predictor_is_502(stack):
    import asyncio

    from kfkit.errors import UpstreamError
    from kfkit.features.online import OnlineFeatureLookup
    from kfkit.serving.transformer import FeastTransformer

    lookup = OnlineFeatureLookup(stack.repo, FEATURES)
    transformer = FeastTransformer(NAME, lookup=lookup, predictor_url=f"http://127.0.0.1:{free_port()}", timeout_s=5)

    async def call():
        try:
            return await transformer.predict({"instances": stack.rows[:1].tolist()})
        finally:
            await transformer._client.close()

    with pytest.raises(UpstreamError, match="is unreachable") as info:
        asyncio.run(call())
    assert info.value.status_code == 502
