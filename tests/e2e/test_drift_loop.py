"""End to end on the real processes: serve -> shifted traffic -> drift event -> retrain -> gate -> what serves.

One ``kfkit run`` serves breast cancer (CSV) with the real detector (.venv-drift) and trigger beside it. Three
bursts of traffic from ``kfkit drift simulate``:

1. features shifted while the newest data has its labels scrambled: the retrain run fails the gate (roc_auc
   below the floor), and production and the served version stay at 1;
2. unshifted traffic: no drift, the burst ends;
3. shifted again, the newest data now being the shifted rows: the retrain passes the gate, version 2 is
   promoted, and the predictor (and the detector) move to it.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DRIFT_PYTHON = REPO / ".venv-drift" / "bin" / "python"
MODEL = "breast-cancer-mlp"
SHIFT = 3.0
SHIFTED = ["mean_radius", "mean_texture", "mean_perimeter"]  # what `simulate --features 3` shifts

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _csvs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The rows the model is first trained on, the same rows shifted as the traffic will be, and a copy whose
    labels are scrambled (a retrain on it cannot reach the gate's roc_auc floor)."""
    from kfkit.data.sources import breast_cancer

    frame = breast_cancer(label="malignant")
    frame.insert(0, "row_id", np.arange(len(frame)))
    clean, shifted, scrambled = tmp_path / "clean.csv", tmp_path / "shifted.csv", tmp_path / "scrambled.csv"
    frame.to_csv(clean, index=False)
    moved = frame.copy()
    for column in SHIFTED:
        moved[column] += SHIFT * frame[column].std(ddof=0)
    moved.to_csv(shifted, index=False)
    noise = frame.copy()
    noise["malignant"] = np.random.default_rng(0).permutation(noise["malignant"].to_numpy())
    noise.to_csv(scrambled, index=False)
    return clean, shifted, scrambled


class _Output:
    """Collects a process's output lines on a thread, so a test can wait for one."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process):
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if process.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not seen; output:\n" + "\n".join(self.lines[-60:]))


def _served_version(endpoint: str) -> str:
    return httpx.get(f"{endpoint}/v2/models/{MODEL}", trust_env=False, timeout=10).json()["versions"][0]


def test_drift_starts_a_retrain_the_gate_decides_what_serves(tmp_path, free_port):
    if not DRIFT_PYTHON.is_file():
        pytest.skip(f"missing tool: {DRIFT_PYTHON} (make setup builds the drift environment)")
    clean, shifted, scrambled = _csvs(tmp_path)
    newest = tmp_path / "newest.csv"
    ports = {key: free_port() for key in ("http", "grpc", "trigger", "detector")}
    work, registry = tmp_path / "work", tmp_path / "registry"
    overrides = [
        "dataset=csv",
        f"dataset.path={clean}",
        "dataset.label=malignant",
        "dataset.entity_column=row_id",
        f"dataset.model_name={MODEL}",
        "training=fast",
        "drift.window_size=50",
        "retrain.min_drifted=2",
        "retrain.window_span=3",
        "retrain.cooldown_s=0",
        f"retrain.dataset_path={newest}",
        f"work_dir={work}",
        f"registry.uri=file://{registry}",
        f"serving.http_port={ports['http']}",
        f"serving.grpc_port={ports['grpc']}",
        f"retrain.port={ports['trigger']}",
        f"retrain.detector_port={ports['detector']}",
    ]
    run = subprocess.Popen(
        [sys.executable, "-m", "kfkit.cli", "run", *overrides],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = _Output(run)
    endpoint = f"http://127.0.0.1:{ports['http']}"
    try:
        output.wait_for("Serving until Ctrl-C", 240, run)
        assert any(f"drift     detector http://127.0.0.1:{ports['detector']}" in line for line in output.lines)
        assert _served_version(endpoint) == "1"

        def simulate(shift: float) -> str:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "kfkit.cli",
                    "drift",
                    "simulate",
                    "--shift",
                    str(shift),
                    "--features",
                    "3",
                    "--rows",
                    "150",
                    "--batch",
                    "10",
                    "--wait",
                    "300",
                    f"work_dir={work}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=360,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout

        # 1. drift; the newest data cannot make a model that clears the gate
        newest.write_bytes(scrambled.read_bytes())
        first = simulate(SHIFT)
        assert "DRIFT in mean_radius, mean_texture, mean_perimeter; report http://" in first, first
        assert "retrain 1 started (local): drift in 2 of the last 3 windows" in first, first
        assert "gate: rejected: step gate failed: gate rejected breast-cancer-mlp: roc_auc" in first, first
        assert "production stays at version 1" in first, first
        assert _served_version(endpoint) == "1"

        # 2. the traffic is back to normal: no drift, the burst is over
        calm = simulate(0.0)
        assert "DRIFT" not in calm and "no retrain started" in calm, calm

        # 3. drift again; the newest data is the shifted population: the retrain passes and serves
        newest.write_bytes(shifted.read_bytes())
        second = simulate(SHIFT)
        assert "retrain 2 started (local)" in second, second
        assert "gate: gate passed" in second and "-> version 2 promoted (was 1)" in second, second
        assert f"now serving version 2 at {endpoint}/v2/models/{MODEL}" in second, second
        assert _served_version(endpoint) == "2"
        output.wait_for("version 2 serves at", 30, run)

        from kfkit.registry import open_registry

        assert open_registry(f"file://{registry}").aliases(MODEL) == {"production": "2"}
        audit = [json.loads(line) for line in (registry / MODEL / "_retrain_audit.jsonl").read_text().splitlines()]
        assert [(r["action"], r["run"]) for r in audit] == [
            ("retrain", 1),
            ("retrain_finished", 1),
            ("retrain", 2),
            ("retrain_finished", 2),
        ]
        assert audit[0]["features"] == SHIFTED and audit[0]["statistics"]["detector"] == "TabularDrift"
        assert set(audit[0]["statistics"]["drifted"]) >= set(SHIFTED)
        assert (audit[1]["state"], audit[1]["production_after"]) == ("gate_failed", "1")
        assert (audit[3]["state"], audit[3]["version"], audit[3]["production_after"]) == ("promoted", "2", "2")
        config = json.loads((registry / MODEL / "2" / "config.json").read_text())
        assert config["retrain"]["reason"] == audit[2]["reason"]  # the published version says why it was trained
        assert config["dataset"]["path"] == str(newest)
    finally:
        run.send_signal(2)  # Ctrl-C
        try:
            code = run.wait(timeout=90)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    assert code == 0, "\n".join(output.lines[-40:])
    from kfkit.deploy.local import ensure_port_free

    for name, port in ports.items():  # the predictor, the detector and the trigger are all gone
        ensure_port_free("127.0.0.1", port, name)
