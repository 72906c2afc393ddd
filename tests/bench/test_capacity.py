"""`kfkit bench serve --capacity`: the rate search against fake servers, the keys it writes, one real short run."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from scripts.bench import serve
from scripts.bench.capacity import Probe, judge, recommend, round_down, search_capacity
from scripts.bench.capacity_run import render_capacity

LN100 = math.log(100)


def mm1(mu: float, *, base_ms: float = 0.0):
    """A fake one-core server: M/M/1 latency (p99 = ln(100) / (mu - rate)), achieved rate capped at mu."""
    calls: list[float] = []

    def measure(rate: float) -> Probe:
        calls.append(rate)
        if rate >= mu:
            return Probe(rate=rate, achieved=mu * 0.9, p99_ms=10_000.0, mean_ms=1_000.0)
        p99 = base_ms + 1000 * LN100 / (mu - rate)
        return Probe(rate=rate, achieved=rate, p99_ms=p99, mean_ms=1000 / (mu - rate))

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


def test_capacity_is_where_p99_crosses_the_slo_within_the_tolerance():
    mu, slo = 5000.0, 10.0
    truth = mu - 1000 * LN100 / slo  # p99 < slo  <=>  rate < mu - ln(100)/slo
    search = search_capacity(mm1(mu), slo_p99_ms=slo, start_rate=100)
    assert search.limit == "slo" and search.confirmed
    assert truth / 1.05 <= search.capacity < truth
    assert search.capacity < search.first_failure <= search.capacity * 1.05
    assert search.at_capacity.p99_ms < slo and search.at_capacity.phase == "confirm"


def test_steps_up_by_one_and_a_half_then_bisects_then_confirms():
    search = search_capacity(mm1(1000.0), slo_p99_ms=100, start_rate=100)
    phases = [p.phase for p in search.probes]
    steps = [p.rate for p in search.probes if p.phase == "step"]
    assert steps == pytest.approx([100 * 1.5**k for k in range(len(steps))])
    assert phases == ["step"] * len(steps) + ["bisect"] * phases.count("bisect") + ["confirm"]
    passed = [p.passed for p in search.probes if p.phase == "step"]
    assert all(passed[:-1]) and passed[-1] is False  # the last step bracketed it
    assert Counter(p.rate for p in search.probes)[search.capacity] == 2  # passed, then passed again


def test_a_server_that_falls_behind_fails_on_achieved_rate_even_with_a_low_p99():
    def measure(rate: float) -> Probe:
        return Probe(rate=rate, achieved=min(rate, 2000.0), p99_ms=1.0, mean_ms=0.5)

    search = search_capacity(measure, slo_p99_ms=100, start_rate=100)
    assert 2000 / 0.95 / 1.05 <= search.capacity <= 2000 / 0.95
    failed = [p for p in search.probes if not p.passed]
    assert failed and all("achieved" in p.why and "p99" not in p.why for p in failed)


def test_errors_fail_a_probe():
    def measure(rate: float) -> Probe:
        return Probe(rate=rate, achieved=rate, p99_ms=1.0, mean_ms=0.5, errors=3 if rate > 700 else 0)

    search = search_capacity(measure, slo_p99_ms=100, start_rate=100)
    assert 700 / 1.05 <= search.capacity <= 700
    assert any(p.why == "3 errors" for p in search.probes)


def test_a_start_rate_above_capacity_steps_down():
    search = search_capacity(mm1(300.0), slo_p99_ms=100, start_rate=1000)
    truth = 300 - 1000 * LN100 / 100
    assert search.probes[0].phase == "step" and not search.probes[0].passed
    assert any(p.phase == "down" and p.passed for p in search.probes)
    assert truth / 1.05 <= search.capacity < truth and search.confirmed


def test_nothing_passes_no_capacity():
    search = search_capacity(mm1(50.0), slo_p99_ms=1, start_rate=100, min_rate=1)
    assert search.capacity is None and search.limit == "none_passed" and search.at_capacity is None
    assert all(not p.passed for p in search.probes) and min(p.rate for p in search.probes) >= 1


def test_max_rate_bounds_the_step_up():
    search = search_capacity(mm1(1e9), slo_p99_ms=100, start_rate=100, max_rate=1000)
    assert search.capacity == 1000 and search.limit == "max_rate" and search.first_failure is None
    assert max(p.rate for p in search.probes) == 1000 and search.confirmed


def test_a_lucky_pass_that_fails_its_confirmation_is_not_the_capacity():
    """Noise: 506/s (the fifth step) passes once, then fails its confirmation; the capacity is found below it."""
    seen: Counter = Counter()

    def measure(rate: float) -> Probe:
        seen[rate] += 1
        lucky = 500 <= rate < 520 and seen[rate] == 1
        ok = rate < 450 or lucky
        return Probe(rate=rate, achieved=rate, p99_ms=5.0 if ok else 500.0, mean_ms=1.0)

    search = search_capacity(measure, slo_p99_ms=100, start_rate=100)
    assert search.confirmed and search.limit == "slo"
    assert 450 / 1.05 <= search.capacity < 450
    assert seen[search.capacity] == 2 and seen[100 * 1.5**4] == 2
    assert any(p.phase == "confirm" and not p.passed for p in search.probes)


def test_max_probes_is_a_hard_budget():
    fake = mm1(5000.0)
    search = search_capacity(fake, slo_p99_ms=10, start_rate=1, max_probes=6)
    assert len(fake.calls) == 6 and search.limit == "max_probes" and not search.confirmed
    assert search.capacity == max(p.rate for p in search.probes if p.passed)


def test_judge_names_every_reason():
    probe = Probe(rate=1000, achieved=900, p99_ms=150.0, mean_ms=20.0, errors=2)
    ok, why = judge(probe, 100)
    assert not ok and why == "2 errors; p99 150.00 ms >= 100 ms; achieved 900/s < 95% of 1,000/s"
    assert judge(Probe(rate=1000, achieved=960, p99_ms=99.9, mean_ms=1.0), 100) == (True, "")
    assert probe.in_flight == pytest.approx(18.0)  # 900/s x 20 ms


@pytest.mark.parametrize(("value", "expected"), [(3586.1, 3500), (5123, 5100), (97.9, 97), (7.6, 7), (0.4, 1)])
def test_round_down_to_two_significant_figures(value, expected):
    assert round_down(value) == expected


def test_recommendation_scales_at_seventy_percent_in_both_modes():
    rec = recommend(5123.0, in_flight_at_level=3.4)
    assert rec["level_rps"] == pytest.approx(3586.1)
    expected = ["deploy.mode=standard", "deploy.autoscaling_metric=rps", "deploy.autoscaling_target=3500"]
    assert rec["standard"]["rps"] == expected
    assert rec["standard"]["concurrency"][-1] == "deploy.autoscaling_target=3"
    # KPA aims at target x 0.7, so its target is the 70% level / 0.7 (= the capacity, rounded down)
    assert rec["knative"]["rps"][-1] == "deploy.autoscaling_target=5100"
    assert rec["knative"]["concurrency"][-1] == "deploy.autoscaling_target=5"  # 3.4 / 0.7 = 4.9


@pytest.mark.parametrize(("mode", "metric"), [(m, x) for m in ("knative", "standard") for x in ("rps", "concurrency")])
def test_recommended_keys_are_kfkit_overrides_that_deploy_renders(mode, metric):
    from kfkit.config import compose
    from kfkit.deploy.autoscaling import plan

    keys = recommend(5123.0, in_flight_at_level=3.4)[mode][metric]
    cfg = compose(["deploy=kserve", *keys])
    assert (cfg.deploy.mode, cfg.deploy.autoscaling_metric) == (mode, metric)
    scaling = plan(cfg.deploy, name="m", namespace="kfkit")
    target = keys[-1].split("=")[1]
    if mode == "knative":
        assert scaling.annotations["autoscaling.knative.dev/target"] == target
        assert scaling.annotations["autoscaling.knative.dev/metric"] == metric
    else:
        assert scaling.auto_scaling["metrics"][0]["external"]["target"]["value"] == target


def test_report_shows_capacity_and_keys():
    search = search_capacity(mm1(5000.0), slo_p99_ms=10, start_rate=100)
    level = Probe(rate=0.7 * search.capacity, achieved=0.7 * search.capacity, p99_ms=2.0, mean_ms=0.8, phase="level")
    rec = recommend(search.capacity, level.in_flight)
    results = {
        "started": "now", "command": "kfkit bench serve --capacity", "notes": [], "loadavg_before": [0.1, 0.1, 0.1],
        "loadavg_after": [0.2, 0.1, 0.1], "settings": {"server_cpu": 0, "client_cpu": 1},
        "machine": {"cpu": "cpu", "cpus": 2, "memory_gib": 8, "python": "3.11", "torch": "2", "git": "abc"},
        "capacity": [{
            "protocol": "v2-rest", "batch": 1, "slo_p99_ms": 10, "search": search.to_dict(),
            "level_probe": {**level.__dict__, "in_flight": level.in_flight},
            "in_flight_at_capacity": search.at_capacity.in_flight, "recommendation": rec,
        }],
    }  # fmt: skip
    text = render_capacity(json.loads(json.dumps(results)))
    assert f"| v2-rest | 1 | 10 | {search.capacity:,.0f} |" in text
    assert f"`{' '.join(rec['knative']['rps'])}`" in text and f"`{' '.join(rec['standard']['concurrency'])}`" in text
    assert text.count("| confirm |") == 1 and "| level |" in text


def test_capacity_cli_refuses_other_servers_and_defaults_to_v2_rest_batch_1(monkeypatch, tmp_path, capsys):
    assert serve.main(["--capacity", "--servers", "mlserver"]) == 2
    assert "kfkit's server only" in capsys.readouterr().err
    from kfkit.errors import ServingError

    seen = {}

    def fake_run(settings, out, *, command):
        seen.update(settings=settings, out=out, command=command)
        raise ServingError("stop here")

    monkeypatch.setattr(serve, "run_capacity", fake_run)
    assert serve.main(["--capacity", "--slo-p99-ms", "100,10", "--out", str(tmp_path)]) == 1
    settings = seen["settings"]
    assert settings.protocols == ["v2-rest"] and settings.batches == [1]
    assert settings.capacity_slos_ms == [100.0, 10.0] and seen["out"] == tmp_path
    assert seen["command"].startswith("kfkit bench serve --capacity")


@pytest.mark.slow
def test_real_capacity_run_writes_keys_that_compose(tmp_path, capsys):
    from kfkit.config import compose

    argv = ["--capacity", "--quick", "--duration", "0.5", "--slo-p99-ms", "100", "--start-rate", "500"]
    assert serve.main([*argv, "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["kind"] == "capacity" and (tmp_path / "results.md").read_text() == render_capacity(saved)
    [entry] = saved["capacity"]
    assert entry["protocol"] == "v2-rest" and entry["batch"] == 1 and entry["slo_p99_ms"] == 100
    search = entry["search"]
    assert search["capacity"] > 0 and search["confirmed"], search["limit"]
    assert search["at_capacity"]["p99_ms"] < 100 and search["at_capacity"]["errors"] == 0
    assert entry["level_probe"]["errors"] == 0 and entry["in_flight_at_capacity"] > 0
    for mode in ("knative", "standard"):
        for metric in ("rps", "concurrency"):
            keys = entry["recommendation"][mode][metric]
            cfg = compose(["deploy=kserve", *keys])
            assert cfg.deploy.autoscaling_metric == metric and cfg.deploy.autoscaling_target >= 1
    out = capsys.readouterr().out
    assert "deploy.autoscaling_metric=rps deploy.autoscaling_target=" in out
