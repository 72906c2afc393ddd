"""The chart's dashboard and alert rules, proven on real metrics: every PromQL expression of the rendered
dashboard and PrometheusRule is run by Debian's Prometheus against a live predictor and drift detector under
a short load, and promtool checks and unit-tests the rendered rule groups."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from observability_stack import DRIFT_PYTHON, NAMESPACE, RELEASE, SHIFTED, running_stack

pytestmark = pytest.mark.slow  # a predictor, a detector and Prometheus; ~1 minute

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "helm" / "kfkit"
HELM = REPO / ".tools" / "bin" / "helm"
COMPARISON = re.compile(r"\s(>=|<=|==|!=|>|<)\s")
ALERTS = {"KfkitPredictorErrorRatioHigh", "KfkitPredictorLatencyHigh", "KfkitPayloadEventsDropped",
          "KfkitDriftDetected", "KfkitFeaturePSIHigh", "KfkitPerformanceBelowFloor"}  # fmt: skip


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"missing tool: {name} (Debian package prometheus; scripts/install_system_tools.sh installs it)")
    return path


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    if not HELM.is_file():
        pytest.skip(f"missing tool: helm is not installed at {HELM}: run `make tools`")
    result = subprocess.run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rule_groups(rendered) -> dict[str, Any]:
    """The PrometheusRule's groups, as a plain Prometheus rule file."""
    (rule,) = [d for d in rendered if d["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


@pytest.fixture(scope="module")
def dashboard_queries(rendered) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of the dashboard ConfigMap's JSON."""
    (config_map,) = [d for d in rendered if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    board = json.loads(config_map["data"]["kfkit.json"])
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]


def split_comparison(expr: str) -> tuple[str, str, str]:
    """An alert's ``signal <op> threshold`` at the top level (outside parentheses and braces)."""
    depth = 0
    for i, char in enumerate(expr):
        depth += char in "({"
        depth -= char in ")}"
        if depth == 0 and (match := COMPARISON.match(expr, i)):
            rest = expr[match.end() :]
            if rest.startswith("on ("):  # a vector comparison: drop the matching clause
                rest = rest[rest.index(")") + 1 :].strip()
            return expr[:i], match.group(1), rest
    raise AssertionError(f"no top-level comparison in {expr!r}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, rule_groups):
    prometheus = _tool("prometheus")
    if not DRIFT_PYTHON.exists():
        pytest.skip(f"missing tool: {DRIFT_PYTHON} (make setup builds the drift environment)")
    with running_stack(tmp_path_factory.mktemp("observability"), rule_groups, prometheus) as live:
        yield live


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_the_dashboard_has_every_panel_the_issue_names(dashboard_queries):
    titles = " | ".join(title for title, _ in dashboard_queries).lower()
    for word in ("request rate", "status", "error", "p50 / p99", "batch size", "p-value", "psi", "drift",
                 "performance", "payload"):  # fmt: skip
        assert word in titles, word
    assert len(dashboard_queries) == 14


def test_every_dashboard_query_returns_data(stack, dashboard_queries):
    empty = [(title, expr) for title, expr in dashboard_queries if not stack.query(expr)]
    assert not empty, f"panels without data: {empty}"
    for title, expr in dashboard_queries:
        assert any(v == v for v in _values(stack.query(expr))), f"{title}: only NaN from {expr}"  # NaN != NaN


def test_dashboard_values_are_the_loads(stack, dashboard_queries):
    by_title = {title: expr for title, expr in dashboard_queries}
    status = stack.query(by_title["Non-2xx responses by status"])
    assert {s["metric"]["status"] for s in status} == {"400"}  # the malformed requests, nothing else
    psi = {s["metric"]["feature"]: float(s["value"][1]) for s in stack.query(by_title["PSI per feature"])}
    assert len(psi) == 30
    shifted = [f"x{i:02d}" for i in SHIFTED]
    # PSI of 40-row windows is noisy (a clean feature can exceed 0.25): compare the shifted ones with the rest
    assert min(psi[f] for f in shifted) > 0.25
    clean = [v for f, v in psi.items() if f not in shifted]
    assert statistics.median(psi[f] for f in shifted) > 2 * statistics.median(clean)
    p_query = by_title["Drift p-value per feature"]
    p_values = {s["metric"]["feature"]: float(s["value"][1]) for s in stack.query(p_query)}
    assert max(p_values[f] for f in shifted) < 1e-6 < statistics.median(p_values.values())
    (drift,) = _values(stack.query(by_title["Drift (last tested window)"]))
    assert drift == 1.0  # the last window was drifted
    assert stack.sent["labels"] >= 100


def test_every_alert_signal_returns_data(stack, rule_groups):
    """Each alert is ``signal <op> threshold``: the signal (and a vector threshold) has data under the load."""
    rules = [r for g in rule_groups["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        signal, _, threshold = split_comparison(rule["expr"])
        assert stack.query(signal), f"{rule['alert']}: no data for {signal}"
        if not re.fullmatch(r"[0-9.e+-]+", threshold):
            assert stack.query(threshold), f"{rule['alert']}: no data for {threshold}"


def test_drift_alerts_hold_on_the_drifted_stream(stack, rule_groups):
    """The full drift expressions return series now (drift, PSI), and Prometheus has the alert active."""
    rules = {r["alert"]: r for g in rule_groups["groups"] for r in g["rules"]}
    for name in ("KfkitDriftDetected", "KfkitFeaturePSIHigh"):
        assert stack.query(rules[name]["expr"]), name
    assert not stack.query(rules["KfkitPredictorErrorRatioHigh"]["expr"])  # 400s are not server errors
    active = {a["labels"]["alertname"]: a for a in stack.alerts()}
    assert active["KfkitDriftDetected"]["state"] in ("pending", "firing")
    assert active["KfkitDriftDetected"]["labels"]["namespace"] == NAMESPACE
    assert {a["labels"]["feature"] for a in stack.alerts() if a["labels"]["alertname"] == "KfkitFeaturePSIHigh"} >= {
        f"x{i:02d}" for i in SHIFTED}  # fmt: skip


def test_promtool_checks_and_unit_tests_the_rendered_rules(rule_groups, tmp_path):
    """promtool check rules, and promtool test rules (tests/helm/rules_test.yaml): the drift alert fires on a
    drifted series and stays silent on a clean one."""
    promtool = _tool("promtool")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    checked = subprocess.run([promtool, "check", "rules", tmp_path / "rules.yaml"], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")
    tested = subprocess.run([promtool, "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_fails_a_wrong_expectation(rule_groups, tmp_path):
    """The unit test can fail: expecting the alert on the clean series is reported as a failure."""
    promtool = _tool("promtool")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    tests = yaml.safe_load((HERE / "rules_test.yaml").read_text())
    clean = tests["tests"][1]["alert_rule_test"][-1]
    drifted = tests["tests"][0]["alert_rule_test"][-1]
    clean["exp_alerts"] = drifted["exp_alerts"]
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(tests))
    tested = subprocess.run([promtool, "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert tested.returncode != 0
    assert "FAILED" in tested.stdout + tested.stderr
