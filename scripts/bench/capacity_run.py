"""``kfkit bench serve --capacity``: one kfkit replica's capacity at a latency SLO, and the deploy keys to set.

kfkit's server runs pinned to one core (one replica's CPU, as ``deploy.cpu_limit=1`` grants) with one torch
thread, the open-loop load generator on another. Per protocol, batch and SLO, :func:`.capacity.search_capacity`
finds the highest offered rate whose p99 stays under the SLO (no errors, >= 95% of it achieved); one more run
at 70% of that rate measures the requests in flight there, and :func:`.capacity.recommend` turns both into
``deploy.*`` overrides. Results go to results.json and results.md, as the comparison's do.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from . import measure
from .capacity import HEADROOM, KPA_TARGET_UTILIZATION, MIN_ACHIEVED, Probe, judge, recommend, search_capacity
from .fixtures import publish_model
from .measure import progress
from .payloads import Payloads, build_payloads
from .report import loadavg, machine_info
from .servers import Server, kfkit_server, on_cpu, start_servers
from .settings import BenchSettings

__all__ = ["run_capacity", "render_capacity", "default_slo_ms", "probe_once"]

_PAUSE_S = 0.3  # between probes, so one run's tail does not start the next


def default_slo_ms() -> float:
    """``deploy.slo_p99_ms`` of kfkit's composed default config."""
    from kfkit.config import compose

    return float(compose([]).deploy.slo_p99_ms)


def probe_once(
    server: Server, protocol: str, payloads: Payloads, batch: int, rate: float, settings: BenchSettings
) -> Probe:
    """One open-loop run at ``rate`` req/s as a :class:`Probe` (server and client CPU share in ``extra``)."""
    run = measure.measure_run(
        server, protocol, payloads, batch, concurrency=64, rate=rate, duration_s=settings.duration_s, settings=settings
    )
    time.sleep(_PAUSE_S)
    load = run["load"]
    extra = {"server_cpu_share": run["server_cpu_share"], "client_cpu_share": load["client_cpu_share"]}
    extra |= {"server_cpu_us_per_req": run["server_cpu_us_per_req"], "p95_ms": run["p95_ms"]}
    return Probe(
        rate=rate, achieved=run["req_per_s"], p99_ms=run["p99_ms"], mean_ms=load["mean_ms"], p50_ms=run["p50_ms"],
        errors=run["errors"], requests=run["requests"], extra=extra,
    )  # fmt: skip


def _show(probe: Probe) -> None:
    verdict = "pass" if probe.passed else f"FAIL ({probe.why})"
    progress(
        f"  {probe.phase:<7} {probe.rate:9,.0f}/s offered  {probe.achieved:9,.0f}/s achieved  "
        f"p50 {probe.p50_ms:7.2f}  p99 {probe.p99_ms:8.2f} ms  in flight {probe.in_flight:6.1f}  "
        f"server CPU {probe.extra.get('server_cpu_share', 0):.2f}  {verdict}"
    )


def _one(
    server: Server, protocol: str, payloads: Payloads, batch: int, slo: float, settings: BenchSettings
) -> dict[str, Any]:
    """Search, then measure at 70% of the capacity, then recommend."""
    progress(f"capacity of {server.name} {protocol} batch {batch} at p99 < {slo:g} ms")
    search = search_capacity(
        lambda rate: probe_once(server, protocol, payloads, batch, rate, settings),
        slo_p99_ms=slo,
        start_rate=settings.capacity_start_rate,
        max_rate=settings.capacity_max_rate,
        on_probe=_show,
    )
    entry: dict[str, Any] = {"protocol": protocol, "batch": batch, "slo_p99_ms": slo, "search": search.to_dict()}
    if search.capacity is None:
        progress(f"  no rate down to 1/s kept p99 under {slo:g} ms: no recommendation")
        return entry
    level = probe_once(server, protocol, payloads, batch, HEADROOM * search.capacity, settings)
    level.phase = "level"
    level.passed, level.why = judge(level, slo)
    _show(level)
    entry["level_probe"] = {**asdict(level), "in_flight": level.in_flight}
    at = search.at_capacity
    entry["in_flight_at_capacity"] = at.in_flight if at else None
    if at and at.extra.get("client_cpu_share", 0) > 0.9:
        entry["note"] = (
            f"the load generator used {at.extra['client_cpu_share']:.0%} of its core at capacity: it, not the "
            "server, may have been the limit"
        )
        progress("  NOTE: " + entry["note"])
    entry["recommendation"] = rec = recommend(search.capacity, level.in_flight)
    for mode in ("knative", "standard"):
        for metric in ("rps", "concurrency"):
            progress(f"  {mode:<8} {metric:<11} {' '.join(rec[mode][metric])}")
    return entry


