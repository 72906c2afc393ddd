"""Capacity per replica (``kfkit bench serve --capacity``): the rate search and the deploy keys it recommends.

Nothing here starts a server: :func:`search_capacity` takes any ``measure(rate) -> Probe`` (the real one,
an open-loop run against kfkit's server pinned to one core, is in :mod:`.capacity_run`; the tests pass a
fake), so the search rule is tested fast and deterministically.

The rule: a probe *passes* when its p99 is under the SLO, no request failed, and the achieved rate is at
least 95% of the offered one (a server that falls behind stretches the run, so its achieved rate drops).
From ``start_rate`` the offered rate is multiplied by ``growth`` (1.5) while probes pass; the first failure
brackets the capacity, which is then bisected until the bracket is within ``tolerance`` (5%). The highest
passing rate must pass a second probe (the load is noisy); if it does not, it counts as failed and the search
bisects again below it. The capacity is that confirmed rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "HEADROOM",
    "KPA_TARGET_UTILIZATION",
    "MIN_ACHIEVED",
    "Probe",
    "CapacitySearch",
    "judge",
    "search_capacity",
    "round_down",
    "recommend",
]

HEADROOM = 0.7
"""Share of the measured capacity a replica is scaled at. A new replica needs time before it takes traffic
(Knative's 60 s stable window or KEDA's polling, pod start, model load); meanwhile the running replicas carry
the growth. At 70% they absorb 1/0.7 = 1.43x the load (a 43% rise) before the SLO breaks."""
KPA_TARGET_UTILIZATION = 0.7
"""Knative's default ``target-utilization-percentage`` (``container-concurrency-target-percentage``): KPA aims
at target x 0.7, for rps and concurrency alike; kfkit does not change it. KEDA (Standard mode) divides the
query by the target as it is."""
MIN_ACHIEVED = 0.95
"""Achieved over offered rate below which a probe fails (the server, or the client, fell behind)."""


@dataclass
class Probe:
    """One open-loop run at an offered rate, and what came of it."""

    rate: float
    """Offered requests per second."""
    achieved: float
    """Successful responses per second over the run (including the time its backlog took to drain)."""
    p99_ms: float
    mean_ms: float
    errors: int = 0
    requests: int = 0
    p50_ms: float = 0.0
    passed: bool = False
    why: str = ""
    """Why it failed (empty when it passed)."""
    phase: str = ""
    """``step``, ``down``, ``bisect``, ``confirm`` or ``level`` (the run at the recommended rate)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Whatever else the measurement recorded (server and client CPU share, ...)."""

    @property
    def in_flight(self) -> float:
        """Requests in flight on average (Little's law: achieved rate x mean latency)."""
        return self.achieved * self.mean_ms / 1000.0


def judge(probe: Probe, slo_p99_ms: float, min_achieved: float = MIN_ACHIEVED) -> tuple[bool, str]:
    """Whether ``probe`` stays within the SLO, and why not."""
    reasons = []
    if probe.errors:
        reasons.append(f"{probe.errors} errors")
    if probe.p99_ms >= slo_p99_ms:
        reasons.append(f"p99 {probe.p99_ms:.2f} ms >= {slo_p99_ms:g} ms")
    if probe.achieved < min_achieved * probe.rate:
        reasons.append(f"achieved {probe.achieved:,.0f}/s < {min_achieved:.0%} of {probe.rate:,.0f}/s")
    return not reasons, "; ".join(reasons)


@dataclass
class CapacitySearch:
    """The outcome of one search."""

    slo_p99_ms: float
    capacity: float | None
    """Highest offered rate that passed twice (req/s); None when even the lowest rate tried failed."""
    at_capacity: Probe | None
    """The confirming probe at that rate."""
    first_failure: float | None
    """Lowest offered rate above the capacity that failed (None: ``max_rate`` was reached first)."""
    confirmed: bool
    """False when ``max_probes`` ran out before the capacity passed its second probe."""
    probes: list[Probe]
    limit: str
    """What bounded the search: ``slo`` (a failure above), ``max_rate``, ``max_probes`` or ``none_passed``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, each probe with its in-flight estimate."""
        data = asdict(self)
        data["probes"] = [{**asdict(p), "in_flight": p.in_flight} for p in self.probes]
        return data


def search_capacity(
    measure: Callable[[float], Probe],
    *,
    slo_p99_ms: float,
    start_rate: float = 100.0,
    growth: float = 1.5,
    tolerance: float = 0.05,
    max_rate: float = 200_000.0,
    min_rate: float = 1.0,
    max_probes: int = 40,
    min_achieved: float = MIN_ACHIEVED,
    on_probe: Callable[[Probe], None] | None = None,
) -> CapacitySearch:
    """The highest offered rate whose p99 stays under ``slo_p99_ms`` with no errors and >= 95% achieved.

    Args:
        measure: One open-loop run at the given offered rate.
        slo_p99_ms: The p99 bound, ms.
        start_rate: First rate tried; if it fails, the rate is divided by ``growth`` until one passes.
        growth: Factor between step-up probes.
        tolerance: Bisection stops when the failing rate is within this share above the passing one.
        max_rate: Stop stepping up here (the capacity is then at least this).
        min_rate: Stop stepping down here (no capacity).
        max_probes: Probes in all, confirmations included.
        min_achieved: Achieved/offered share below which a probe fails.
        on_probe: Called with each probe once judged (progress lines).
    """
    if growth <= 1 or start_rate <= 0 or tolerance <= 0:
        raise ValueError("need growth > 1, start_rate > 0 and tolerance > 0")
    probes: list[Probe] = []

    def run(rate: float, phase: str) -> bool:
        probe = measure(rate)
        probe.rate, probe.phase = rate, phase
        probe.passed, probe.why = judge(probe, slo_p99_ms, min_achieved)
        probes.append(probe)
        if on_probe is not None:
            on_probe(probe)
        return probe.passed

    def result(capacity: float | None, hi: float | None, confirmed: bool, limit: str) -> CapacitySearch:
        at = next((p for p in reversed(probes) if p.rate == capacity and p.passed), None)
        return CapacitySearch(slo_p99_ms, capacity, at, hi, confirmed, probes, limit)

    lo: float | None = None
    hi: float | None = None
    rate = start_rate
    if run(rate, "step"):
        lo = rate
        while hi is None:
            rate = min(rate * growth, max_rate)
            if rate <= lo:
                break
            if len(probes) >= max_probes:
                return result(lo, None, False, "max_probes")
            if run(rate, "step"):
                lo = rate
            else:
                hi = rate
    else:
        hi = rate
        while lo is None:
            rate /= growth
            if rate < min_rate or len(probes) >= max_probes:
                return result(None, hi, False, "none_passed" if rate < min_rate else "max_probes")
            if run(rate, "down"):
                lo = rate
            else:
                hi = rate
    while True:
        while hi is not None and hi > lo * (1 + tolerance):
            if len(probes) >= max_probes:
                return result(lo, hi, False, "max_probes")
            mid = (lo + hi) / 2
            if run(mid, "bisect"):
                lo = mid
            else:
                hi = mid
        if len(probes) >= max_probes:
            return result(lo, hi, False, "max_probes")
        if run(lo, "confirm"):
            return result(lo, hi, True, "slo" if hi is not None else "max_rate")
        # It passed once and failed once: count it as failed, and bisect below it from the best other pass.
        hi = lo
        below = [p.rate for p in probes if p.passed and p.rate < hi]
        if below:
            lo = max(below)
            continue
        rate = hi
        while True:
            rate /= growth
            if rate < min_rate or len(probes) >= max_probes:
                return result(None, hi, False, "none_passed" if rate < min_rate else "max_probes")
            if run(rate, "down"):
                lo = rate
                break
            hi = rate


def round_down(value: float, digits: int = 2) -> int:
    """``value`` rounded down to ``digits`` significant figures (3,586 -> 3,500), at least 1."""
    if value < 1:
        return 1
    scale = 10 ** max(0, int(math.floor(math.log10(value))) + 1 - digits)
    return max(1, int(value // scale * scale))


def recommend(capacity: float, in_flight_at_level: float, headroom: float = HEADROOM) -> dict[str, Any]:
    """The deploy keys that scale a replica at ``headroom`` of ``capacity``, for both KServe modes.

    Args:
        capacity: Measured capacity of one replica, req/s.
        in_flight_at_level: Requests in flight measured at ``headroom x capacity`` (Little's law).
        headroom: Share of the capacity to scale at.

    Returns:
        ``level_rps`` and ``level_in_flight`` (where a replica should run), and per mode the keys as kfkit
        overrides: ``standard`` (KEDA uses the target as it is) and ``knative`` (KPA aims at target x 0.7, so
        the target is the level divided by 0.7), each with an ``rps`` and a ``concurrency`` alternative.
    """
    level = headroom * capacity
    rps_standard = round_down(level)
    rps_knative = round_down(level / KPA_TARGET_UTILIZATION)
    conc_standard = max(1, round(in_flight_at_level))
    conc_knative = max(1, round(in_flight_at_level / KPA_TARGET_UTILIZATION))

    def keys(mode: str, metric: str, target: int) -> list[str]:
        return [f"deploy.mode={mode}", f"deploy.autoscaling_metric={metric}", f"deploy.autoscaling_target={target}"]

    return {
        "headroom": headroom,
        "capacity_rps": capacity,
        "level_rps": level,
        "level_in_flight": in_flight_at_level,
        "standard": {
            "rps": keys("standard", "rps", rps_standard),
            "concurrency": keys("standard", "concurrency", conc_standard),
        },
        "knative": {
            "rps": keys("knative", "rps", rps_knative),
            "concurrency": keys("knative", "concurrency", conc_knative),
        },
    }
