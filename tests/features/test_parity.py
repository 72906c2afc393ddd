"""Training/serving parity on synthetic_fraud, end to end, on both online stores.

The real path: prep's offline source -> point-in-time training frame -> kfkit.data.prep.prepare -> the DDP
trainer (torchrun) -> the registry -> the kfkit predictor and the Feast transformer over HTTP. For a sample
of entities the rows the model trained on equal the rows the transformer's lookup returns, bit for bit, and
predictions through the transformer equal offline predictions. A skewed transformation is caught.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
from feature_store_helpers import features_config, redis_server, transformer

from kfkit.data.prep import prepare
from kfkit.data.sources import load
from kfkit.deploy.local import free_port, start_server, stop_server
from kfkit.features.offline import write_offline_source
from kfkit.features.online import OnlineFeatureLookup
from kfkit.features.parity import compare_rows, serve_check
from kfkit.features.repo import materialize
from kfkit.features.spec import SPEC_FILE
from kfkit.features.training import historical_frame
from kfkit.model import load_model, predict_proba
from kfkit.registry import publish_folder
from kfkit.training.launcher import train

pytestmark = pytest.mark.slow  # trains a model, starts a predictor, a redis-server and transformers

NAME = "fraud-mlp"
OVERRIDES = ("dataset.n_rows=3000", "+features.transforms.amount=log1p", "training=fast", "training.epochs=3",
             "training.device=cpu", f"model.name={NAME}")  # fmt: skip
SAMPLE = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The model trained on features read back from Feast (point in time), published, behind a predictor."""
    root = tmp_path_factory.mktemp("parity")
    cfg = features_config(root / "repo-sqlite", *OVERRIDES)
    frame = load(cfg.dataset)
    write_offline_source(frame, cfg, root / "offline")  # what prep does first when features.enabled
    prepared = prepare(cfg.dataset, root / "prepared", frame=historical_frame(cfg))
    train(prepared.out_dir, cfg, root / "model")
    model, spec = load_model(root / "model")
    version = publish_folder(root / "model", registry_uri=f"file://{root / 'registry'}", name=NAME)
    predictor = start_server(version.uri, model_name=NAME, http_port=free_port(), grpc_port=free_port(),
                             log_path=root / "predictor.log")  # fmt: skip
    try:
        train_rows = pd.read_parquet(Path(prepared.out_dir) / "train.parquet")
        end = frame.event_timestamp.max().to_pydatetime() + timedelta(seconds=1)
        yield SimpleNamespace(root=root, cfg=cfg, frame=frame, model=model, spec=spec, uri=version.uri,
                              predictor=predictor, train_rows=train_rows, end=end)  # fmt: skip
    finally:
        stop_server(predictor)


@pytest.fixture(scope="module")
def sqlite_repo(trained) -> Path:
    """The repository training read, materialized into its SQLite online store."""
    repo = Path(trained.cfg.features.repo_path)
    materialize(repo, end=trained.end)
    return repo


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, trained, sqlite_repo):
    """A materialized repository on each online store, and a transformer reading it."""
    root, store = trained.root, request.param
    with contextlib.ExitStack() as stack:
        repo = sqlite_repo
        if store == "redis":  # the same offline source and schema, another online store
            redis = stack.enter_context(redis_server(root / "redis"))
            cfg = features_config(root / "repo-redis", *OVERRIDES, store="redis", redis_port=redis.port)
            write_offline_source(trained.frame, cfg, root / "offline-redis")
            repo = Path(cfg.features.repo_path)
            materialize(repo, end=trained.end)
        server = stack.enter_context(
            transformer(repo, trained.uri, trained.predictor.http_port, root / f"transformer-{store}.log")
        )
        sample = _sample(trained)
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
            yield SimpleNamespace(store=store, repo=repo, client=client, sample=sample, server=server)


def _sample(trained) -> pd.DataFrame:
    """Training rows that are their card's latest transaction: the row the online store holds for the card."""
    latest = trained.frame.sort_values("event_timestamp", kind="stable").groupby("card_id").tail(1)
    keys = set(zip(latest.card_id, latest.event_timestamp, strict=True))
    rows = trained.train_rows
    mine = rows[[key in keys for key in zip(rows.card_id, rows.event_timestamp, strict=True)]]
    assert len(mine) >= SAMPLE, f"only {len(mine)} latest rows in the training split"
    return mine.sample(n=SAMPLE, random_state=0).reset_index(drop=True)


def _predict_v1(client, ids) -> np.ndarray:
    response = client.post(f"/v1/models/{NAME}:predict", json={"instances": [{"card_id": i} for i in ids]})
    assert response.status_code == 200, response.text
    return np.array([p["probability"] for p in response.json()["predictions"]])


def test_the_model_saw_what_the_transformer_fetches(trained, served):
    ids = served.sample.card_id.astype(int).tolist()
    lookup = OnlineFeatureLookup(served.repo, trained.spec.feature_names)
    trained_on = served.sample[trained.spec.feature_names].to_numpy(np.float32)
    assert compare_rows(ids, trained.spec.feature_names, trained_on, lookup.lookup(ids).rows) == []
    # amount is log1p'd on both paths: the training rows are not the raw data.
    raw = trained.frame.set_index(["card_id", "event_timestamp"]).loc[
        list(zip(served.sample.card_id, served.sample.event_timestamp, strict=True)), "amount"
    ]
    np.testing.assert_array_equal(served.sample.amount.to_numpy(), np.log1p(raw.to_numpy(np.float32)))
    report = serve_check(served.repo, sample=SAMPLE)
    assert report.ok and report.checked == SAMPLE, report.summary()
    report = serve_check(served.repo, sample=SAMPLE, training=trained.train_rows)
    assert report.ok and report.checked == SAMPLE, report.summary()


