"""``kfkit drift simulate|status`` against a fake predictor+detector and the real trigger, and the loop's set-up."""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from retrain_events import MODEL, drift_event

from kfkit.cli import main
from kfkit.data.sources import breast_cancer
from kfkit.retrain.server import TriggerServer
from kfkit.retrain.trigger import Trigger

NAMES = [c for c in breast_cancer().columns if c != "malignant"]


class FakeServing:
    """The predictor's V2 metadata and infer, and the detector's windows: every 50 rows close a window, which
    drifts when its first feature is shifted; a drifted window is POSTed to the trigger as the detector would."""

    def __init__(self, trigger_url: str) -> None:
        self.trigger_url, self.version, self.rows, self.windows = trigger_url, "1", [], []
        self.reference_mean = breast_cancer()[NAMES[0]].mean()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _infer(self, body: dict) -> None:
        self.rows.extend(body["inputs"][0]["data"])
        while len(self.rows) >= 50 * (len(self.windows) + 1):
            index = len(self.windows)
            window = np.array(self.rows[index * 50 : (index + 1) * 50])
            drifted = bool(window[:, 0].mean() > self.reference_mean * 1.1)
            self.windows.append(
                {
                    "window": index,
                    "rows": 50,
                    "is_drift": drifted,
                    "drifted_features": NAMES[:3] if drifted else [],
                    "report": f"{self.url}/v1/drift/reports/w{index}.html" if drifted else None,
                }
            )
            if drifted:
                headers, data = drift_event(index, version=self.version, drifted=NAMES[:3])
                httpx.post(f"{self.trigger_url}/", headers=headers, content=data, trust_env=False)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, document, status=200):
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path == f"/v2/models/{MODEL}":
                    self._send({"name": MODEL, "versions": [fake.version], "parameters": {"feature_names": NAMES}})
                elif self.path == "/v1/drift/windows":
                    self._send({"windows": fake.windows})
                elif self.path == "/v1/drift/status":
                    self._send({"model": MODEL, "version": fake.version, "windows": {"tested": len(fake.windows)}})
                else:
                    self._send({"error": "no"}, 404)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake._infer(body)
                self._send({"outputs": []})

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def live(retrain_config, fake_launcher, tmp_path):
    cfg, base = retrain_config("retrain.min_drifted=2", "retrain.window_span=3", "retrain.cooldown_s=0")
    trigger = Trigger(cfg, base, tmp_path / "state", launcher=fake_launcher)
    server = TriggerServer(trigger, "127.0.0.1", 0).start()
    fake = FakeServing(server.url)
    args = [
        "--endpoint",
        fake.url,
        "--model-name",
        MODEL,
        "--detector",
        fake.url,
        "--trigger",
        server.url,
        f"work_dir={tmp_path / 'work'}",
    ]
    yield fake, server, args
    fake.close()
    server.shutdown()


