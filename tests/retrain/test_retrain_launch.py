"""Starting the retrain run: the newest data, the command line, and what the gate's answer does to production."""

import json
import sys
import textwrap
import time

import pytest
from retrain_events import MODEL, drift_event

from kfkit.config import compose
from kfkit.registry import open_registry
from kfkit.retrain.launch import LocalLauncher, newest_data_overrides
from kfkit.retrain.trigger import Trigger

# Stands in for `kfkit run --no-serve`: exit 3 with the gate's line, or publish + promote version 2 and exit 0.
FAKE_RUN = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    args = sys.argv[1:]
    Path(os.environ["FAKE_ARGS"]).write_text(json.dumps(args))
    summary = Path(args[args.index("--summary-json") + 1])
    if os.environ["FAKE_OUTCOME"] == "gate_failed":
        print("  gate         failed in 0.1 s")
        print("kfkit run: error: step gate failed: gate rejected breast-cancer-mlp: roc_auc 0.5012 < floor 0.8 "
              "(gate.min_metrics); nothing was published or deployed", file=sys.stderr)
        sys.exit(3)
    if os.environ["FAKE_OUTCOME"] == "crash":
        sys.exit(1)
    from kfkit.registry import open_registry
    registry = open_registry(os.environ["FAKE_REGISTRY"])
    version = registry.publish(os.environ["FAKE_SOURCE"], name="breast-cancer-mlp").version
    registry.promote("breast-cancer-mlp", version, alias="production", reason="passed the gate")
    summary.write_text(json.dumps({"version": version, "promoted_to": "production",
                                   "gate": {"passed": True, "checks": 3, "champion": "production version 1"}}))
    """
)


@pytest.fixture
def registry_with_production(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.json").write_text(json.dumps({"feature_names": ["mean_radius", "mean_texture", "x"]}))
    registry = open_registry(f"file://{tmp_path / 'registry'}")
    registry.publish(source, name=MODEL)
    registry.promote(MODEL, "1", alias="production")
    return registry, source


def _wait_done(trigger, run=1, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = trigger.status()["runs"]
        if runs and runs[run - 1]["state"] != "running":
            return runs[run - 1]
        time.sleep(0.1)
    raise AssertionError(f"run {run} did not finish: {trigger.status()['runs']}")


def _trigger(tmp_path, monkeypatch, retrain_config, outcome, source, *overrides):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    monkeypatch.setenv("FAKE_OUTCOME", outcome)
    monkeypatch.setenv("FAKE_ARGS", str(tmp_path / "args.json"))
    monkeypatch.setenv("FAKE_REGISTRY", f"file://{tmp_path / 'registry'}")
    monkeypatch.setenv("FAKE_SOURCE", str(source))
    cfg, base = retrain_config("retrain.min_drifted=2", "retrain.window_span=3", *overrides)
    launcher = LocalLauncher(cfg, base, tmp_path / "state", command=[sys.executable, str(script)])
    return Trigger(cfg, base, tmp_path / "state", launcher=launcher)


def test_a_gate_failure_is_recorded_and_leaves_production_as_it_was(
    tmp_path, monkeypatch, retrain_config, registry_with_production
):
    registry, source = registry_with_production
    trigger = _trigger(tmp_path, monkeypatch, retrain_config, "gate_failed", source)
    assert [trigger.handle(*drift_event(w))["action"] for w in range(2)] == ["hold", "retrain"]
    run = _wait_done(trigger)
    assert run["state"] == "gate_failed" and run["version"] is None
    assert run["gate"].startswith("step gate failed: gate rejected breast-cancer-mlp: roc_auc 0.5012 < floor 0.8")
    assert run["production_before"] == run["production_after"] == "1"
    assert registry.aliases(MODEL) == {"production": "1"}
    assert [v.version for v in registry.versions(MODEL)] == ["1"]  # nothing published
    fired, finished = trigger.audit.read()
    assert fired["statistics"]["drifted"] == {
        "mean_radius": {"p_val": 1e-6, "distance": 0.5},
        "mean_texture": {"p_val": 1e-6, "distance": 0.4},
    }
    assert finished["state"] == "gate_failed" and finished["production_after"] == "1"
    assert "roc_auc 0.5012 < floor 0.8" in finished["gate"]


def test_a_passing_run_is_promoted_and_recorded(tmp_path, monkeypatch, retrain_config, registry_with_production):
    registry, source = registry_with_production
    trigger = _trigger(tmp_path, monkeypatch, retrain_config, "pass", source)
    for w in range(2):
        trigger.handle(*drift_event(w))
    run = _wait_done(trigger)
    assert (run["state"], run["version"], run["production_before"], run["production_after"]) == (
        "promoted",
        "2",
        "1",
        "2",
    )
    assert run["gate"] == "gate passed 3 checks, not worse than production version 1"
    assert registry.aliases(MODEL) == {"production": "2"}


def test_a_crashed_run_is_recorded_as_failed(tmp_path, monkeypatch, retrain_config, registry_with_production):
    _, source = registry_with_production
    trigger = _trigger(tmp_path, monkeypatch, retrain_config, "crash", source)
    for w in range(2):
        trigger.handle(*drift_event(w))
    run = _wait_done(trigger)
    assert run["state"] == "failed" and "exited with status 1" in run["gate"]
    assert trigger.status()["running"] is None  # the next burst may retrain


def test_the_run_command_trains_on_the_newest_data_on_free_ports(
    tmp_path, monkeypatch, retrain_config, registry_with_production
):
    _, source = registry_with_production
    newest = tmp_path / "newest.csv"
    trigger = _trigger(
        tmp_path,
        monkeypatch,
        retrain_config,
        "gate_failed",
        source,
        "dataset=csv",
        f"dataset.model_name={MODEL}",
        f"dataset.path={tmp_path / 'old.csv'}",
        f"retrain.dataset_path={newest}",
        "retrain.overrides=['training.epochs=2']",
    )
    for w in range(2):
        trigger.handle(*drift_event(w))
    _wait_done(trigger)
    args = json.loads((tmp_path / "args.json").read_text())
    overrides = [a for a in args if "=" in a]
    assert f"dataset.path='{newest}'" in overrides and "training.epochs=2" in overrides
    assert overrides.index(f"dataset.path='{newest}'") > overrides.index(f"dataset.path={tmp_path / 'old.csv'}")
    assert "serving.payload_log_url=null" in overrides
    assert any(a.startswith("serving.http_port=") for a in overrides)
    # the whole command line composes, the reason (commas, colons, parentheses) included
    cfg = compose(overrides)
    assert cfg.dataset.path == str(newest) and cfg.training.epochs == 2 and cfg.serving.payload_log_url is None
    assert cfg.retrain.reason.startswith("drift in 2 of the last 3 windows (windows 0, 1)")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["dataset=synthetic_fraud"], ["dataset.drift=0.5"]),
        (["dataset=synthetic_fraud", "retrain.synthetic_drift=1.5"], ["dataset.drift=1.5"]),
        (["dataset=synthetic_fraud", "retrain.synthetic_drift=null"], []),
        (["dataset=csv", "dataset.path=/d/a.csv"], []),
        (["dataset=csv", "dataset.path=/d/a.csv", "retrain.dataset_path=/d/new.csv"], ["dataset.path='/d/new.csv'"]),
        ([], []),  # breast_cancer: no newer rows
        (["retrain.overrides=['training.epochs=3']"], ["training.epochs=3"]),
    ],
)
def test_newest_data_per_dataset(overrides, expected):
    assert newest_data_overrides(compose(overrides)) == expected
