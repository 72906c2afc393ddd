"""One whole serving comparison: publish the model, start the servers, check them, measure, write the results."""

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

from kfkit.errors import ServingError

from . import measure
from .fixtures import BenchModel, publish_model, publish_tf_twin
from .measure import progress
from .payloads import build_payloads
from .report import loadavg, machine_info, ratios, render_markdown
from .servers import Server, kfkit_server, mlserver_python, mlserver_server, on_cpu, start_servers
from .settings import MLSERVER_VARIANTS, SWEEP_CASES, BenchSettings
from .wrk import wrk_available

__all__ = ["run_bench"]

_BATCHING_ONLY = ("-nobatch", "-tf")  # servers that only run in the batching comparison
_KEYS = ("server", "protocol", "batch", "concurrency")


def _notes(settings: BenchSettings) -> tuple[BenchSettings, list[str], list[str], list[float]]:
    """What this machine allows: the settings to use, notes for the report, the servers to run, the load."""
    cpus = os.cpu_count() or 1
    notes: list[str] = []
    if cpus < 2 or max(settings.server_cpu, settings.client_cpu) >= cpus:
        notes.append(f"only {cpus} CPU(s): server and load generator are not pinned apart")
        settings = replace(settings, server_cpu=None, client_cpu=None)  # type: ignore[arg-type]
    if not (settings.use_wrk and wrk_available()):
        notes.append("wrk not used: closed-loop REST load came from the asyncio client (apt-get install wrk)")
    servers_wanted = list(settings.servers)
    if any(s.startswith("mlserver") for s in servers_wanted) and mlserver_python(settings) is None:
        notes.append(
            f"MLServer skipped: {settings.mlserver_venv} does not exist (build it with "
            "`make .venv-mlserver/.installed`, or python3.11 -m venv .venv-mlserver && "
            ".venv-mlserver/bin/pip install -r requirements/mlserver.in -c requirements/mlserver.lock)"
        )
        servers_wanted = [s for s in servers_wanted if not s.startswith("mlserver")]
    load = loadavg()
    if load and load[0] > 0.5:
        notes.append(
            f"the machine was busy before the run (load average {load[0]:.2f}): figures are preliminary; the "
            "server CPU column shows how much of its core each server got, and µs/req is the least disturbed figure"
        )
    return settings, notes, servers_wanted, load


def _servers(
    names: list[str], model: BenchModel, settings: BenchSettings, out_dir: Path, work: Path
) -> tuple[dict[str, Server], dict[str, BenchModel]]:
    """The servers to run (not started), and the models of those that serve another than ``model``."""
    logs = out_dir / "logs"
    servers: dict[str, Server] = {}
    models: dict[str, BenchModel] = {}
    for name in names:
        if name == "kfkit":
            servers[name] = kfkit_server(name, model, settings, logs)
        elif name == "kfkit-aio":  # the gRPC fronts on grpc.aio instead of the thread-pool server
            servers[name] = kfkit_server(name, model, settings, logs, grpc_stack="aio")
        elif name in MLSERVER_VARIANTS:
            tuned, batching = name != "mlserver-default", name.endswith("batching")
            servers[name] = mlserver_server(name, model, settings, logs, work, tuned=tuned, batching=batching)
        else:
            known = ", ".join(("kfkit", "kfkit-aio", *MLSERVER_VARIANTS))
            raise ServingError(f"unknown server {name!r}; choose from {known}")
    if settings.batching and "kfkit" in servers:
        servers["kfkit-nobatch"] = kfkit_server("kfkit-nobatch", model, settings, logs, max_batch_size=1)
        if "tensorflow" in settings.batching_frameworks:
            progress("exporting the same MLP as a TensorFlow SavedModel for the batching comparison")
            models["kfkit-tf"] = models["kfkit-tf-nobatch"] = tf_model = publish_tf_twin(work, model)
            servers["kfkit-tf"] = kfkit_server("kfkit-tf", tf_model, settings, logs)
            servers["kfkit-tf-nobatch"] = kfkit_server("kfkit-tf-nobatch", tf_model, settings, logs, max_batch_size=1)
    return servers, models


def run_bench(settings: BenchSettings, out_dir: Path, *, command: str | None = None) -> dict[str, Any]:
    """Run the whole comparison and write ``results.json`` and ``results.md`` into ``out_dir``.

    Args:
        settings: What to measure (see :data:`scripts.bench.settings.PRESETS`).
        out_dir: Folder for the results and the servers' logs.
        command: The command line to record with the results.

    Returns:
        The results (what ``results.json`` holds).

    Raises:
        ServingError: a server did not start, or answered different probabilities than the model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings, notes, servers_wanted, load = _notes(settings)
    for note in notes:
        progress("NOTE: " + note)
    results: dict[str, Any] = {
        "command": command or shlex.join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": asdict(settings),
        "machine": machine_info(),
        "loadavg_before": load,
        "notes": notes,
    }
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-serve-") as tmp, on_cpu(settings.client_cpu):
        work = Path(tmp)
        model = publish_model(work)
        payloads = build_payloads(model.rows, settings.batches)
        results["payload_bytes"] = payloads.sizes()
        try:
            if settings.forward:
                progress("timing the in-process forward pass on the server core")
                seconds = 3.0 if settings.mode != "quick" else 0.6
                results["forward_us"] = measure.measure_forward(model, settings, settings.batches, seconds)
            servers, models = _servers(servers_wanted, model, settings, out_dir, work)
            start_servers(list(servers.values()), settings.server_cpu, progress)  # all at once: they load in parallel
            results["servers"] = {
                s.name: {"command": s.command_line(), "description": s.description, "cpu": settings.server_cpu}
                for s in servers.values()
            }
            cases = [(s, p) for s, p in SWEEP_CASES if s in servers and p in settings.protocols]
            cases += [
                (variant, p)
                for variant in ("mlserver-batching", "mlserver-default")
                for p in ("v2-rest", "v2-grpc")
                if variant in servers and p in settings.protocols
            ]
            batching_only = [name for name in servers if name.startswith("kfkit-") and name.endswith(_BATCHING_ONLY)]
            for name, protocol in cases + [
                (name, p) for name in batching_only for p in ("v2-rest", "v2-grpc") if p in settings.protocols
            ]:
                measure.check_answers(servers[name], protocol, models.get(name, model))
                measure.load_once(
                    servers[name],
                    protocol,
                    payloads,
                    settings.batches[0],
                    concurrency=8,
                    duration_s=settings.warmup_s,
                    settings=replace(settings, use_wrk=False),
                )  # warm-up
            progress(f"answers match the in-process model (1e-6) on {len(cases)} server/protocol pairs; sweeping")
            results["sweep_runs"] = runs = measure.sweep(servers, cases, payloads, settings)
            results["sweep"] = sweep = measure.median_rows(runs, _KEYS)
            results["peaks"] = peaks = measure.find_peaks(sweep)
            if settings.open_loop:
                results["open_loop"] = measure.open_loop_runs(servers, cases, payloads, peaks, settings)
            if "kfkit-nobatch" in servers:
                results["batching"] = measure.batching_runs(servers, payloads, settings)
        finally:
            for server in servers.values():
                server.stop()
    results["loadavg_after"] = loadavg()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["summary"] = ratios(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(render_markdown(results))
    return results