def test_simulate_prints_windows_drift_retrain_gate_and_the_new_version(live, fake_launcher, capsys):
    fake, _, args = live

    def promote_when_started():  # the retrain run: gate passed, version 2 promoted, the loop restarts the server
        while not fake_launcher.started:
            time.sleep(0.05)
        time.sleep(0.5)
        fake_launcher.finish(1, "promoted", "2")
        time.sleep(1.5)
        fake.version = "2"

    threading.Thread(target=promote_when_started, daemon=True).start()
    code = main(["drift", "simulate", "--shift", "2", "--features", "3", "--rows", "200", "--batch", "10", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    features = "mean_radius, mean_texture, mean_perimeter"
    assert f"200 rows to {fake.url}/v2/models/{MODEL}/infer (version 1), {features} shifted by 2 sd" in out
    assert f"window 0: 50 rows, DRIFT in mean_radius, mean_texture, mean_perimeter; report {fake.url}" in out
    assert "trigger: window 0 drifted; drift in 1 of the last 3 windows" in out
    assert "retrain 1 started (local): drift in 2 of the last 3 windows (windows 0, 1)" in out
    assert "gate: fake promoted -> version 2 promoted (was None)" in out
    assert f"now serving version 2 at {fake.url}/v2/models/{MODEL}" in out
    assert out.index("window 0:") < out.index("retrain 1 started") < out.index("gate:") < out.index("now serving")
    rows = np.array(fake.rows)
    assert rows.shape == (200, 30)


def test_simulate_shifts_only_the_chosen_features_by_shift_sd(live):
    from kfkit.config import compose
    from kfkit.drift_cli import _shifted_rows

    class Args:
        feature_names, features, rows, seed, shift = "mean_texture,area_error", 3, 20000, 0, 0.5

    rows, chosen = _shifted_rows(compose([]), NAMES, Args)
    frame = breast_cancer()[NAMES]
    moved = (rows.mean(axis=0) - frame.mean().to_numpy()) / frame.std(ddof=0).to_numpy()
    assert chosen == ["mean_texture", "area_error"]
    assert np.allclose(moved[[NAMES.index(c) for c in chosen]], 0.5, atol=0.05)
    assert np.abs(np.delete(moved, [NAMES.index(c) for c in chosen])).max() < 0.05


def test_status_shows_the_detector_and_the_trigger(live, capsys):
    fake, server, args = live
    for w in range(2):
        httpx.post(f"{server.url}/", headers=drift_event(w)[0], content=drift_event(w)[1], trust_env=False)
    assert main(["drift", "status", *args]) == 0
    out = capsys.readouterr().out
    assert f"predictor {fake.url}/v2/models/{MODEL}: version 1" in out
    assert f"detector  {fake.url}: ready, ? on {MODEL}/1" in out and '"tested": 0' in out
    assert f"trigger   {server.url}: local, retrain on drift in 2 of the last 3 windows, cooldown 0 s" in out
    assert "run 1 (" in out and ": running:" in out
    assert main(["drift", "status", "--json", *args]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["trigger"]["runs"][0]["run"] == 1 and document["detector"]["model"] == MODEL


def test_without_a_live_run_drift_says_how_to_start_one(tmp_path, capsys):
    assert main(["drift", "status", f"work_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kfkit drift status: error: no live kfkit run found")
    assert "start one with `kfkit run" in err


def test_the_loop_needs_the_drift_environment_and_says_so(retrain_config, capsys):
    from kfkit.retrain.local import DriftLoop

    cfg, base = retrain_config("retrain.detector_python=/no/such/python")
    same, loop = DriftLoop.prepare(cfg, base)
    assert loop is None and same is cfg and cfg.serving.payload_log_url is None
    out = capsys.readouterr().out
    assert "no drift environment at /no/such/python" in out and "serving without drift detection" in out


def test_the_loop_points_the_payload_logger_at_the_detector(retrain_config, free_port):
    from kfkit.retrain.local import DriftLoop

    port = free_port()
    cfg, base = retrain_config(
        f"retrain.detector_python={sys.executable}", f"retrain.detector_port={port}", f"retrain.port={free_port()}"
    )
    wired, loop = DriftLoop.prepare(cfg, base)
    assert loop is not None and wired.serving.payload_log_url == f"http://127.0.0.1:{port}/"


def test_a_busy_detector_port_moves_to_a_free_one_and_says_so(retrain_config, capsys):
    from kfkit.retrain.local import DriftLoop

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg, base = retrain_config(f"retrain.detector_python={sys.executable}", f"retrain.detector_port={port}")
        wired, loop = DriftLoop.prepare(cfg, base)
    assert loop is not None and wired.retrain.detector_port != port
    assert wired.serving.payload_log_url == f"http://127.0.0.1:{wired.retrain.detector_port}/"
    assert f"retrain.detector_port={port} is in use; using {wired.retrain.detector_port}" in capsys.readouterr().out


def test_run_help_offers_no_drift_and_drift_help_names_both_actions(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--no-drift" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["drift", "--help"])
    out = capsys.readouterr().out
    assert "simulate" in out and "status" in out
