"""The trigger over HTTP: a fake detector posts drift events as docs/drift.md fixes them."""

import json
import socket

import httpx
import pytest
from retrain_events import MODEL, drift_event

from kfkit.retrain.server import MAX_BODY_BYTES, TriggerServer
from kfkit.retrain.trigger import Trigger


@pytest.fixture
def serve(retrain_config, fake_launcher, tmp_path):
    servers = []

    def _serve(*overrides, launcher=fake_launcher, clock=None):
        cfg, base = retrain_config("retrain.min_drifted=3", "retrain.window_span=5", "retrain.cooldown_s=0", *overrides)
        kwargs = {"clock": clock} if clock else {}
        trigger = Trigger(cfg, base, tmp_path / "state", launcher=launcher, **kwargs)
        server = TriggerServer(trigger, "127.0.0.1", 0).start()
        servers.append(server)
        return server

    yield _serve
    for server in servers:
        server.shutdown()


def _post(url, headers, body):
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.post(url, headers=headers, content=body)


def _status(server):
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(f"{server.url}/v1/retrain/status").json()


def test_a_burst_of_events_starts_one_retrain_and_the_audit_says_why(serve, fake_launcher, tmp_path):
    server = serve()
    answers = [_post(f"{server.url}/", *drift_event(w)).json() for w in range(8)]
    assert [a["action"] for a in answers] == ["hold", "hold", "retrain"] + ["burst"] * 5
    assert answers[2]["run"] == 1 and len(fake_launcher.started) == 1
    status = _status(server)
    assert status["running"]["run"] == 1 and status["runs"][0]["state"] == "running"
    assert status["events"] == {"received": 8, "accepted": 8, "duplicate": 0, "rejected": 0}
    fake_launcher.finish(1, "promoted", "2")
    status = _status(server)
    assert status["running"] is None and status["runs"][0]["state"] == "promoted"

    audit_file = tmp_path / "registry" / MODEL / "_retrain_audit.jsonl"
    assert status["audit"] == str(audit_file)
    fired, finished = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert fired["action"] == "retrain" and fired["run"] == 1 and fired["window"] == 2
    assert fired["drifted_windows"] == [0, 1, 2] and fired["features"] == ["mean_radius", "mean_texture"]
    assert fired["statistics"]["p_val"] == [1e-6, 1e-6, 0.4] and fired["statistics"]["threshold"] == 0.0167
    assert fired["event"]["id"] == f"{MODEL}-1-w2-data" and fired["event"]["report"].endswith("/w2.html")
    assert fired["policy"] == {"min_drifted": 3, "window_span": 5, "cooldown_s": 0.0}
    assert finished["action"] == "retrain_finished" and finished["state"] == "promoted" and finished["version"] == "2"


def test_the_same_event_delivered_ten_times_is_counted_once(serve, fake_launcher):
    server = serve("retrain.min_drifted=1", "retrain.window_span=1")
    codes = [_post(f"{server.url}/v1/events", *drift_event(0)).status_code for _ in range(10)]
    assert codes == [200] * 10  # a redelivery is answered as accepted: Knative must not retry it
    assert len(fake_launcher.started) == 1
    assert _status(server)["events"] == {"received": 10, "accepted": 1, "duplicate": 9, "rejected": 0}