def test_predictions_through_the_transformer_equal_offline_predictions(trained, served):
    ids = served.sample.card_id.astype(int).tolist()
    offline = predict_proba(trained.model, served.sample[trained.spec.feature_names].to_numpy(np.float32))
    np.testing.assert_allclose(_predict_v1(served.client, ids), offline, rtol=0, atol=1e-6)
    body = {"inputs": [{"name": "card_id", "shape": [len(ids)], "datatype": "INT64", "data": ids}]}
    response = served.client.post(f"/v2/models/{NAME}/infer", json=body)
    assert response.status_code == 200, response.text
    probability = next(o for o in response.json()["outputs"] if o["name"] == "probability")
    np.testing.assert_allclose(probability["data"], offline, rtol=0, atol=1e-6)


def test_missing_ids_in_a_batch_are_a_404_naming_them(served):
    ids = [int(served.sample.card_id[0]), 987654321, 987654322]
    response = served.client.post(f"/v1/models/{NAME}:predict", json={"instances": [{"card_id": i} for i in ids]})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert "card_id 987654321, 987654322 not found" in error and "(2 of 3 ids)" in error
    assert served.client.get("/v2/health/ready").status_code == 200


def test_a_skewed_transformation_is_caught(trained, sqlite_repo):
    skewed = _skewed_copy(sqlite_repo, sqlite_repo.parent / "repo-skewed")
    sample = _sample(trained)
    ids = sample.card_id.astype(int).tolist()
    trained_on = sample[trained.spec.feature_names].to_numpy(np.float32)
    mismatches = compare_rows(ids, trained.spec.feature_names, trained_on,
                              OnlineFeatureLookup(skewed, trained.spec.feature_names).lookup(ids).rows)  # fmt: skip
    assert {m.feature for m in mismatches} == {"amount"} and len(mismatches) == SAMPLE
    # Against the rows the model trained on, serve-check names the skewed feature. (Against the repository's
    # own offline path it cannot: both read the edited transforms.)
    assert serve_check(skewed, sample=SAMPLE).ok
    report = serve_check(skewed, sample=SAMPLE, training=trained.train_rows)
    assert not report.ok and {m.feature for m in report.mismatches} == {"amount"}, report.summary()
    assert report.summary().startswith(f"SKEW: {SAMPLE} of {SAMPLE} entities differ in features ['amount']")
    offline = predict_proba(trained.model, trained_on)
    with transformer(skewed, trained.uri, trained.predictor.http_port, skewed.parent / "skewed.log") as server:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
            got = _predict_v1(client, ids)
    assert np.abs(got - offline).max() > 1e-3  # the model scores other inputs than it trained on


def test_stale_rows_are_flagged_in_a_header(trained, sqlite_repo):
    # Staleness is judged in the lookup, the same for both stores (both are covered in test_online_lookup).
    stale = sqlite_repo.parent / "repo-stale"
    shutil.copytree(sqlite_repo, stale)
    from kfkit.features.repo import apply

    spec = json.loads((stale / SPEC_FILE).read_text())
    spec["ttl_s"] = 86400  # the data is months old: every row is past a day
    (stale / SPEC_FILE).write_text(json.dumps(spec))
    apply(stale)
    sample = _sample(trained)
    ids = sample.card_id.astype(int).tolist()[:3]
    with transformer(stale, trained.uri, trained.predictor.http_port, stale.parent / "stale.log",
                     "--stale-policy", "flag") as server:  # fmt: skip
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
            response = client.post(f"/v1/models/{NAME}:predict", json={"instances": [{"card_id": i} for i in ids]})
    assert response.status_code == 200, response.text
    assert response.headers["kfkit-stale-entities"] == ",".join(map(str, ids))
    offline = predict_proba(trained.model, sample[trained.spec.feature_names].to_numpy(np.float32)[:3])
    np.testing.assert_allclose([p["probability"] for p in response.json()["predictions"]], offline, atol=1e-6)


def test_cli_serve_check_exits_1_on_skew_and_0_on_parity(trained, sqlite_repo, capsys):
    from kfkit.cli import main

    prepared = str(trained.root / "prepared")
    assert main(["features", "serve-check", f"features.repo_path={sqlite_repo}", "--sample", "20"]) == 0
    assert "parity ok: 20 entities" in capsys.readouterr().out
    assert main(["features", "serve-check", f"features.repo_path={sqlite_repo}", "--prepared", prepared]) == 0
    skewed = _skewed_copy(sqlite_repo, sqlite_repo.parent / "repo-skewed-cli")
    assert main(["features", "serve-check", f"features.repo_path={skewed}", "--prepared", prepared]) == 1
    assert "SKEW: " in capsys.readouterr().out


def _skewed_copy(repo: Path, to: Path) -> Path:
    """A copy of ``repo`` whose serving side forgets training's log1p of amount."""
    shutil.copytree(repo, to)
    spec = json.loads((to / SPEC_FILE).read_text())
    spec["transforms"] = {}
    (to / SPEC_FILE).write_text(json.dumps(spec))
    return to
