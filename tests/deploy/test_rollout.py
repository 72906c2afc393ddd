"""Canary rollouts over the real kubernetes client against the scenario API server (and its Prometheus API):
Knative and Standard mode, promote, rollback, the automatic mode; registry aliases and audit log checked."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from kube_scenario import Scenario

from kfkit.deploy.kserve import Cluster, deploy_version
from kfkit.deploy.rollout import Rollout, check_steps
from kfkit.errors import ConfigError, DeployError, RolloutError

NAME = "breast-cancer-mlp"
KEY = ("inferenceservices", "kfkit", NAME)
QUIET = {"log": lambda _line: None}


def rollout(world, server, **kwargs) -> Rollout:
    return Rollout(world.cfg, name=NAME, cluster=Cluster(server.client()), registry=world.registry, poll_s=0.01,
                   **QUIET, **kwargs)  # fmt: skip


def first_deploy(world, server, version: str = "1") -> None:
    deploy_version(world.cfg, name=NAME, ref=version, cluster=Cluster(server.client()), poll_s=0.01, **QUIET)


def moves(world) -> list[tuple[str, str, str | None, str | None]]:
    return [(e.action, e.alias, e.from_version, e.to_version) for e in world.registry.audit(NAME) if e.alias]


class Health:
    """The scenario's Prometheus: per version, an error rate and a p99 (seconds); counts the queries."""

    def __init__(self, errors: dict[str, float] | None = None, p99_s: dict[str, float] | None = None) -> None:
        self.errors, self.p99_s = errors or {}, p99_s or {}

    def __call__(self, query: str) -> float | None:
        match = re.search(r'version="(\d+)"', query)
        version = match.group(1) if match else ""
        if query.startswith("histogram_quantile"):
            return self.p99_s.get(version, 0.02)
        if "status=~" in query:
            return self.errors.get(version, 0.0)
        return 25.0  # requests per second


def test_knative_canary_start_step_promote(world):
    server = world.start(Scenario(prometheus=Health()))
    first_deploy(world, server)
    moved = rollout(world, server)
    status = moved.start("2", 10)
    live = server.objects[KEY]
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert live["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert (status.stable_version, status.canary_version, status.canary_percent, status.ready) == ("1", "2", 10, True)
    rev1, rev2 = f"{NAME}-predictor-00001", f"{NAME}-predictor-00002"
    assert {(t["revisionName"], t["percent"], t.get("tag")) for t in status.traffic} == {
        (rev2, 10, "latest"), (rev1, 90, "prev")}  # fmt: skip
    assert {t["url"] for t in status.traffic} == {f"http://latest-{NAME}-predictor.kfkit.example.com",
                                                  f"http://prev-{NAME}-predictor.kfkit.example.com"}  # fmt: skip
    assert status.previous_revision == rev1
    assert world.registry.aliases(NAME) == {"canary": "2", "production": "1"}

    assert moved.set_traffic(50).canary_percent == 50
    health = moved.status()
    assert health.metrics["2"] == {"error_rate": 0.0, "p99_ms": 20.0, "rps": 25.0}
    assert any('version="2"' in q for q in server.queries)

    promoted = moved.promote(reason="looks good")
    live = server.objects[KEY]
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]  # server-side apply removed it
    assert "serving.kserve.io/enable-tag-routing" not in live["metadata"]["annotations"]
    assert live["metadata"]["labels"]["kfkit.io/model-version"] == "2"
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent) == ("2", None, None)
    assert promoted.traffic == [{"revisionName": rev2, "percent": 100, "latestRevision": True}]
    assert world.registry.aliases(NAME) == {"canary": "2", "production": "2"}
    assert moves(world) == [
        ("promote", "production", None, "1"),  # the first deploy
        ("promote", "canary", None, "1"),  # the canary alias begins at production
        ("promote", "canary", "1", "2"),  # start, 10%
        ("promote", "canary", "2", "2"),  # step, 50%
        ("promote", "production", "1", "2"),  # promote
    ]
    reasons = [e.reason for e in world.registry.audit(NAME) if e.alias]
    assert reasons[2].startswith("rollout start: 10% of traffic on InferenceService kfkit/breast-cancer-mlp")
    assert reasons[3].startswith("rollout step: 50%") and reasons[4].endswith("; looks good")


