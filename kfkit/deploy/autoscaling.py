"""How an InferenceService scales, in both KServe modes: Knative's KPA/HPA, or Standard mode's HPA or KEDA.

* Knative mode (called Serverless before KServe 0.16): Knative's autoscaler, set through the
  ``autoscaling.knative.dev/*`` annotations. KPA scales on concurrency or requests per second and can scale to
  zero, with a scale-down delay and an initial scale so slow (GPU) cold starts do not thrash.
* Standard mode (RawDeployment before 0.16): a plain Deployment. KServe's own HPA on CPU or memory, or KEDA
  through the predictor's ``autoScaling`` field (KServe 0.15+) and ``serving.kserve.io/autoscalerClass: keda``,
  on a Prometheus query over the predictors' own /metrics (:mod:`kfkit.deploy.promql`). KServe silently
  treats ``minReplicas: 0`` as 1 under the HPA, so that combination is refused here rather than surprise anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kfkit.deploy import promql
from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import DeployConfig

__all__ = [
    "KNATIVE",
    "STANDARD",
    "MODE_ANNOTATION",
    "AUTOSCALER_CLASS_ANNOTATION",
    "KPA",
    "HPA",
    "AUTOSCALING_METRICS",
    "AUTOSCALERS",
    "Autoscaling",
    "deployment_mode",
    "plan",
]

KNATIVE = "knative"
STANDARD = "standard"
_MODES = {"knative": KNATIVE, "serverless": KNATIVE, "standard": STANDARD, "rawdeployment": STANDARD}
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
AUTOSCALING_METRICS = {"concurrency": KPA, "rps": KPA, "cpu": HPA, "memory": HPA}
"""Knative metric -> the autoscaler class that implements it (KPA scales to zero, HPA does not)."""
AUTOSCALERS = ("auto", "kpa", "hpa", "keda")
_RESOURCE_METRICS = ("cpu", "memory")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


@dataclass(frozen=True)
class Autoscaling:
    """What the InferenceService carries to scale as configured."""

    mode: str
    """knative or standard."""
    autoscaler: str
    """kpa, hpa or keda."""
    annotations: dict[str, str] = field(default_factory=dict)
    """InferenceService annotations (Knative's autoscaling ones, or KServe's mode and autoscaler class)."""
    auto_scaling: dict[str, Any] | None = None
    """The predictor's ``autoScaling`` (Standard mode), camelCase."""


def deployment_mode(value: str) -> str:
    """``knative`` or ``standard`` for any spelling KServe accepts (Serverless, Knative, RawDeployment, Standard).

    Raises:
        ConfigError: another value.
    """
    mode = _MODES.get(str(value).replace("_", "").replace("-", "").lower())
    if mode is None:
        raise ConfigError(
            f"deploy.mode={value!r} is not a KServe deployment mode: use knative (formerly Serverless) or "
            "standard (formerly RawDeployment)"
        )
    return mode


def plan(d: DeployConfig, *, name: str, namespace: str, kserve_version: tuple[int, int] = (0, 20)) -> Autoscaling:
    """Check the deploy group's scaling settings and return what the InferenceService needs for them.

    Args:
        d: The deploy settings.
        name: The InferenceService (and model) name, for the KEDA query.
        namespace: Its namespace, for the KEDA query.
        kserve_version: The cluster's KServe (major, minor): the mode annotation is spelled ``Standard`` from
            0.16 on and ``RawDeployment`` before.

    Raises:
        ConfigError: an unknown metric or autoscaler, bad bounds, or a combination KServe would not honour
            (HPA with scale to zero, KEDA in Knative mode, Knative-only settings in Standard mode).
    """
    mode = deployment_mode(d.mode)
    if d.autoscaling_metric not in AUTOSCALING_METRICS:
        raise ConfigError(
            f"deploy.autoscaling_metric={d.autoscaling_metric!r} is not one of {', '.join(AUTOSCALING_METRICS)}"
        )
    if d.autoscaler not in AUTOSCALERS:
        raise ConfigError(f"deploy.autoscaler={d.autoscaler!r} is not one of {', '.join(AUTOSCALERS)}")
    if d.min_replicas < 0 or d.max_replicas < max(d.min_replicas, 1):
        raise ConfigError(
            f"deploy.min_replicas={d.min_replicas} and deploy.max_replicas={d.max_replicas}: need "
            "0 <= min_replicas <= max_replicas and max_replicas >= 1"
        )
    if d.autoscaling_target < 1:
        raise ConfigError(f"deploy.autoscaling_target={d.autoscaling_target} must be at least 1")
    if mode == KNATIVE:
        return _knative(d)
    return _standard(d, name=name, namespace=namespace, kserve_version=kserve_version)


