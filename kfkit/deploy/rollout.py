"""Canary rollouts of a registry version on KServe: start, status, step, promote, roll back, and an automatic mode.

KServe's own Python client has no rollout helper; this is kfkit's. Every move re-renders the InferenceService
from the config and the registry (the stable version is the production alias, the canary the canary alias),
applies it with server-side apply, waits for Ready of that generation, then records the move in the registry:
the alias is moved to match and the audit log says why.

* Knative mode: the canary is the new spec with ``canaryTrafficPercent``; KServe splits the traffic between
  its revision and ``status.components.predictor.previousRolledoutRevision``. Promote removes the field
  (100% to the new revision); roll back sets it to 0, which pins all traffic on the previous rolled-out
  revision. Tag routing (``serving.kserve.io/enable-tag-routing``) gives ``latest-`` and ``prev-`` URLs.
* Standard mode: KServe ignored ``canaryTrafficPercent`` there before 0.20. KServe 0.20 adds ``spec.canary[]``:
  a second, fixed-size predictor named ``v<version>`` with its share of the traffic. Promote makes it the
  predictor (same name, so the Deployment is kept) and drops the entry; roll back drops the entry. Objects are
  applied with strict field validation, so an older KServe refuses ``spec.canary`` and the rollout stops with
  that reason, instead of silently sending all traffic to one version.
* ``auto`` steps the traffic (deploy.canary_steps, e.g. 10 -> 50 -> 100), watching the canary's error rate
  and p99 from Prometheus (:mod:`kfkit.deploy.promql`) for deploy.canary_step_s at each step, and rolls back
  as soon as one leaves its bound (deploy.max_error_rate, deploy.slo_p99_ms) or the service stops being Ready.

About 570 lines, past the usual 400: the rollout is one state machine (start, step, promote, roll back,
the automatic mode) over one InferenceService, in both of KServe's modes; each move reads the live object
and the registry's aliases, and splitting the moves apart would split the invariants they keep together.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kfkit.deploy.autoscaling import KNATIVE, deployment_mode
from kfkit.deploy.kserve import (
    ISVC_API,
    Cluster,
    apply_all,
    build_objects,
    production_alias,
    wait_ready,
)
from kfkit.errors import ConfigError, DeployError, RolloutError, ServingError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig
    from kfkit.registry import ModelVersion, Registry

__all__ = [
    "CANARY_VERSION_ANNOTATION",
    "TAG_ROUTING_ANNOTATION",
    "RolloutStatus",
    "RolloutResult",
    "CanaryMetrics",
    "PrometheusMetrics",
    "Rollout",
    "check_steps",
]

CANARY_VERSION_ANNOTATION = "kfkit.io/canary-version"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
_STRICT_REFUSAL = ("not declared in schema", "unknown field", "field not declared")


class CanaryMetrics(Protocol):
    """Where a rollout reads a version's health: error rate (0-1) and p99 latency (ms); None = no traffic."""

    def error_rate(self, version: str) -> float | None: ...  # noqa: D102

    def p99_ms(self, version: str) -> float | None: ...  # noqa: D102

    def request_rate(self, version: str) -> float | None: ...  # noqa: D102


class PrometheusMetrics:
    """A version's error rate, p99 and request rate from Prometheus, by the queries of kfkit.deploy.promql."""

    def __init__(self, url: str, *, namespace: str, model: str, window: str = "2m") -> None:
        """Query the Prometheus at ``url`` about ``model``'s pods in ``namespace``."""
        from kfkit.deploy.promql import PrometheusClient

        self.client = PrometheusClient(url)
        self.namespace, self.model, self.window = namespace, model, window

    def error_rate(self, version: str) -> float | None:  # noqa: D102
        from kfkit.deploy.promql import error_rate

        return self.client.query(error_rate(self.namespace, self.model, version, self.window))

    def p99_ms(self, version: str) -> float | None:  # noqa: D102
        from kfkit.deploy.promql import p99_seconds

        seconds = self.client.query(p99_seconds(self.namespace, self.model, version, self.window))
        return None if seconds is None else seconds * 1000.0

    def request_rate(self, version: str) -> float | None:  # noqa: D102
        from kfkit.deploy.promql import version_request_rate

        return self.client.query(version_request_rate(self.namespace, self.model, version, self.window))