def test_knative_rollback_pins_the_previous_revision(world):
    server = world.start(Scenario(prometheus=Health()))
    first_deploy(world, server)
    moved = rollout(world, server)
    moved.start("2", 10)
    status = moved.rollback(reason="customer complaint")
    live = server.objects[KEY]
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 0
    rev1 = f"{NAME}-predictor-00001"
    assert status.previous_revision == rev1
    assert [t for t in status.traffic if t["percent"]] == [
        {"revisionName": rev1, "percent": 100, "latestRevision": False, "tag": "prev",
         "url": f"http://prev-{NAME}-predictor.kfkit.example.com"}]  # fmt: skip
    assert (status.canary_version, status.canary_percent) == ("2", 0)
    assert world.registry.aliases(NAME) == {"canary": "1", "production": "1"}
    last = world.registry.audit(NAME)[-1]
    assert (last.action, last.alias, last.from_version, last.to_version) == ("rollback", "canary", "2", "1")
    assert f"traffic pinned to revision {rev1}" in last.reason and last.reason.endswith("customer complaint")
    with pytest.raises(RolloutError, match="version 2 was rolled back to 0%"):
        moved.promote()
    # A new canary can start from the rolled-back state; the previous rolled-out revision is still version 1's.
    assert moved.start("3", 10).previous_revision == rev1


def test_rollback_without_a_canary_restores_the_previous_production_version(world):
    server = world.start()
    first_deploy(world, server, "1")
    first_deploy(world, server, "2")
    status = rollout(world, server).rollback(reason="bad release")
    assert server.objects[KEY]["metadata"]["labels"]["kfkit.io/model-version"] == "1"
    assert status.stable_version == "1" and status.ready
    assert moves(world)[-1] == ("rollback", "production", "2", "1")


def test_auto_promotes_a_healthy_canary(world):
    server = world.start(Scenario(prometheus=Health()))
    first_deploy(world, server)
    result = rollout(world, server).auto("2", steps=[10, 50, 100], step_s=0.05)
    assert result.outcome == "promoted"
    assert [s["percent"] for s in result.steps] == [10, 50]
    assert all(s["error_rate"] == 0.0 and s["p99_ms"] == 20.0 and s["checks"] >= 1 for s in result.steps)
    assert world.registry.aliases(NAME) == {"canary": "2", "production": "2"}
    assert [m[1:] for m in moves(world)] == [("production", None, "1"), ("canary", None, "1"), ("canary", "1", "2"),
                                            ("canary", "2", "2"), ("production", "1", "2")]  # fmt: skip
    assert "canaryTrafficPercent" not in server.objects[KEY]["spec"]["predictor"]


def test_auto_rolls_back_on_injected_errors(world):
    # Healthy at 10%; at 50% version 2 answers 20% of its requests with 5xx.
    health = Health()
    server = world.start(Scenario(prometheus=health))
    first_deploy(world, server)
    moved = rollout(world, server)
    original = moved.set_traffic

    def step_and_break(percent):
        health.errors["2"] = 0.2
        return original(percent)

    moved.set_traffic = step_and_break
    result = moved.auto("2", steps=[10, 50, 100], step_s=0.05)
    assert result.outcome == "rolled_back"
    assert result.reason == "canary version 2 at 50%: error rate 20.00% is over deploy.max_error_rate=1.00%"
    assert result.status.canary_percent == 0 and result.status.stable_version == "1"
    assert server.objects[KEY]["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert world.registry.aliases(NAME) == {"canary": "1", "production": "1"}
    last = world.registry.audit(NAME)[-1]
    assert (last.action, last.alias, last.from_version, last.to_version) == ("rollback", "canary", "2", "1")
    assert last.reason.endswith(result.reason)
    assert [e.to_version for e in world.registry.audit(NAME) if e.alias == "production"] == ["1"]


def test_auto_rolls_back_on_p99(world):
    server = world.start(Scenario(prometheus=Health(p99_s={"2": 0.35})), "deploy.slo_p99_ms=100")
    first_deploy(world, server)
    result = rollout(world, server).auto("2", steps=[10, 100], step_s=0.05)
    assert result.outcome == "rolled_back"
    assert result.reason == "canary version 2 at 10%: p99 350.0 ms is over deploy.slo_p99_ms=100"
    assert world.registry.aliases(NAME) == {"canary": "1", "production": "1"}


def test_auto_rolls_back_a_canary_that_never_starts(world):
    server = world.start(Scenario(failures={"2": "image-pull"}, prometheus=Health()))
    first_deploy(world, server)
    result = rollout(world, server).auto("2", steps=[10, 100], step_s=0.05)
    assert result.outcome == "rolled_back" and "did not start at 10%: " in result.reason
    assert "image pull" in result.reason
    live = server.objects[KEY]
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]  # the stable spec is back
    assert live["metadata"]["labels"]["kfkit.io/model-version"] == "1" and result.status.ready
    assert world.registry.aliases(NAME) == {"production": "1"}  # nothing moved: nothing to undo


