"""What the benchmarks report: the machine, the serving ratios, and the tables (docs/benchmarks.md's style)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .settings import MLSERVER_VARIANTS
from .wrk import wrk_available

__all__ = ["machine_info", "machine_line", "loadavg", "ratios", "render_markdown", "train_table"]

_REPO = Path(__file__).resolve().parents[2]


def _text(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model(lscpu: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")


def machine_info() -> dict[str, Any]:
    """The serving bench's machine record: CPU, memory, kernel, versions, load generator, git."""
    import torch

    lscpu = _text(["lscpu"])
    return {
        "cpu": _cpu_model(lscpu) or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wrk": _text(["wrk", "--version"]).split(" Copyright")[0] if wrk_available() else None,
        "git": _text(["git", "-C", str(_REPO), "describe", "--always", "--dirty"]),
        "lscpu": lscpu,
    }


def machine_line() -> str:
    """The training bench's one-line machine description, with the load average at start."""
    import torch

    model = _cpu_model(_text(["lscpu"])) or platform.processor() or platform.machine()
    return (
        f"{model}, {os.cpu_count()} logical cores, python {platform.python_version()}, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages ([] where /proc has none)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios the acceptance criteria ask for, from the medians."""
    peaks = results.get("peaks", {})
    summary: dict[str, Any] = {}

    def best_mlserver(protocol: str, batch: str) -> tuple[str, dict] | tuple[None, None]:
        """MLServer's best setting for this cell (tuned, adaptive batching or defaults): the peer's best."""
        found = [(s, peaks[f"{s}/{protocol}/{batch}"]) for s in MLSERVER_VARIANTS if f"{s}/{protocol}/{batch}" in peaks]
        return max(found, key=lambda item: item[1]["req_per_s"]) if found else (None, None)

    for protocol in ("v2-rest", "v2-grpc"):
        kfkit, (name, ml) = peaks.get(f"kfkit/{protocol}/b1"), best_mlserver(protocol, "b1")
        summary[f"b1_{protocol}_peak_vs_mlserver"] = _ratio(kfkit and kfkit["req_per_s"], ml and ml["req_per_s"])
        summary[f"b1_{protocol}_mlserver_best"] = name
        kfkit64, (name64, ml64) = peaks.get(f"kfkit/{protocol}/b64"), best_mlserver(protocol, "b64")
        summary[f"b64_{protocol}_rows_vs_mlserver"] = _ratio(
            kfkit64 and kfkit64["rows_per_s"], ml64 and ml64["rows_per_s"]
        )
        summary[f"b64_{protocol}_mlserver_best"] = name64
    # CPU per request is the figure a busy machine distorts least: it does not depend on how much of the
    # core the server got, only on what each request cost it. 1e6 / µs is the req/s one whole core allows.
    sweep = {(r["server"], r["protocol"], r["batch"], r["concurrency"]): r for r in results.get("sweep", [])}
    for key, peak in peaks.items():
        server, protocol, batch = key.split("/")
        row = sweep.get((server, protocol, int(batch[1:]), peak["concurrency"]))
        if server == "kfkit" and row and row["server_cpu_us_per_req"]:
            ml_name, ml = best_mlserver(protocol, batch)
            ml_row = ml and sweep.get((ml_name, protocol, int(batch[1:]), ml["concurrency"]))
            summary[f"{batch}_{protocol}_server_us_per_req"] = round(row["server_cpu_us_per_req"], 1)
            if ml_row and ml_row["server_cpu_us_per_req"]:
                summary[f"{batch}_{protocol}_mlserver_us_per_req"] = round(ml_row["server_cpu_us_per_req"], 1)
                summary[f"{batch}_{protocol}_cpu_per_req_mlserver_over_kfkit"] = _ratio(
                    ml_row["server_cpu_us_per_req"], row["server_cpu_us_per_req"]
                )
    for row in results.get("open_loop", []):
        summary[f"open_loop_p99_ms/{row['server']}/{row['protocol']}"] = round(row["p99_ms"], 2)
    batching = {(r["server"], r["protocol"]): r for r in results.get("batching", [])}
    for server, model in (("kfkit", ""), ("kfkit-tf", "tensorflow/")):
        for protocol in ("v2-rest", "v2-grpc"):
            on, off = batching.get((server, protocol)), batching.get((f"{server}-nobatch", protocol))
            if on and off:
                summary[f"batching_speedup/{model}{protocol}"] = _ratio(on["req_per_s"], off["req_per_s"])
                summary[f"batching_p99_ms/{model}{protocol}"] = round(on["p99_ms"], 2)
    forward = results.get("forward_us", {})
    if "forward_b1" in forward:
        summary["forward_us_b1"] = round(forward["forward_b1"], 1)
        summary["forward_limit_req_per_s_b1"] = round(1e6 / forward["forward_b1"])
    return summary


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_markdown(results: dict[str, Any]) -> str:
    """The results as markdown: machine, command, one table per measurement, the ratios."""
    machine = results["machine"]
    lines = [
        f"# Serving benchmark ({results['settings']['mode']}, {results['started']})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"torch {machine['torch']}; load generator: {machine.get('wrk') or 'asyncio client'} (REST), grpc.aio (gRPC); "
        f"git {machine['git']}. Load average before {results['loadavg_before']}, after {results.get('loadavg_after')}.",
        "",
    ]
    lines += [f"- NOTE: {note}" for note in results.get("notes", [])]
    if results.get("notes"):
        lines.append("")
    forward = results.get("forward_us")
    if forward:
        shown = ", ".join(
            f"{key.replace('_b', ' batch ')} {value:,.1f} µs ({1e6 / value:,.0f}/s)"
            for key, value in forward.items()
            if not key.endswith("_wall")
        )
        lines += [f"In-process on the server core, one thread, CPU time per call (the limit): {shown}", ""]
    header = (
        "| server | protocol | batch | conc. | req/s | rows/s | p50 ms | p95 ms | p99 ms | errors "
        "| server µs/req | server CPU | client CPU | runs (req/s) |"
    )
    rule = "|" + "---|" * 14

    def table(rows: list[dict]) -> list[str]:
        out = [header, rule]
        for r in rows:
            out.append(
                f"| {r['server']} | {r['protocol']} | {r['batch']} | {r['concurrency']} | {_fmt(r['req_per_s'])} "
                f"| {_fmt(r['rows_per_s'])} | {_fmt(r['p50_ms'], 2)} | {_fmt(r['p95_ms'], 2)} | {_fmt(r['p99_ms'], 2)} "
                f"| {r['errors']} | {_fmt(r['server_cpu_us_per_req'])} | {_fmt(r['server_cpu_share'], 2)} "
                f"| {_fmt(r['client_cpu_share'], 2)} | {', '.join(f'{x:,.0f}' for x in r['runs'])} |"
            )
        return out

    if results.get("sweep"):
        lines += ["## Concurrency sweep (closed loop, medians)", "", *table(results["sweep"]), ""]
    if results.get("open_loop"):
        fraction = results["settings"]["open_loop_fraction"]
        lines += [f"## Open loop at {fraction:.0%} of each server's batch-1 peak", "", *table(results["open_loop"]), ""]
    if results.get("batching"):
        lines += [
            "## Adaptive batching on (kfkit) vs off (kfkit-nobatch, max batch size 1); "
            "kfkit-tf: the same MLP as a TensorFlow SavedModel",
            "",
            *table(results["batching"]),
            "",
        ]
    if results.get("summary"):
        lines += ["## Ratios", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value, 2)} |" for key, value in results["summary"].items()]
        lines.append("")
    lines += [
        "server µs/req: server process CPU (utime+stime from /proc) over successful requests; server/client CPU: "
        "CPU seconds per wall second (near 1.00 means that side was saturated).",
        "",
    ]
    return "\n".join(lines)


def train_table(medians: dict[int, float], rates: dict[int, list[float]], quality: dict[int, dict[str, float]]) -> str:
    """The training bench's markdown table: per process count, median samples/s, scaling, runs, test quality."""
    first = medians[next(iter(medians))]
    lines = [
        "| processes | samples/s (median) | per process | vs 1 process | runs | test PR-AUC | test ROC-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, rate in medians.items():
        runs = " / ".join(f"{r:,.0f}" for r in rates[n])
        lines.append(
            f"| {n} | {rate:,.0f} | {rate / n:,.0f} | {rate / first:.2f}x | {runs} | "
            f"{quality[n]['pr_auc']:.4f} | {quality[n]['roc_auc']:.4f} |"
        )
    return "\n".join(lines)