def _raw(server, data: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _malformed_cases():
    headers, body = drift_event(1)
    cases = []
    for name in ("ce-specversion", "ce-id", "ce-source", "ce-type"):
        cases.append(({k: v for k, v in headers.items() if k != name}, body))  # each attribute missing in turn
        cases.append(({**headers, name: ""}, body))  # ... or empty
    cases += [
        ({**headers, "ce-specversion": "9.9"}, body),
        ({**headers, "ce-type": "org.kfkit.drift.other"}, body),
        ({**headers, "content-type": "text/plain"}, body),
        ({**headers, "content-type": "application/xml"}, b"<a/>"),
        ({"content-type": "application/json"}, body),  # not a CloudEvent at all
        ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0"}'),
        ({"content-type": "application/cloudevents+json"}, b"[]"),
        (headers, b""),
        (headers, b"null"),
        (headers, b"{"),
        (headers, body[: len(body) // 2]),
        (headers, b'{"data": {"is_drift": 2}}'),
        (headers, b'{"data": {"is_drift": 1}, "kfkit": []}'),
        (headers, b'{"data": {"is_drift": 1}, "kfkit": {"window": "12"}}'),
        (headers, b'{"data": {"is_drift": 1}, "kfkit": {"window": 1, "model": "other-model"}}'),
        (headers, b'{"data": {"is_drift": 1, "threshold": [1]}}'),
        (headers, b'{"data": {"is_drift": 1}, "kfkit": {"drifted_features": [1]}}'),
        (headers, b"\xff\xfe\x00garbage"),
    ]
    for cut in range(5, len(body), max(1, len(body) // 80)):  # truncated bodies
        cases.append((headers, body[:cut]))
    return cases


def test_malformed_events_get_a_4xx_json_error_never_a_5xx(serve, fake_launcher):
    server = serve()
    cases = _malformed_cases()
    assert len(cases) >= 80
    codes = []
    for headers, body in cases:
        response = _post(f"{server.url}/", headers, body)
        codes.append(response.status_code)
        assert 400 <= response.status_code < 500, (headers, body[:80], response.text)
        assert response.json()["error"]
    # framing problems, on a raw socket
    event_headers = "".join(f"{k}: {v}\r\n" for k, v in drift_event(1)[0].items())
    raw = [
        f'POST / HTTP/1.1\r\nHost: x\r\n{event_headers}Content-Length: 500\r\n\r\n{{"data"'.encode(),  # short body
        f"POST / HTTP/1.1\r\nHost: x\r\n{event_headers}Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode(),  # huge
        f"POST / HTTP/1.1\r\nHost: x\r\n{event_headers}\r\n".encode(),  # no length
        f"POST / HTTP/1.1\r\nHost: x\r\n{event_headers}Content-Length: -4\r\n\r\n".encode(),
        f"POST / HTTP/1.1\r\nHost: x\r\n{event_headers}Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode(),
        b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01garbage\r\n\r\n",
    ]
    for data in raw:
        status_line = _raw(server, data).split(b"\r\n", 1)[0]
        code = int(status_line.split()[1])
        codes.append(code)
        assert 400 <= code < 500, (data[:60], status_line)
    assert len(codes) >= 100
    with httpx.Client(trust_env=False) as client:
        assert client.get(f"{server.url}/v2/health/ready").status_code == 200
    status = _status(server)
    assert status["events"]["rejected"] >= 80 and status["events"]["accepted"] == 0
    assert fake_launcher.started == []


def test_a_chunked_event_is_taken(serve):
    server = serve()
    headers, body = drift_event(0)
    with httpx.Client(trust_env=False) as client:
        response = client.post(f"{server.url}/", headers=headers, content=iter([body[:10], body[10:]]))
    assert response.status_code == 200 and response.json()["action"] == "hold"


def test_a_restarted_trigger_remembers_the_burst_and_the_cooldown(serve, fake_launcher, retrain_config, tmp_path):
    clock = [1000.0]
    server = serve("retrain.cooldown_s=600", clock=lambda: clock[0])
    for w in range(3):
        _post(f"{server.url}/", *drift_event(w))
    fake_launcher.finish(1)
    server.shutdown()
    restarted = serve("retrain.cooldown_s=600", clock=lambda: clock[0])
    assert _post(f"{restarted.url}/", *drift_event(2)).json()["action"] == "duplicate"  # a Knative redelivery
    assert _post(f"{restarted.url}/", *drift_event(3)).json()["action"] == "burst"
    for w in range(4, 9):
        _post(f"{restarted.url}/", *drift_event(w, is_drift=False))
    answers = [_post(f"{restarted.url}/", *drift_event(w)).json()["action"] for w in range(9, 12)]
    assert answers == ["hold", "hold", "cooldown"]
    status = _status(restarted)
    assert status["policy"]["cooldown_until"] == "1970-01-01T00:26:40Z"
    assert [r["run"] for r in status["runs"]] == [1] and len(fake_launcher.started) == 1


def test_dry_run_records_the_decision_and_starts_nothing(serve, fake_launcher):
    server = serve("retrain.dry_run=true")
    for w in range(3):
        _post(f"{server.url}/", *drift_event(w))
    status = _status(server)
    assert fake_launcher.started == [] and status["runs"][0]["state"] == "dry_run"