def test_standard_mode_canary_uses_spec_canary(world):
    server = world.start(Scenario(prometheus=Health()), "deploy=kserve-standard")
    first_deploy(world, server)
    moved = rollout(world, server)
    status = moved.start("2", 20)
    spec = server.objects[KEY]["spec"]
    (canary,) = spec["canary"]
    assert canary["trafficPercent"] == 20
    assert canary["predictor"]["name"] == "v2"
    assert canary["predictor"]["minReplicas"] == canary["predictor"]["maxReplicas"] == 1
    assert canary["predictor"]["model"]["storageUri"] == world.registry.get(NAME, "2").uri
    assert spec["predictor"]["model"]["storageUri"] == world.registry.get(NAME, "1").uri
    assert "canaryTrafficPercent" not in spec["predictor"]
    assert [(t["version"], t["percent"]) for t in status.traffic] == [("1", 80), ("2", 20)]
    promoted = moved.promote()
    spec = server.objects[KEY]["spec"]
    assert "canary" not in spec and spec["predictor"]["name"] == "v2"  # KServe keeps the canary's Deployment
    assert spec["predictor"]["model"]["storageUri"] == world.registry.get(NAME, "2").uri
    assert "autoScaling" in spec["predictor"] and spec["predictor"]["maxReplicas"] == 6
    assert promoted.stable_version == "2" and promoted.canary_version is None
    # The next canary keeps the stable predictor's name.
    moved.start("3", 10)
    assert server.objects[KEY]["spec"]["predictor"]["name"] == "v2"
    moved.rollback()
    spec = server.objects[KEY]["spec"]
    assert "canary" not in spec and spec["predictor"]["name"] == "v2"
    assert world.registry.aliases(NAME) == {"canary": "2", "production": "2"}
    assert moves(world)[-1] == ("rollback", "canary", "3", "2")


def test_standard_mode_canary_is_refused_on_kserve_before_0_20(world):
    server = world.start(Scenario(kserve_canary=False), "deploy=kserve-standard")
    first_deploy(world, server)
    before = moves(world)
    with pytest.raises(RolloutError, match=r"does not know spec.canary .*needs KServe 0.20 or newer"):
        rollout(world, server).start("2", 10)
    assert moves(world) == before and world.registry.aliases(NAME) == {"production": "1"}
    assert "canary" not in server.objects[KEY]["spec"]


def test_rollout_refusals(world):
    server = world.start()
    with pytest.raises(RolloutError, match="deploy the first version with `kfkit deploy`"):
        rollout(world, server).start("2")
    first_deploy(world, server)
    moved = rollout(world, server)
    with pytest.raises(RolloutError, match="version 1 is already production"):
        moved.start("1")
    with pytest.raises(RolloutError, match="no canary in flight"):
        moved.promote()
    moved.start("2")
    with pytest.raises(RolloutError, match="version 2 is already in canary with 10%"):
        moved.start("3")
    with pytest.raises(ConfigError, match="between 1 and 99"):
        moved.set_traffic(100)


@pytest.mark.parametrize("steps", [[], [10, 50], [50, 10, 100], [0, 100], [10, 10, 100]])
def test_bad_steps_are_config_errors(steps):
    with pytest.raises(ConfigError, match="must be increasing percentages ending at 100"):
        check_steps(steps)


def test_a_failed_step_rolls_back(world):
    server = world.start(Scenario(prometheus=Health()))
    first_deploy(world, server)
    moved = rollout(world, server)

    def broken(_percent):
        raise DeployError("InferenceService kfkit/breast-cancer-mlp generation 3 failed: quota: exceeded quota")

    moved.set_traffic = broken
    world.cfg = replace(world.cfg)
    result = moved.auto("2", steps=[10, 50, 100], step_s=0.02)
    assert result.outcome == "rolled_back" and result.reason.startswith("step 50% failed: ")
    assert world.registry.aliases(NAME) == {"canary": "1", "production": "1"}
