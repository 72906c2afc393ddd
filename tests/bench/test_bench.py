"""`kfkit bench serve`: the load generators count what they see, and a tiny full run has the promised shape."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.bench.load import HttpTarget, run_http_closed, run_http_open
from scripts.bench.report import render_markdown
from scripts.bench.run import run_bench
from scripts.bench.servers import mlserver_python
from scripts.bench.settings import PRESETS
from scripts.bench.wrk import run_wrk, wrk_available


class _Handler(BaseHTTPRequestHandler):
    """Answers 200 on /ok and 503 elsewhere, keep-alive, with a body of fixed length."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"ok":true}' if self.path == "/ok" else b'{"error":"no"}'
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_asyncio_client_counts_successes_and_errors(http_server):
    ok = run_http_closed(HttpTarget("127.0.0.1", http_server, "/ok", b"{}"), concurrency=2, duration_s=0.3)
    assert ok.requests > 10 and ok.errors == 0 and ok.req_per_s > 0
    assert 0 < ok.p50_ms <= ok.p95_ms <= ok.p99_ms <= ok.max_ms
    bad = run_http_closed(HttpTarget("127.0.0.1", http_server, "/fail", b"{}"), concurrency=2, duration_s=0.3)
    assert bad.requests > 10 and bad.errors == bad.requests and bad.req_per_s == 0


def test_open_loop_sends_at_the_asked_rate(http_server):
    result = run_http_open(HttpTarget("127.0.0.1", http_server, "/ok", b"{}"), rate=200, duration_s=0.5)
    assert result.mode == "open" and result.requests == 100 and result.errors == 0
    assert result.duration_s >= 0.49


def test_wrk_counts_non_2xx_as_errors(http_server):
    if wrk_available() is None:
        pytest.skip("missing tool: wrk (apt-get install wrk; scripts/install_system_tools.sh installs it)")
    bad = run_wrk(HttpTarget("127.0.0.1", http_server, "/fail", b"{}"), concurrency=2, duration_s=1)
    assert bad.tool == "wrk" and bad.requests > 0 and bad.errors == bad.requests


@pytest.mark.slow
def test_quick_bench_runs_every_target_and_reports_it(tmp_path, capsys):
    settings = PRESETS["quick"]
    results = run_bench(settings, tmp_path, command="pytest quick bench")

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(results["summary"]))
    assert (tmp_path / "results.md").read_text() == render_markdown(results)
    assert "lscpu" in saved["machine"] and saved["command"] == "pytest quick bench"
    assert saved["forward_us"]["forward_b1"] > 0
    has_mlserver = mlserver_python(settings) is not None
    expected = {("kfkit", "v2-rest"), ("kfkit", "v2-grpc")}
    if has_mlserver:
        expected |= {("mlserver", "v2-rest"), ("mlserver", "v2-grpc")}
    else:  # the run must say why MLServer is missing, not leave it out silently
        assert any("MLServer skipped" in note for note in saved["notes"])
    assert {(row["server"], row["protocol"]) for row in saved["sweep"]} == expected
    for row in saved["sweep"] + saved["open_loop"]:
        assert row["errors"] == 0, row
        assert row["requests"] > 0 and row["req_per_s"] > 0, row
        assert row["p50_ms"] <= row["p99_ms"], row
        assert row["server_cpu_us_per_req"] is None or row["server_cpu_us_per_req"] > 0
    assert {row["server"] for row in saved["open_loop"]} == {server for server, _ in expected}
    assert saved["batching"], "the quick preset compares batching on and off"
    for row in saved["batching"]:
        assert row["errors"] == 0 and row["req_per_s"] > 0, row
    assert "| kfkit | v2-rest | 1 | 4 |" in render_markdown(results)


@pytest.mark.slow
def test_tensorflow_twin_is_the_same_model_and_loads_as_tensorflow(tmp_path):
    """The batching comparison's SavedModel twin: same weights, same probabilities, served as tensorflow."""
    import numpy as np

    from kfkit.model import load_scorer, load_spec
    from kfkit.registry import resolve
    from scripts.bench.fixtures import publish_model, publish_tf_twin

    model = publish_model(tmp_path)
    twin = publish_tf_twin(tmp_path, model)
    folder = resolve(twin.uri)  # digests verified, as the server loads it
    assert load_spec(folder).framework == "tensorflow"
    score, _ = load_scorer(folder)
    served = np.asarray(score(model.rows), dtype=np.float32)
    np.testing.assert_allclose(served, model.expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(twin.expected, served)