def _knative(d: DeployConfig) -> Autoscaling:
    metric = d.autoscaling_metric
    resource = metric in _RESOURCE_METRICS
    autoscaler = d.autoscaler if d.autoscaler != "auto" else ("hpa" if resource else "kpa")
    if autoscaler == "keda":
        raise ConfigError(
            "deploy.autoscaler=keda scales Standard-mode Deployments only (KServe's KEDA support): set "
            "deploy.mode=standard, or use deploy.autoscaler=kpa (concurrency, rps) or hpa (cpu, memory) in Knative mode"
        )
    if autoscaler == "kpa" and resource:
        raise ConfigError(
            f"deploy.autoscaling_metric={metric!r} is not a KPA metric: Knative's KPA scales on concurrency or rps; "
            "set deploy.autoscaler=hpa (or auto) for cpu and memory"
        )
    if autoscaler == "hpa" and not resource:
        raise ConfigError(
            f"deploy.autoscaling_metric={metric!r} needs Knative's KPA: set deploy.autoscaler=kpa (or auto), or "
            "scale on cpu or memory with the HPA"
        )
    if d.min_replicas == 0 and autoscaler == "hpa":
        raise ConfigError(
            f"deploy.min_replicas=0 (scale to zero) needs a KPA metric, but deploy.autoscaling_metric="
            f"{metric!r} uses the HPA: set deploy.autoscaling_metric=concurrency (or rps), "
            "or deploy.min_replicas=1"
        )
    annotations = {
        "autoscaling.knative.dev/class": KPA if autoscaler == "kpa" else HPA,
        "autoscaling.knative.dev/metric": metric,
        "autoscaling.knative.dev/target": str(d.autoscaling_target),
    }
    if d.scale_down_delay is not None:
        annotations["autoscaling.knative.dev/scale-down-delay"] = _check_delay(d.scale_down_delay)
    if d.initial_scale is not None:
        if d.initial_scale < 0 or d.initial_scale > d.max_replicas:
            raise ConfigError(
                f"deploy.initial_scale={d.initial_scale} must be between 0 and deploy.max_replicas={d.max_replicas}"
            )
        if d.initial_scale == 0 and d.min_replicas > 0:
            raise ConfigError(
                "deploy.initial_scale=0 starts a revision with no replica, which needs scale to zero: set "
                "deploy.min_replicas=0 (and allow-zero-initial-scale in Knative's config-autoscaler)"
            )
        annotations["autoscaling.knative.dev/initial-scale"] = str(d.initial_scale)
    return Autoscaling(mode=KNATIVE, autoscaler=autoscaler, annotations=annotations)


def _standard(d: DeployConfig, *, name: str, namespace: str, kserve_version: tuple[int, int]) -> Autoscaling:
    metric = d.autoscaling_metric
    resource = metric in _RESOURCE_METRICS
    for key, value in (("scale_down_delay", d.scale_down_delay), ("initial_scale", d.initial_scale)):
        if value is not None:
            raise ConfigError(
                f"deploy.{key}={value!r} is a Knative autoscaler setting; Standard mode has none: "
                f"unset it (deploy.{key}=null) or use deploy.mode=knative"
            )
    if d.autoscaler == "kpa":
        raise ConfigError(
            "deploy.autoscaler=kpa is Knative's autoscaler: in Standard mode use hpa (cpu, memory) or keda "
            "(any metric), or set deploy.mode=knative"
        )
    autoscaler = d.autoscaler if d.autoscaler != "auto" else ("hpa" if resource else "keda")
    if autoscaler == "hpa" and not resource:
        raise ConfigError(
            f"deploy.autoscaling_metric={metric!r} with the HPA: KServe's HPA scales on cpu or memory only; "
            "set deploy.autoscaler=keda to scale on a Prometheus query of the predictors' request rate or "
            "in-flight requests"
        )
    if d.min_replicas == 0 and autoscaler == "hpa":
        raise ConfigError(
            "deploy.min_replicas=0 with the HPA: a HorizontalPodAutoscaler cannot scale to zero and KServe "
            "silently treats minReplicas 0 as 1 in Standard mode; set deploy.min_replicas=1, or "
            "deploy.autoscaler=keda with deploy.autoscaling_metric=rps (or concurrency) to scale to zero"
        )
    if d.min_replicas == 0 and resource:
        raise ConfigError(
            f"deploy.min_replicas=0 with KEDA on {metric}: KEDA cannot scale to zero on CPU or memory alone; "
            "use deploy.autoscaling_metric=rps (or concurrency), or deploy.min_replicas=1"
        )
    if d.keda_query is not None and autoscaler != "keda":
        raise ConfigError("deploy.keda_query is KEDA's query: set deploy.autoscaler=keda, or unset the query")
    if resource:
        utilization = {"type": "Utilization", "averageUtilization": d.autoscaling_target}
        metrics = [{"type": "Resource", "resource": {"name": metric, "target": utilization}}]
    else:
        query = d.keda_query or (promql.request_rate if metric == "rps" else promql.in_flight)(namespace, name)
        # KServe hands target.value to KEDA as the trigger's threshold, and KEDA's Prometheus trigger divides the
        # query's value by the replicas (AverageValue): the target is per replica, as autoscaling_target says.
        target = {"type": "Value", "value": str(d.autoscaling_target)}
        source = {"backend": "prometheus", "serverAddress": d.prometheus_url, "query": query, "namespace": namespace}
        external = {"metric": source, "target": target}
        metrics = [{"type": "External", "external": external}]
    annotations = {
        MODE_ANNOTATION: "Standard" if kserve_version >= (0, 16) else "RawDeployment",
        AUTOSCALER_CLASS_ANNOTATION: autoscaler,
    }
    return Autoscaling(mode=STANDARD, autoscaler=autoscaler, annotations=annotations, auto_scaling={"metrics": metrics})


def _check_delay(value: str) -> str:
    """A Knative scale-down delay: a duration like 90s, 15m or 1h, at most one hour."""
    match = _DURATION.fullmatch(str(value))
    if not value or not match or not any(match.groups()):
        raise ConfigError(f"deploy.scale_down_delay={value!r} is not a duration: write e.g. 30s, 15m or 1h")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    if hours * 3600 + minutes * 60 + seconds > 3600:
        raise ConfigError(f"deploy.scale_down_delay={value!r} is over Knative's limit of 1h")
    return str(value)
