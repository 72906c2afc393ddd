"""The PromQL kfkit scales and judges canaries on, over the predictors' own /metrics, and a small query client.

Every query reads the model server's metrics (kfkit.serving.metrics): ``kfkit_requests_total{model, protocol,
status}``, ``kfkit_request_duration_seconds`` and ``kfkit_model_info{model, version}``. Series are selected by
``namespace`` (the label a Prometheus Operator PodMonitor or the usual kubernetes_sd relabelling adds) and
``model``. A query about one version joins on ``instance`` with ``kfkit_model_info``, so a canary and the
stable predictor, which serve the same model name, are told apart by the version each pod loaded.

The queries are checked against a real Prometheus scraping real kfkit servers (tests/deploy).
"""

from __future__ import annotations

import math
from typing import Any

from kfkit.errors import ServingError

__all__ = [
    "SERVER_ERROR_STATUSES",
    "request_rate",
    "in_flight",
    "error_rate",
    "p99_seconds",
    "version_request_rate",
    "PrometheusClient",
]

SERVER_ERROR_STATUSES = "5..|INTERNAL|UNKNOWN|UNAVAILABLE|DATA_LOSS"
"""``status`` label values that count as the server's fault (HTTP 5xx and their gRPC codes); 4xx do not."""


def _selector(namespace: str, model: str, **extra: str) -> str:
    labels = {"namespace": namespace, "model": model, **extra}
    return ",".join(f'{k}="{v}"' if not v.startswith("~") else f'{k}=~"{v[1:]}"' for k, v in labels.items())


def request_rate(namespace: str, model: str, window: str = "1m") -> str:
    """Requests per second answered by every replica of ``model`` (KEDA's rps metric)."""
    return f"sum(rate(kfkit_requests_total{{{_selector(namespace, model)}}}[{window}]))"


def in_flight(namespace: str, model: str, window: str = "1m") -> str:
    """Average requests in flight over all replicas (Little's law: seconds of latency per second)."""
    return f"sum(rate(kfkit_request_duration_seconds_sum{{{_selector(namespace, model)}}}[{window}]))"


def _of_version(expr: str, namespace: str, model: str, version: str) -> str:
    info = f"max by (instance) (kfkit_model_info{{{_selector(namespace, model, version=version)}}})"
    return f"{expr} * on (instance) group_left () {info}"


def version_request_rate(namespace: str, model: str, version: str, window: str = "2m") -> str:
    """Requests per second answered by the replicas serving ``version``."""
    rate = f"sum by (instance) (rate(kfkit_requests_total{{{_selector(namespace, model)}}}[{window}]))"
    return f"sum({_of_version(rate, namespace, model, version)})"


def error_rate(namespace: str, model: str, version: str, window: str = "2m") -> str:
    """Share of ``version``'s requests answered with a server error (NaN, i.e. no value, without traffic)."""
    errors = (
        f"sum by (instance) (rate(kfkit_requests_total"
        f"{{{_selector(namespace, model, status='~' + SERVER_ERROR_STATUSES)}}}[{window}]))"
    )
    total = version_request_rate(namespace, model, version, window)
    # `or vector(0)`: without a single server error there is no error series at all, and the rate is 0, not none
    return f"(sum({_of_version(errors, namespace, model, version)}) or vector(0)) / {total}"


def p99_seconds(namespace: str, model: str, version: str, window: str = "2m") -> str:
    """99th percentile of ``version``'s request latency, in seconds."""
    series = f"kfkit_request_duration_seconds_bucket{{{_selector(namespace, model)}}}"
    buckets = f"sum by (instance, le) (rate({series}[{window}]))"
    return f"histogram_quantile(0.99, sum by (le) ({_of_version(buckets, namespace, model, version)}))"


class PrometheusClient:
    """Instant queries against Prometheus's HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> None:
        """A client of the Prometheus at ``url``.

        Args:
            url: Base URL, e.g. http://prometheus-operated.monitoring.svc:9090.
            timeout_s: Per-request timeout.
            headers: Extra headers (e.g. ``Authorization``).
        """
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})

    def query(self, promql: str) -> float | None:
        """The value of a query that returns one sample; None when it returns none, or NaN (no traffic).

        Raises:
            ServingError: Prometheus is unreachable, refused the query, or returned more than one series.
        """
        import httpx

        try:
            with httpx.Client(timeout=self.timeout_s, trust_env=False, headers=self.headers) as client:
                response = client.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as e:
            raise ServingError(f"Prometheus at {self.url} is unreachable ({e}); set deploy.prometheus_url") from e
        body: dict[str, Any]
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            raise ServingError(
                f"Prometheus at {self.url} answered {response.status_code} to {promql!r}: "
                f"{body.get('error') or response.text[:300]}"
            )
        data = body.get("data", {})
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            result = [{"value": result}]
        if not result:
            return None
        if len(result) > 1:
            raise ServingError(f"{promql!r} returned {len(result)} series; expected one (a sum)")
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value