@dataclass
class RolloutStatus:
    """Where a rollout stands, read from the InferenceService and the registry."""

    name: str
    namespace: str
    mode: str
    ready: bool
    generation: int
    observed_generation: int
    stable_version: str | None
    """The production alias."""
    canary_version: str | None
    """The version in canary (None when none is in flight)."""
    canary_percent: int | None
    """Its share of the traffic (0 after a Knative rollback, None when no canary)."""
    traffic: list[dict[str, Any]] = field(default_factory=list)
    """Knative: status.components.predictor.traffic; Standard: one entry per predictor."""
    previous_revision: str = ""
    """Knative: status.components.predictor.previousRolledoutRevision (what a rollback pins)."""
    latest_revision: str = ""
    """Knative: latestReadyRevision."""
    aliases: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per version: error_rate, p99_ms, rps (or error: why they could not be read)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``kfkit rollout status --json``)."""
        return asdict(self)


@dataclass
class RolloutResult:
    """How ``auto`` ended."""

    outcome: str
    """promoted or rolled_back."""
    version: str
    reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    """Per traffic step: percent and the worst error rate and p99 seen."""
    status: RolloutStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["status"] = self.status.to_dict() if self.status else None
        return out


def check_steps(steps: list[int]) -> list[int]:
    """Traffic steps: increasing percentages in 1..100 ending at 100.

    Raises:
        ConfigError: naming the bad list.
    """
    steps = [int(s) for s in steps]
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ConfigError(
            f"deploy.canary_steps={steps} must be increasing percentages ending at 100, e.g. [10, 50, 100]"
        )
    return steps


class Rollout:
    """Canary moves of one model's InferenceService (see the module docstring)."""

    def __init__(
        self,
        cfg: KfkitConfig,
        *,
        name: str | None = None,
        cluster: Cluster | None = None,
        registry: Registry | None = None,
        metrics: CanaryMetrics | None = None,
        poll_s: float = 2.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Set up moves of ``name`` (default cfg.model.name) in deploy.namespace.

        Args:
            cfg: The composed config (deploy and registry groups).
            name: Model (and InferenceService) name.
            cluster: Where it runs; default the in-cluster or kubeconfig cluster.
            registry: Default the config's registry.
            metrics: Canary health source; default Prometheus at deploy.prometheus_url.
            poll_s: Seconds between status reads (and metric reads in ``auto``).
            log: Where progress lines go.
            sleep: How to wait (tests pass a fast one).
        """
        from kfkit.registry import open_registry

        self.cfg = cfg
        self.d = cfg.deploy
        self.name = name or cfg.model.name
        self.namespace = self.d.namespace
        self.mode = deployment_mode(self.d.mode)
        self.cluster = cluster or Cluster()
        self.registry = registry or open_registry(
            cfg.registry.uri, endpoint=cfg.registry.endpoint, region=cfg.registry.region
        )
        self.metrics = metrics or PrometheusMetrics(self.d.prometheus_url, namespace=self.namespace, model=self.name)
        self.poll_s, self.log, self.sleep = poll_s, log, sleep
        self.production = production_alias(cfg)
        self.canary_alias = self.d.canary_alias
        if self.canary_alias == self.production:
            raise ConfigError(
                f"deploy.canary_alias={self.canary_alias!r} is also the production alias (registry.promote_to); "
                "pick another, e.g. deploy.canary_alias=canary"
            )

    # ---- reading ------------------------------------------------------------------------------------

    def _live(self) -> dict[str, Any]:
        isvc = self.cluster.get(ISVC_API, self.namespace, self.name)
        if isvc is None:
            raise RolloutError(
                f"no InferenceService {self.namespace}/{self.name} to roll out on: deploy the first version with "
                f"`kfkit deploy` (a canary splits traffic with what already serves)"
            )
        return isvc

    def _in_flight(self, isvc: dict[str, Any]) -> tuple[str | None, int | None]:
        """(canary version, percent) of the live object; (None, None) when no canary is set."""
        spec = isvc.get("spec") or {}
        if self.mode == KNATIVE:
            percent = (spec.get("predictor") or {}).get("canaryTrafficPercent")
            if percent is None:
                return None, None
            return (isvc["metadata"].get("labels") or {}).get("kfkit.io/model-version"), int(percent)
        canary = spec.get("canary") or []
        if not canary:
            return None, None
        return (isvc["metadata"].get("annotations") or {}).get(CANARY_VERSION_ANNOTATION), int(
            canary[0].get("trafficPercent", 0)
        )

    @staticmethod
    def _ready(isvc: dict[str, Any]) -> bool:
        """Ready, and about the current generation."""
        status = isvc.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        return ready and (status.get("observedGeneration") or 0) >= (isvc["metadata"].get("generation") or 0)

    def status(self, *, with_metrics: bool = True) -> RolloutStatus:
        """Readiness, traffic split, aliases and (with_metrics) each version's error rate and p99."""
        isvc = self._live()
        status = isvc.get("status") or {}
        ready = self._ready(isvc)
        canary_version, percent = self._in_flight(isvc)
        aliases = self.registry.aliases(self.name)
        predictor = (status.get("components") or {}).get("predictor") or {}
        if self.mode == KNATIVE:
            traffic = list(predictor.get("traffic") or [])
        else:
            canary = 0 if percent is None else percent
            traffic = [{"predictor": "stable", "version": aliases.get(self.production), "percent": 100 - canary}]
            for entry in status.get("canaryStatuses") or []:
                traffic.append({"predictor": entry.get("name"), "version": canary_version,
                                "percent": entry.get("trafficPercent"), "ready": entry.get("ready")})  # fmt: skip
        found = RolloutStatus(
            name=self.name, namespace=self.namespace, mode=self.mode, ready=ready,
            generation=int(isvc["metadata"].get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            stable_version=aliases.get(self.production), canary_version=canary_version, canary_percent=percent,
            traffic=traffic, previous_revision=predictor.get("previousRolledoutRevision", ""),
            latest_revision=predictor.get("latestReadyRevision", ""), aliases=aliases,
        )  # fmt: skip
        if with_metrics:
            for version in {v for v in (found.stable_version, canary_version) if v}:
                found.metrics[version] = self._health(version)
        return found

    def _health(self, version: str) -> dict[str, Any]:
        try:
            return {
                "error_rate": self.metrics.error_rate(version),
                "p99_ms": self.metrics.p99_ms(version),
                "rps": self.metrics.request_rate(version),
            }
        except ServingError as e:
            return {"error": str(e)}

    # ---- building -----------------------------------------------------------------------------------

    def _isvc(self, version: ModelVersion) -> dict[str, Any]:
        return build_objects(self.cfg, self.registry, version)[-1]

    def _runtime(self, version: ModelVersion) -> list[dict[str, Any]]:
        return build_objects(self.cfg, self.registry, version)[:-1]

    def _canary_object(self, stable: ModelVersion, canary: ModelVersion, percent: int, live: dict) -> dict:
        if self.mode == KNATIVE:
            isvc = self._isvc(canary)
            isvc["spec"]["predictor"]["canaryTrafficPercent"] = percent
            if self.d.tag_routing:
                isvc["metadata"]["annotations"][TAG_ROUTING_ANNOTATION] = "true"
            return isvc
        isvc = self._stable_object(stable, live)
        predictor = copy.deepcopy(self._isvc(canary)["spec"]["predictor"])
        predictor["name"] = f"v{canary.version}"
        predictor["minReplicas"] = predictor["maxReplicas"] = self.d.canary_replicas  # 0.20: fixed replicas
        predictor.pop("autoScaling", None)
        isvc["spec"]["canary"] = [{"predictor": predictor, "trafficPercent": percent}]
        isvc["metadata"]["annotations"][CANARY_VERSION_ANNOTATION] = canary.version
        return isvc

    def _stable_object(self, stable: ModelVersion, live: dict | None) -> dict:
        """The version at 100%; in Standard mode the live predictor's name is kept (a rename recreates it)."""
        isvc = self._isvc(stable)
        live_name = ((live or {}).get("spec") or {}).get("predictor", {}).get("name")
        if self.mode != KNATIVE and live_name:
            isvc["spec"]["predictor"]["name"] = live_name
        return isvc

    # ---- moving -------------------------------------------------------------------------------------

    def _apply_and_wait(self, docs: list[dict[str, Any]], move: str) -> int:
        from kubernetes.client.exceptions import ApiException

        try:
            applied = apply_all(self.cluster, docs)
        except DeployError as e:
            cause = e.__cause__
            message = str(e)
            if (
                self.mode != KNATIVE
                and isinstance(cause, ApiException)
                and "canary" in message
                and any(s in message for s in _STRICT_REFUSAL)
            ):
                raise RolloutError(
                    f"this cluster's KServe does not know spec.canary ({message.split(': ', 1)[-1][:200]}): a canary "
                    "in Standard mode needs KServe 0.20 or newer (older versions ignore canaryTrafficPercent there "
                    "and would send all traffic to the new version). Upgrade KServe, use deploy.mode=knative, or "
                    "deploy the version at 100% with `kfkit deploy`"
                ) from e
            raise
        generation = int(applied[-1]["metadata"].get("generation") or 1)
        self.log(f"[rollout] {move}: applied generation {generation} of {self.namespace}/{self.name}")
        wait_ready(self.cluster, self.namespace, self.name, generation=generation, timeout_s=self.d.timeout_s,
                   poll_s=self.poll_s, log=self.log)  # fmt: skip
        return generation

    def _where(self, generation: int) -> str:
        return f"InferenceService {self.namespace}/{self.name} generation {generation}"

    def _move_alias(self, alias: str, version: str, reason: str, *, verify: bool = False) -> None:
        """Point ``alias`` at ``version``: a rollback event when that walks its history back, else a promote."""
        history = self.registry.alias_history(self.name, alias)
        current = self.registry.aliases(self.name).get(alias)
        if current is not None and current != version and history and history[-1] == version:
            self.registry.rollback(self.name, alias=alias, reason=reason)
        else:
            self.registry.promote(self.name, version, alias=alias, reason=reason, verify=verify)

    def start(self, ref: str | int, percent: int | None = None) -> RolloutStatus:
        """Serve version ``ref`` as a canary with ``percent`` of the traffic (default: the first step).

        Raises:
            RolloutError: nothing serves yet, a canary is already in flight, ``ref`` is the production
                version, or the cluster's KServe cannot run a canary in this mode.
            DeployError: the canary's generation failed or timed out.
        """
        percent = check_steps(self.d.canary_steps)[0] if percent is None else int(percent)
        if not 0 < percent < 100:
            raise ConfigError(f"canary percent {percent} must be between 1 and 99 (promote moves to 100)")
        live = self._live()
        flying, flying_percent = self._in_flight(live)
        if flying is not None and flying_percent:
            raise RolloutError(
                f"version {flying} is already in canary with {flying_percent}% of {self.namespace}/{self.name}: "
                f"`kfkit rollout promote` or `kfkit rollout rollback` it first"
            )
        stable = self.registry.get(self.name, self.production)
        canary = self.registry.get(self.name, ref)
        if canary.version == stable.version:
            raise RolloutError(
                f"version {canary.version} is already {self.production}: nothing to canary (publish a new version)"
            )
        docs = [*self._runtime(canary), self._canary_object(stable, canary, percent, live)]
        generation = self._apply_and_wait(docs, f"start {canary.version} at {percent}%")
        if self.registry.aliases(self.name).get(self.canary_alias) != stable.version:
            # The canary alias starts each rollout at the production version, so a rollback walks back to it.
            self._move_alias(self.canary_alias, stable.version, "rollout start: the canary alias begins at "
                             f"{self.production} version {stable.version}")  # fmt: skip
        self.registry.promote(self.name, canary.version, alias=self.canary_alias, verify=True,
                              reason=f"rollout start: {percent}% of traffic on {self._where(generation)}")  # fmt: skip
        return self.status(with_metrics=False)

    def _flying(self) -> tuple[dict[str, Any], ModelVersion, ModelVersion, int]:
        live = self._live()
        version, percent = self._in_flight(live)
        if version is None or not percent:
            raise RolloutError(
                f"no canary in flight on {self.namespace}/{self.name}"
                + (f" (version {version} was rolled back to 0%)" if version is not None else "")
                + ": start one with `kfkit rollout start --version N`"
            )
        stable = self.registry.get(self.name, self.production)
        canary = self.registry.get(self.name, version)
        return live, stable, canary, percent

    def set_traffic(self, percent: int) -> RolloutStatus:
        """Give the canary in flight ``percent`` of the traffic (1-99).

        Raises:
            RolloutError: no canary is in flight.
        """
        if not 0 < percent < 100:
            raise ConfigError(f"canary percent {percent} must be between 1 and 99 (promote moves to 100)")
        live, stable, canary, _ = self._flying()
        docs = [self._canary_object(stable, canary, percent, live)]
        generation = self._apply_and_wait(docs, f"step {canary.version} to {percent}%")
        self.registry.promote(self.name, canary.version, alias=self.canary_alias, verify=False,
                              reason=f"rollout step: {percent}% of traffic on {self._where(generation)}")  # fmt: skip
        return self.status(with_metrics=False)

    def promote(self, reason: str = "") -> RolloutStatus:
        """Move the canary to 100% and make it the production version.

        Raises:
            RolloutError: no canary is in flight.
        """
        live, _, canary, _ = self._flying()
        if self.mode == KNATIVE:
            isvc = self._isvc(canary)  # no canaryTrafficPercent: server-side apply removes the field
        else:
            isvc = self._isvc(canary)
            isvc["spec"]["predictor"]["name"] = f"v{canary.version}"  # KServe keeps the canary's Deployment
        generation = self._apply_and_wait([isvc], f"promote {canary.version}")
        why = f"rollout promote: 100% of traffic on {self._where(generation)}" + (f"; {reason}" if reason else "")
        self._move_alias(self.production, canary.version, why, verify=False)
        return self.status(with_metrics=False)

    def rollback(self, reason: str = "") -> RolloutStatus:
        """Send all traffic back to the production version.

        With a canary in flight: Knative sets canaryTrafficPercent to 0 (the previous rolled-out revision is
        pinned), Standard drops spec.canary; the canary alias goes back to the production version. Without
        one: the production alias goes back to its previous version, which is deployed at 100%.

        Raises:
            RolloutError: there is nothing to roll back to.
        """
        live = self._live()
        flying, percent = self._in_flight(live)
        stable = self.registry.get(self.name, self.production)
        if flying is not None and percent:
            canary = self.registry.get(self.name, flying)
            # A canary that never became Ready is replaced by the stable spec: setting its share to 0 would leave
            # the InferenceService reporting the failed revision (Ready False) for good.
            healthy = self._ready(live)
            if self.mode == KNATIVE and healthy:
                isvc = self._canary_object(stable, canary, 0, live)
            else:
                isvc = self._stable_object(stable, live)
            generation = self._apply_and_wait([isvc], f"roll back {canary.version}")
            pinned = ""
            if self.mode == KNATIVE and healthy:
                now = self._live().get("status", {}).get("components", {}).get("predictor", {})
                pinned = now.get("previousRolledoutRevision", "")
                serving = [t.get("revisionName") for t in now.get("traffic") or [] if t.get("percent") == 100]
                if pinned and serving and serving != [pinned]:
                    raise RolloutError(
                        f"rolled back to 0%, but 100% of the traffic goes to {serving}, not the previous rolled-out "
                        f"revision {pinned}; check the InferenceService"
                    )
            why = f"rollout rollback of version {canary.version} on {self._where(generation)}"
            why += f"; traffic pinned to revision {pinned}" if pinned else ""
            why += f": {reason}" if reason else ""
            if self.registry.aliases(self.name).get(self.canary_alias) not in (None, stable.version):
                self._move_alias(self.canary_alias, stable.version, why)
            return self.status(with_metrics=False)
        history = self.registry.alias_history(self.name, self.production)
        if not history:
            raise RolloutError(
                f"no canary in flight and {self.production} version {stable.version} of {self.name} has no earlier "
                "version: nothing to roll back to"
            )
        previous = self.registry.get(self.name, history[-1])
        docs = [*self._runtime(previous), self._stable_object(previous, live)]
        generation = self._apply_and_wait(docs, f"roll back to {previous.version}")
        why = f"rollout rollback to version {previous.version} on {self._where(generation)}"
        why += f": {reason}" if reason else ""
        self._move_alias(self.production, previous.version, why)
        if self.canary_alias in self.registry.aliases(self.name):
            self._move_alias(self.canary_alias, previous.version, why)
        return self.status(with_metrics=False)

    def auto(self, ref: str | int, *, steps: list[int] | None = None, step_s: float | None = None) -> RolloutResult:
        """Step version ``ref``'s traffic through ``steps`` while it stays healthy; promote, or roll back.

        At each step below 100 the canary is watched for ``step_s`` seconds: its error rate must stay at or
        under deploy.max_error_rate and its p99 at or under deploy.slo_p99_ms (no traffic is no evidence
        against it), and the InferenceService must stay Ready. The first breach rolls back.

        Returns:
            promoted, or rolled_back with the reason (also in the audit log).

        Raises:
            RolloutError, DeployError: the canary could not even start (nothing was moved then).
        """
        steps = check_steps(list(steps or self.d.canary_steps))
        step_s = self.d.canary_step_s if step_s is None else step_s
        canary = self.registry.get(self.name, ref)
        result = RolloutResult(outcome="", version=canary.version)
        first = steps[0] if steps[0] < 100 else None
        if first is None:
            raise ConfigError("deploy.canary_steps=[100] is not a canary: use `kfkit deploy` for a full deploy")
        try:
            self.start(canary.version, first)
        except RolloutError:
            raise
        except DeployError as e:  # the canary never became Ready: put the stable spec back
            reason = f"canary version {canary.version} did not start at {first}%: {e}"
            self.log(f"[rollout] {reason}; rolling back")
            self.rollback(reason=reason)
            result.outcome, result.reason = "rolled_back", reason
            result.status = self.status(with_metrics=False)
            return result
        for index, percent in enumerate(steps):
            if percent == 100:
                self.promote(reason=f"healthy at {', '.join(f'{s}%' for s in steps[:-1])}")
                result.outcome = "promoted"
                break
            try:
                if index:
                    self.set_traffic(percent)
                breach = self._watch(canary.version, percent, step_s, result)
            except DeployError as e:
                breach = f"step {percent}% failed: {e}"
            if breach:
                self.log(f"[rollout] {breach}; rolling back")
                self.rollback(reason=breach)
                result.outcome, result.reason = "rolled_back", breach
                break
        result.status = self.status(with_metrics=False)
        return result

    def _watch(self, version: str, percent: int, step_s: float, result: RolloutResult) -> str:
        """Watch the canary at one step; the breach that ends it, or '' when it stayed healthy."""
        record: dict[str, Any] = {"percent": percent, "error_rate": None, "p99_ms": None, "checks": 0}
        result.steps.append(record)
        deadline = time.monotonic() + step_s
        while True:
            health = self._health(version)
            record["checks"] += 1
            if "error" in health:
                self.log(f"[rollout] metrics unavailable at {percent}%: {health['error']}")
            else:
                errors, p99 = health["error_rate"], health["p99_ms"]
                if errors is not None:
                    record["error_rate"] = max(errors, record["error_rate"] or 0.0)
                    if errors > self.d.max_error_rate:
                        return (f"canary version {version} at {percent}%: error rate {errors:.2%} is over "
                                f"deploy.max_error_rate={self.d.max_error_rate:.2%}")  # fmt: skip
                if p99 is not None:
                    record["p99_ms"] = max(p99, record["p99_ms"] or 0.0)
                    if p99 > self.d.slo_p99_ms:
                        return (f"canary version {version} at {percent}%: p99 {p99:.1f} ms is over "
                                f"deploy.slo_p99_ms={self.d.slo_p99_ms:g}")  # fmt: skip
            if not self.status(with_metrics=False).ready:
                return f"canary version {version} at {percent}%: {self.namespace}/{self.name} is no longer Ready"
            if time.monotonic() >= deadline:
                return ""
            self.sleep(max(0.0, min(self.poll_s, deadline - time.monotonic())))