def run_capacity(settings: BenchSettings, out_dir: Path, *, command: str | None = None) -> dict[str, Any]:
    """Measure one kfkit replica's capacity per protocol, batch and SLO; write results.json and results.md.

    Raises:
        ServingError: the server did not start, or answered different probabilities than the model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slos = list(settings.capacity_slos_ms) or [default_slo_ms()]
    settings = replace(settings, capacity_slos_ms=slos, servers=["kfkit"], use_wrk=False)
    notes: list[str] = []
    cpus = os.cpu_count() or 1
    if cpus < 2 or max(settings.server_cpu, settings.client_cpu) >= cpus:
        notes.append(f"only {cpus} CPU(s): server and load generator are not pinned apart")
        settings = replace(settings, server_cpu=None, client_cpu=None)  # type: ignore[arg-type]
    load = loadavg()
    if load and load[0] > 0.5:
        notes.append(f"the machine was busy before the run (load average {load[0]:.2f}): capacities are low bounds")
    for note in notes:
        progress("NOTE: " + note)
    results: dict[str, Any] = {
        "kind": "capacity",
        "command": command or shlex.join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": asdict(settings),
        "machine": machine_info(),
        "loadavg_before": load,
        "notes": notes,
        "capacity": [],
    }
    server: Server | None = None
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-capacity-") as tmp, on_cpu(settings.client_cpu):
        model = publish_model(Path(tmp))
        payloads = build_payloads(model.rows, settings.batches)
        try:
            server = kfkit_server("kfkit", model, settings, out_dir / "logs")
            start_servers([server], settings.server_cpu, progress)
            results["server"] = {"command": server.command_line(), "description": server.description}
            for protocol in settings.protocols:
                measure.check_answers(server, protocol, model)
                measure.load_once(
                    server, protocol, payloads, settings.batches[0], concurrency=8,
                    duration_s=settings.warmup_s, settings=settings,
                )  # fmt: skip
            for protocol in settings.protocols:
                for batch in settings.batches:
                    for slo in slos:
                        results["capacity"].append(_one(server, protocol, payloads, batch, slo, settings))
        finally:
            if server is not None:
                server.stop()
    results["loadavg_after"] = loadavg()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(render_capacity(results))
    return results


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_capacity(results: dict[str, Any]) -> str:
    """The capacity results as markdown: machine, command, one row per SLO, the keys, every probe."""
    machine = results["machine"]
    lines = [
        f"# Capacity per replica ({results['started']})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"torch {machine['torch']}; git {machine['git']}. kfkit's server on core {results['settings']['server_cpu']} "
        f"(one replica's CPU), the open-loop client on core {results['settings']['client_cpu']}. Load average "
        f"before {results['loadavg_before']}, after {results.get('loadavg_after')}.",
        "",
        *[f"- NOTE: {note}" for note in results.get("notes", [])],
        *([""] if results.get("notes") else []),
        "| protocol | batch | p99 SLO ms | capacity req/s | p50 / p99 ms there | in flight there | server CPU "
        "| 70% level req/s | p99 ms there | in flight there | search probes |",
        "|" + "---|" * 11,
    ]
    for e in results["capacity"]:
        search, level = e["search"], e.get("level_probe")
        at = search["at_capacity"] or {}
        bound = "" if search["limit"] == "slo" else f" ({search['limit']})"
        lines.append(
            f"| {e['protocol']} | {e['batch']} | {e['slo_p99_ms']:g} | {_n(search['capacity'])}{bound} "
            f"| {_n(at.get('p50_ms'), 2)} / {_n(at.get('p99_ms'), 2)} | {_n(e.get('in_flight_at_capacity'), 1)} "
            f"| {_n((at.get('extra') or {}).get('server_cpu_share'), 2)} | {_n(level and level['achieved'])} "
            f"| {_n(level and level['p99_ms'], 2)} | {_n(level and level['in_flight'], 1)} | {len(search['probes'])} |"
        )
    lines += ["", "## Recommended deploy keys (kfkit overrides)", ""]
    for e in results["capacity"]:
        rec = e.get("recommendation")
        if not rec:
            continue
        lines.append(f"{e['protocol']}, batch {e['batch']}, p99 < {e['slo_p99_ms']:g} ms:")
        lines.append("")
        for mode, label in (("knative", "Knative mode (KPA)"), ("standard", "Standard mode (KEDA)")):
            for metric in ("rps", "concurrency"):
                lines.append(f"- {label}, {metric}: `{' '.join(rec[mode][metric])}`")
        lines.append("")
    lines += [
        f"- NOTE ({e['protocol']}, p99 < {e['slo_p99_ms']:g} ms): {e['note']}"
        for e in results["capacity"]
        if "note" in e
    ]
    lines += [
        "",
        f"Capacity: the highest offered rate (open loop, latency from when each request was due) whose p99 stayed "
        f"under the SLO with no errors and at least {MIN_ACHIEVED:.0%} of it achieved, found by stepping up 1.5x "
        "and bisecting to 5%, and passing a second run. In flight: achieved rate x mean latency (Little's law). "
        f"Replicas are scaled at {HEADROOM:.0%} of capacity: new ones take time to start and load the model, and "
        f"meanwhile the running ones absorb a {1 / HEADROOM - 1:.0%} rise before the SLO breaks. KEDA (Standard "
        f"mode) uses the target as it is; Knative's KPA aims at target x {KPA_TARGET_UTILIZATION:g} "
        "(target-utilization-percentage, default 70), so its targets are the 70% level divided by 0.7.",
        "",
        "## Every probe",
        "",
        "| protocol | batch | SLO ms | phase | offered/s | achieved/s | p50 ms | p99 ms | in flight | server CPU "
        "| client CPU | verdict |",
        "|" + "---|" * 12,
    ]
    for e in results["capacity"]:
        for p in e["search"]["probes"] + ([e["level_probe"]] if e.get("level_probe") else []):
            extra = p.get("extra") or {}
            verdict = "pass" if p["passed"] else (p["why"] or "fail")
            lines.append(
                f"| {e['protocol']} | {e['batch']} | {e['slo_p99_ms']:g} | {p['phase']} | {_n(p['rate'])} "
                f"| {_n(p['achieved'])} | {_n(p['p50_ms'], 2)} | {_n(p['p99_ms'], 2)} | {_n(p['in_flight'], 1)} "
                f"| {_n(extra.get('server_cpu_share'), 2)} | {_n(extra.get('client_cpu_share'), 2)} | {verdict} |"
            )
    lines.append("")
    return "\n".join(lines)
