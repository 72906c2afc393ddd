"""The detector as it runs: `.venv-drift/bin/python -m kfkit.serving.drift`, over HTTP, against a sink.

Each test starts the real process (about 10 s: alibi-detect imports torch), so they are marked slow.
"""

import json
import subprocess
import time

import numpy as np
import pytest
from drift_helpers import FEATURES, REPO, REQUEST, RESPONSE, drift_python, publish_version, rows_of

pytestmark = pytest.mark.slow

ISOLATION_SCRIPT = """
import json, sys, time
import numpy as np
from kfkit.serving.drift.service import DriftService
service = DriftService.from_uri(sys.argv[1], state_dir=sys.argv[2])
service.start()
h = {"ce-specversion": "1.0", "ce-source": "t", "content-type": "application/json",
     "ce-type": "org.kubeflow.serving.inference.request"}
rows = np.random.default_rng(0).standard_normal((100, 30)).tolist()
for i, row in enumerate(rows):
    body = {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": row}]}
    service.ingest({**h, "ce-id": str(i)}, json.dumps(body).encode())
deadline = time.time() + 60
while not service.windows() and time.time() < deadline:
    time.sleep(0.1)
service.stop()
heavy = ("kserve", "tensorflow", "kfp", "feast", "omegaconf", "hydra", "orjson", "kfkit.config", "kfkit.training")
print(json.dumps({"windows": len(service.windows()), "prefix": sys.prefix,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy)}))
"""


def test_the_detector_runs_on_the_drift_environment_alone(version_uri, tmp_path):
    result = subprocess.run(
        [str(drift_python()), "-c", ISOLATION_SCRIPT, version_uri, str(tmp_path / "state")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["prefix"] == str(REPO / ".venv-drift")
    assert facts["windows"] == 1
    assert facts["loaded"] == []  # nothing of the main environment, not even kfkit.config (omegaconf)


def test_a_drifted_window_sends_the_contract_event_with_a_report(version_uri, start_detector, sink):
    detector = start_detector(version_uri, "--sink", sink.url)
    rng = np.random.default_rng(3)
    same, shifted = rows_of(100, seed=2), rows_of(100, seed=5, shift=1.0)
    for i, row in enumerate(same):
        detector.pair(f"same-{i}", [row], [float(rng.beta(1, 8))])
    for i in range(0, 100, 4):  # multi-row requests count as their rows
        detector.pair(f"shift-{i}", shifted[i : i + 4], rng.beta(8, 1, 4).tolist())
    first, second = detector.wait_windows(2)
    assert (first["window"], first["rows"], first["is_drift"]) == (1, 100, False)
    assert second["is_drift"] and second["feature_drift"] and second["output"]["is_drift"]
    assert {"v01", "v02", "v03"} <= set(second["drifted_features"])

    event = sink.wait_for("org.kfkit.drift.data")
    headers, body = event["headers"], event["body"]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == "fraud-mlp-1-w2-data"
    assert headers["ce-source"] == "kfkit-drift/fraud-mlp"
    assert headers["ce-subject"] == "fraud-mlp/1"
    assert headers["content-type"] == "application/json"
    assert body["meta"]["name"] == "TabularDrift" and body["meta"]["version"] == "0.11.4"
    data = body["data"]
    assert data["is_drift"] == 1 and len(data["p_val"]) == len(data["distance"]) == 30
    assert data["threshold"] == pytest.approx(0.05 / 30)
    facts = body["kfkit"]
    assert (facts["model"], facts["version"], facts["window"], facts["rows"]) == ("fraud-mlp", "1", 2, 100)
    assert facts["start"].endswith("Z") and facts["end"] >= facts["start"]
    assert facts["drifted_features"] == second["drifted_features"]
    assert len(sink.of_type("org.kfkit.drift.data")) == 1  # the stable window sent nothing

    reports = detector.json("/v1/drift/reports")["reports"]
    assert [r["window"] for r in reports] == [2] and facts["report"] == reports[0]["report"]
    status, page = detector.get(facts["report"].removeprefix(detector.url))
    assert status == 200
    html = page.decode()
    assert "window 2" in html and "100 request rows" in html and html.count("data:image/png;base64,") >= 4
    assert all(f"<td>{name}</td>" in html for name in FEATURES)
    assert detector.get("/v1/drift/reports/..%2Fstate.json")[0] == 404

    metrics = detector.get("/metrics")[1].decode()
    for line in ('kfkit_drift_p_val{feature="v01"}', 'kfkit_drift_psi{feature="amount"}', "kfkit_drift_is_drift 1",
                 'kfkit_drift_windows_total{outcome="drift"} 1', 'kfkit_drift_events_total{type="request",'
                 'outcome="accepted"} 125', "kfkit_drift_test_seconds_total", 'kfkit_drift_sink_events_total{type='
                 '"org.kfkit.drift.data",outcome="sent"} 1', "kfkit_drift_output_is_drift 1"):  # fmt: skip
        assert line in metrics, line
    status = detector.json("/v1/drift/status")
    assert (
        status["windows"] == {"tested": 2, "drift": 1, "dropped": 0}
        and status["output_reference"]["source"] == "published"
    )


def malformed_events(valid: bytes) -> list[tuple[dict, bytes]]:
    """More than 100 ways to get a payload event wrong."""
    good = {"ce-specversion": "1.0", "ce-id": "m", "ce-source": "t", "ce-type": REQUEST,
            "content-type": "application/json"}  # fmt: skip
    cases = []
    for name in ("ce-specversion", "ce-id", "ce-source", "ce-type"):  # each required attribute missing, or empty
        cases.append(({k: v for k, v in good.items() if k != name}, valid))
        cases.append(({**good, name: " "}, valid))
    for key in ("specversion", "id", "source", "type"):
        envelope = {"specversion": "1.0", "id": "s", "source": "t", "type": REQUEST, "data": json.loads(valid)}
        del envelope[key]
        cases.append(({"content-type": "application/cloudevents+json"}, json.dumps(envelope).encode()))
    cases.append(({"content-type": "application/json"}, valid))  # not a CloudEvent at all
    cases += [({**good, "ce-specversion": v}, valid) for v in ("2.0", "1", "0.1")]
    cases += [({**good, "ce-type": t}, valid) for t in ("com.example.other", "org.kubeflow.serving.inference")]
    for content_type in ("text/plain", "application/octet-stream", "application/xml", "multipart/form-data",
                         "image/png", "application/x-www-form-urlencoded"):  # fmt: skip
        cases.append(({**good, "content-type": content_type}, valid))
    for bad in (b"", b"   ", b"{", b"nul", b"NaN", b'{"inputs": [1, 2', b"\xff\xfe\x00", b"[]", b'"text"', b"42",
                b"null", b'{"inputs": Infinity}', b"[" * 50_000, b'{"instances": [[1, 2, 3]]}',
                b'{"inputs": [{"name": "features", "shape": [1, 30], "data": []}]}',
                b'{"inputs": [{"name": "features", "shape": [1, 30], "data": ["x"]}]}'):  # fmt: skip
        cases.append((good, bad))
        cases.append(({**good, "ce-type": RESPONSE}, bad))
    for cut in range(1, len(valid), max(1, len(valid) // 40)):  # truncated bodies
        cases.append((good, valid[:cut]))
    cases.append(({**good, "content-type": "application/cloudevents+json"}, valid))
    cases.append(({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "x"'))
    cases.append((good, b'{"inputs": [{"name": "features", "shape": [1, 30], "data": [' + b"1," * 5_000_000 + b"1]}]}"))
    return cases


def test_malformed_events_get_4xx_never_5xx_and_duplicates_count_once(version_uri, start_detector):
    detector = start_detector(version_uri, "--max-body-bytes", str(1 << 20))
    row = rows_of(1, seed=4)[0].tolist()
    valid = json.dumps({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": row}]}).encode()
    statuses = [detector.event("dup", REQUEST, valid)[0] for _ in range(10)]
    assert statuses == [202] + [200] * 9

    cases = malformed_events(valid)
    assert len(cases) >= 100
    answers = [detector.request("POST", "/", body, headers) for headers, body in cases]
    bad = [(i, s, b[:200]) for i, (s, b, _) in enumerate(answers) if not 400 <= s < 500]
    assert not bad, bad[:5]
    assert all("error" in json.loads(body) for _, body, _ in answers)
    assert {s for s, _, _ in answers} >= {400, 413, 415}
    assert detector.get("/v2/health/ready")[0] == 200
    status = detector.json("/v1/drift/status")
    assert status["events"] == {"accepted": 1, "duplicate": 9, "rejected": len(cases)}
    assert status["window"]["fill"] == 1
    assert detector.request("PUT", "/v1/events")[0] == 405 and detector.get("/nope")[0] == 404
    assert detector.request("POST", "/v1/feedback", b"{", {"content-type": "application/json"})[0] == 400


def test_flipped_labels_raise_the_performance_event(version_uri, start_detector, sink):
    detector = start_detector(version_uri, "--sink", sink.url)
    rng = np.random.default_rng(7)
    probabilities = rng.random(60).round(3)
    for i, (row, p) in enumerate(zip(rows_of(60, seed=8), probabilities, strict=True)):
        detector.pair(f"req-{i}", [row], [p])
    flipped = [{"id": f"req-{i}", "label": int(p < 0.5)} for i, p in enumerate(probabilities)]
    body = json.dumps({"labels": [*flipped, {"id": "never-logged", "label": 1}]}).encode()
    status, answer, _ = detector.request("POST", "/v1/feedback", body, {"content-type": "application/json"})
    answer = json.loads(answer)
    assert status == 200, answer
    assert (answer["joined"], answer["unknown"], answer["unknown_ids"]) == (60, 1, ["never-logged"])
    assert answer["metrics"]["accuracy"] == 0.0 and answer["metrics"]["roc_auc"] < 0.05
    assert set(answer["below_floors"]) == {"accuracy", "roc_auc"}

    event = sink.wait_for("org.kfkit.drift.performance")
    assert event["headers"]["ce-id"] == answer["event_id"] == "fraud-mlp-1-p1-performance"
    assert event["headers"]["ce-source"] == "kfkit-drift/fraud-mlp"
    facts = event["body"]["kfkit"]
    assert event["body"]["data"]["is_drift"] == 1 and facts["metrics"]["accuracy"] == 0.0
    assert facts["rows"] == 60 and facts["floors"] == {"accuracy": 0.8, "roc_auc": 0.75}
    one = json.dumps({"id": "req-0", "label": 1}).encode()  # single form; already labelled: a duplicate
    assert json.loads(detector.request("POST", "/v1/feedback", one, {"content-type": "application/json"})[1])[
        "duplicate"] == 1  # fmt: skip
    metrics = detector.get("/metrics")[1].decode()
    assert 'kfkit_drift_labels_total{outcome="unknown"} 1' in metrics
    assert 'kfkit_drift_performance{metric="accuracy"} 0' in metrics


def test_a_partial_window_survives_a_restart_and_closes_by_time(version_uri, start_detector, tmp_path):
    state = tmp_path / "kept"
    detector = start_detector(version_uri, state_dir=state)
    for i, row in enumerate(rows_of(30, seed=9)):
        detector.pair(f"r{i}", [row], [0.1])
    assert detector.stop() in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    assert (state / "state.json").is_file() and (state / "rows.npy").is_file()
    assert not list(state.glob("*.pkl"))

    again = start_detector(version_uri, "--window-seconds", "2", state_dir=state)
    assert again.event("r3", REQUEST, {"instances": [[0.0] * 30]})[0] == 200  # still a duplicate after the restart
    (window,) = again.wait_windows(1, timeout=30)
    assert (window["window"], window["rows"], window["closed_by"]) == (1, 30, "time")
    assert again.json("/v1/drift/status")["window"]["index"] == 2


def test_a_slow_test_never_blocks_ingestion_and_a_full_backlog_is_counted(version_uri, start_detector):
    detector = start_detector(version_uri, "--detector", "mmd", "--window-size", "20", "--backlog", "1")
    rows = rows_of(200, seed=10)
    took = []
    for i, row in enumerate(rows):
        started = time.perf_counter()
        status, _ = detector.event(f"s{i}", REQUEST, {"instances": [row.tolist()]})
        took.append(time.perf_counter() - started)
        assert status == 202
    status = detector.json("/v1/drift/status")
    assert status["windows"]["dropped"] >= 1  # 10 windows in far less time than 10 MMD tests take
    assert sorted(took)[int(0.99 * len(took))] < 1.0, max(took)
    assert detector.get("/v2/health/ready")[0] == 200
    assert 'kfkit_drift_windows_total{outcome="dropped"}' in detector.get("/metrics")[1].decode()


def test_a_changed_reference_file_refuses_to_start(version_uri, tmp_path):
    import shutil

    folder = tmp_path / "fraud-mlp" / "1"
    shutil.copytree(version_uri.removeprefix("file://"), folder)
    with open(folder / "reference.parquet", "ab") as f:
        f.write(b"\0")
    result = subprocess.run(
        [str(drift_python()), "-m", "kfkit.serving.drift", "--model-uri", f"file://{folder}", "--port", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "sha256" in result.stderr


def test_the_detector_builds_from_an_s3_version(start_detector, tmp_path, monkeypatch):
    from minio import Minio
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": f"http://{host}:{port}"}  # fmt: skip
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        Minio(f"{host}:{port}", access_key="testing", secret_key="testing", secure=False).make_bucket("drift")
        uri = publish_version(tmp_path / "pub", registry="s3://drift/models")
        detector = start_detector(uri, "--cache-dir", str(tmp_path / "cache"), env=env)
        status = detector.json("/v1/drift/status")
        assert (status["model"], status["version"], status["model_uri"]) == ("fraud-mlp", "1", uri)
        assert status["output_reference"]["source"] == "collecting"  # no published predictions: the first logged
        assert (tmp_path / "cache").is_dir()
    finally:
        server.stop()


KINDS_SCRIPT = """
import json, sys
import numpy as np
from kfkit.serving.drift.detectors import build
from kfkit.serving.drift.settings import DriftSettings
rng = np.random.default_rng(0)
reference = rng.standard_normal((1000, 30)).astype("float32")
same = rng.standard_normal((200, 30)).astype("float32")
shifted = same.copy()
shifted[:, :3] += 0.8
out = {}
for kind, extra in (("tabular", {}), ("tabular", {"correction": "fdr"}), ("mmd", {"n_permutations": 50}),
                    ("psi", {})):
    detector = build(DriftSettings(detector=kind, **extra), reference)
    results = [detector.test(x) for x in (same, shifted)]
    name = kind + "-" + extra.get("correction", "")
    out[name] = [r["data"]["is_drift"] for r in results] + [detector.drifted(results[1], [f"f{i}" for i in range(30)])]
print(json.dumps(out))
"""


def test_every_detector_kind_flags_a_shifted_window_and_not_a_stable_one():
    result = subprocess.run([str(drift_python()), "-c", KINDS_SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (stable, shifted, drifted) in out.items():
        assert (stable, shifted) == (0, 1), name
        if not name.startswith("mmd"):  # a multivariate test names no feature
            assert set(drifted) <= {"f0", "f1", "f2"} and drifted, (name, drifted)
