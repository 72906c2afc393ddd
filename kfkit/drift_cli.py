"""``kfkit drift``: send shifted traffic to the live endpoint and watch the loop react; show the loop's state.

``kfkit drift simulate`` builds V2 requests from the dataset's rows, shifts some features by a number of
standard deviations, sends them to the predictor that ``kfkit run`` serves, and prints what follows as it
happens: windows tested, drift found (with the report), the trigger's decisions, the retrain run, the gate's
decision and the version that then serves. ``kfkit drift status`` shows the detector's and the trigger's
state. Both find the live processes through ``<work_dir>/drift/loop.json``, written by ``kfkit run``.

About 450 lines, past the usual 400: two subcommands that share the loop's state file, its URLs and the
printing of what happens, with the request building of ``simulate``; one front for a person.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError, ServingError

if TYPE_CHECKING:
    import httpx
    import numpy as np

    from kfkit.config import KfkitConfig

__all__ = ["add_parser", "run"]

_POLL_S = 1.0
_IDLE_S = 15.0
_SETTLE_S = 3.0  # once every full window of the traffic was tested: how long to wait for the trigger's answer
_SYNTHETIC_DRIFT_FEATURES = ("v02", "v04", "v06", "v08")  # the ones dataset.drift moves in synthetic_fraud


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit drift simulate|status`` on the top-level subcommand parser."""
    drift = sub.add_parser(
        "drift",
        help="send shifted traffic to the live endpoint and watch drift -> retrain -> gate; show the loop's state",
        description="Drift detection and retraining of a model `kfkit run` serves (docs/drift.md). The live "
        "predictor, detector and trigger are found through WORK_DIR/drift/loop.json (work_dir=... as for kfkit "
        "run), or given with --endpoint/--detector/--trigger.",
    )
    actions = drift.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint", metavar="URL", help="predictor base URL (default: the live kfkit run's)")
    common.add_argument("--model-name", help="model name on the endpoint (default: the live run's)")
    common.add_argument("--detector", metavar="URL", help="drift detector URL (default: the live run's)")
    common.add_argument("--trigger", metavar="URL", help="retrain trigger URL (default: the live run's)")
    common.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="config overrides (work_dir=..., dataset...)")

    simulate = actions.add_parser(
        "simulate",
        parents=[common],
        help="send shifted traffic and print windows, drift, retrain and the gate's decision as they happen",
        description="Send --rows rows of the dataset (sampled with replacement), with --features features shifted "
        "by --shift standard deviations, as V2 infer requests to the live endpoint; then wait for the detector's "
        "windows, the trigger's decisions, a retrain run, the gate's decision and the new version serving.",
    )
    simulate.add_argument("--shift", type=float, default=0.5, help="mean shift in standard deviations (default 0.5)")
    simulate.add_argument("--features", type=int, default=3, help="how many features to shift (default 3)")
    simulate.add_argument(
        "--feature-names",
        help="comma-separated features to shift (default: the dataset's "
        "drift features for synthetic_fraud, else the first --features)",
    )
    simulate.add_argument("--rows", type=int, default=1000, help="rows to send (default 1000)")
    simulate.add_argument("--batch", type=int, default=10, help="rows per request (default 10)")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the row sample (default 0)")
    simulate.add_argument("--wait", type=float, default=900.0, help="longest wait for the outcome, in s (default 900)")

    status = actions.add_parser("status", parents=[common], help="show the detector's and the trigger's state")
    status.add_argument("--json", action="store_true", help="print both status documents as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``kfkit drift <action>``; returns the exit status."""
    live = _Live.find(args)
    if args.action == "status":
        return _status(live, as_json=args.json)
    return _simulate(live, args)


class _Live:
    """Where the live predictor, detector and trigger are, and the config the run was composed from."""

    def __init__(self, cfg: KfkitConfig, loop: dict[str, Any] | None, args: argparse.Namespace) -> None:
        predictor = (loop or {}).get("predictor") or {}
        base = predictor.get("v2_url", "").split("/v2/", 1)[0]
        self.cfg = cfg
        self.endpoint = (args.endpoint or base).rstrip("/")
        self.model = args.model_name or predictor.get("model_name") or cfg.model.name
        self.detector = (args.detector or (loop or {}).get("detector") or "").rstrip("/")
        self.trigger = (args.trigger or (loop or {}).get("trigger") or "").rstrip("/")
        self.audit = (loop or {}).get("audit")

    @classmethod
    def find(cls, args: argparse.Namespace) -> _Live:
        from kfkit.config import compose
        from kfkit.retrain.local import loop_file, read_loop

        cfg = compose(args.overrides)
        loop = read_loop(cfg.work_dir)
        if loop is not None:
            cfg = compose([*loop.get("overrides", []), *args.overrides])  # the dataset the live model was trained on
        live = cls(cfg, loop, args)
        if not live.endpoint:
            raise ConfigError(
                f"no live kfkit run found ({loop_file(cfg.work_dir)} does not exist): start one with `kfkit run "
                "[OVERRIDES]` (not --no-serve, not --no-drift) and pass the same work_dir=..., or give --endpoint"
            )
        return live


def _client() -> httpx.Client:
    import httpx

    return httpx.Client(timeout=10.0, trust_env=False)  # a proxy from the environment must not see local calls


def _get(client: httpx.Client, url: str) -> Any:
    """GET a JSON document; None if the server is unreachable or answers an error."""
    import httpx

    if not url:
        return None
    try:
        response = client.get(url)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# ---- simulate ------------------------------------------------------------------------------------------------


def _simulate(live: _Live, args: argparse.Namespace) -> int:
    for key in ("rows", "batch", "features"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key}={getattr(args, key)} must be at least 1")
    with _client() as client:
        meta = _get(client, f"{live.endpoint}/v2/models/{live.model}")
        if meta is None:
            raise ServingError(
                f"the endpoint {live.endpoint}/v2/models/{live.model} does not answer; is kfkit run serving?"
            )
        names = list((meta.get("parameters") or {}).get("feature_names") or [])
        rows, shifted = _shifted_rows(live.cfg, names, args)
        serving = _version(meta)
        watch = _Watch(client, live, serving)
        print(
            f"kfkit drift simulate: {len(rows)} rows to {live.endpoint}/v2/models/{live.model}/infer (version "
            f"{serving}), {', '.join(shifted) or 'no feature'} shifted by {args.shift:g} sd, {args.batch} rows a "
            "request",
            flush=True,
        )
        sent = failed = 0
        next_poll = time.monotonic() + _POLL_S
        for start in range(0, len(rows), args.batch):
            chunk = rows[start : start + args.batch]
            if _infer(client, live, chunk):
                sent += len(chunk)
            else:
                failed += len(chunk)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + _POLL_S
                watch.poll()
        print(f"  sent {sent} rows{f' ({failed} failed)' if failed else ''}", flush=True)
        return watch.until_settled(args.wait, rows=sent)


def _shifted_rows(cfg: KfkitConfig, names: list[str], args: argparse.Namespace) -> tuple[np.ndarray, list[str]]:
    """``args.rows`` dataset rows (with replacement) in the model's column order, some features shifted."""
    import numpy as np

    from kfkit.data.sources import load

    frame = load(cfg.dataset)
    names = names or [c for c in frame.columns if c != cfg.dataset.label]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ConfigError(
            f"the model's features {missing[:5]} are not columns of dataset={cfg.dataset.kind}; pass "
            "the run's dataset overrides (dataset=..., dataset.path=...)"
        )
    if args.feature_names:
        chosen = [n.strip() for n in args.feature_names.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise ConfigError(f"--feature-names {unknown} are not features of the model ({', '.join(names[:5])}, ...)")
    else:
        preferred = (
            [n for n in _SYNTHETIC_DRIFT_FEATURES if n in names] if cfg.dataset.kind == "synthetic_fraud" else []
        )
        chosen = (preferred + [n for n in names if n not in preferred])[: args.features]
    values = frame[names].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(args.seed)
    rows = values[rng.integers(0, len(values), args.rows)]
    for name in chosen:
        column = names.index(name)
        rows[:, column] += args.shift * values[:, column].std()
    return rows.astype(np.float32), chosen


def _infer(client: httpx.Client, live: _Live, rows: np.ndarray) -> bool:
    """One V2 request; retried for a few seconds (the predictor restarts when a new version is promoted)."""
    import httpx

    body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]}
    for _ in range(20):
        try:
            response = client.post(f"{live.endpoint}/v2/models/{live.model}/infer", json=body)
            if response.status_code == 200:
                return True
            if response.status_code < 500:
                return False
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _version(meta: dict | None) -> str | None:
    versions = (meta or {}).get("versions") or []
    return str(versions[0]) if versions else None


class _Watch:
    """Polls the detector, the trigger and the predictor, and prints what is new."""

    def __init__(self, client: httpx.Client, live: _Live, serving: str | None) -> None:
        self.client, self.live, self.serving = client, live, serving
        self.windows_seen = {w["key"] for w in self._windows()}
        self.new_windows = 0
        detector = _get(client, f"{live.detector}/v1/drift/status") if live.detector else None
        self.window_size = int(((detector or {}).get("window") or {}).get("size") or 0)
        self.last_reason = ""
        status = _get(client, f"{live.trigger}/v1/retrain/status") if live.trigger else None
        self.decisions_seen = len((status or {}).get("decisions") or [])
        self.decisions_total = _decision_total(status)
        self.runs_seen = {(r["run"], r["state"]) for r in (status or {}).get("runs") or []}
        self.runs_started = {r["run"] for r in (status or {}).get("runs") or []}
        self.running = {r["run"] for r in (status or {}).get("runs") or [] if r["state"] == "running"}
        self.outcome: dict[str, Any] | None = None
        self.last_change = time.monotonic()

    def _windows(self) -> list[dict[str, Any]]:
        document = _get(self.client, f"{self.live.detector}/v1/drift/windows") if self.live.detector else None
        return _normalise_windows(document)

    def poll(self) -> None:
        changed = False
        for window in self._windows():
            if window["key"] in self.windows_seen:
                continue
            self.windows_seen.add(window["key"])
            self.new_windows += 1
            changed = True
            rows = f"{window['rows']} rows, " if window.get("rows") is not None else ""
            if window["is_drift"]:
                features = ", ".join(window["features"]) or "the model's output"
                report = f"; report {window['report']}" if window.get("report") else ""
                print(f"  window {window['index']}: {rows}DRIFT in {features}{report}", flush=True)
            else:
                print(f"  window {window['index']}: {rows}no drift", flush=True)
        status = _get(self.client, f"{self.live.trigger}/v1/retrain/status") if self.live.trigger else None
        if status is not None:
            changed |= self._runs(status)
            changed |= self._decisions(status)
        if self.outcome and self.outcome["state"] == "promoted" and self.serving != self.outcome.get("version"):
            serving = _version(_get(self.client, f"{self.live.endpoint}/v2/models/{self.live.model}"))
            if serving and serving != self.serving:
                self.serving = serving
                changed = True
                print(
                    f"  now serving version {serving} at {self.live.endpoint}/v2/models/{self.live.model}", flush=True
                )
        if changed:
            self.last_change = time.monotonic()

    def _decisions(self, status: dict) -> bool:
        decisions = status.get("decisions") or []
        total = _decision_total(status)
        new = decisions[-(total - self.decisions_total) :] if total > self.decisions_total else []
        self.decisions_total = total
        for decision in new:
            self.last_reason = str(decision.get("reason") or "")
            if decision.get("action") != "retrain":
                print(f"  trigger: {decision.get('reason')}", flush=True)
        return bool(new)

    def _runs(self, status: dict) -> bool:
        changed = False
        for record in status.get("runs") or []:
            key = (record["run"], record["state"])
            if key in self.runs_seen:
                continue
            self.runs_seen.add(key)
            changed = True
            if record["run"] not in self.runs_started:
                self.runs_started.add(record["run"])
                where = record.get("log") or ""
                print(
                    f"  retrain {record['run']} started ({record.get('mode')}): {record['reason']}"
                    f"{f'; log {where}' if where else ''}",
                    flush=True,
                )
            if record["state"] == "running":
                self.running.add(record["run"])
            else:
                self.running.discard(record["run"])
                self.outcome = record
                print(f"  {_outcome(record)}", flush=True)
        return changed

    def until_settled(self, wait_s: float, *, rows: int) -> int:
        """Poll until the outcome is in (and a promoted version serves), or the traffic has had its answer.

        Without a retrain, it stops once every full window of the ``rows`` sent was tested and nothing new came
        for a few seconds (or, if the detector's window size is unknown, nothing new for a while).
        """
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            self.poll()
            outcome = self.outcome
            if outcome is not None and (outcome["state"] != "promoted" or self.serving == outcome.get("version")):
                return 0
            idle = time.monotonic() - self.last_change
            tested = self.window_size > 0 and self.new_windows >= rows // self.window_size
            if not self.running and outcome is None and (idle > _IDLE_S or (tested and idle > _SETTLE_S)):
                why = f": {self.last_reason}" if self.last_reason else " (no window drifted)"
                print(f"  no retrain started{why}", flush=True)
                return 0
            time.sleep(_POLL_S)
        print(f"  still waiting after {wait_s:g} s; `kfkit drift status` shows where the loop is", flush=True)
        return 1


def _decision_total(status: dict | None) -> int:
    """Decisions the trigger made, duplicates left out (the status keeps only the latest ones)."""
    counts = (status or {}).get("decisions_by_action") or {}
    return sum(v for k, v in counts.items() if k != "duplicate" and isinstance(v, int))


def _outcome(record: dict) -> str:
    state = record["state"]
    before = record.get("production_before")
    if state == "promoted":
        return f"gate: {record.get('gate')} -> version {record.get('version')} promoted (was {before})"
    if state == "published":
        return f"gate: {record.get('gate')} -> version {record.get('version')} published; no alias moved"
    if state == "gate_failed":
        return f"gate: rejected: {record.get('gate')}; production stays at version {record.get('production_after')}"
    return f"retrain {record['run']} {state}: {record.get('gate')}"


def _normalise_windows(document: Any) -> list[dict[str, Any]]:
    """The detector's windows as ``{key, index, is_drift, rows, features, report}`` (flat or alibi-detect shape)."""
    if isinstance(document, dict):
        document = document.get("windows", document.get("results", []))
    windows = []
    for item in document if isinstance(document, list) else []:
        if not isinstance(item, dict):
            continue
        facts = item.get("kfkit") if isinstance(item.get("kfkit"), dict) else item
        data = item.get("data") if isinstance(item.get("data"), dict) else item
        index = facts.get("window", facts.get("index"))
        windows.append(
            {
                "key": (str(index), str(facts.get("start", "")), str(facts.get("version", ""))),
                "index": index,
                "is_drift": bool(data.get("is_drift")),
                "rows": facts.get("rows"),
                "features": list(facts.get("drifted_features") or []),
                "report": facts.get("report"),
            }
        )
    return windows


# ---- status --------------------------------------------------------------------------------------------------


def _status(live: _Live, *, as_json: bool) -> int:
    with _client() as client:
        meta = _get(client, f"{live.endpoint}/v2/models/{live.model}")
        detector = _get(client, f"{live.detector}/v1/drift/status") if live.detector else None
        trigger = _get(client, f"{live.trigger}/v1/retrain/status") if live.trigger else None
    if as_json:
        print(json.dumps({"predictor": meta, "detector": detector, "trigger": trigger}, indent=2))
        return 0
    print(
        f"predictor {live.endpoint}/v2/models/{live.model}: "
        f"{f'version {_version(meta)}' if meta else 'not answering'}"
    )
    if not live.detector:
        print("detector  none (kfkit run --no-drift, or no .venv-drift)")
    else:
        _detector_lines(live.detector, detector)
    if not live.trigger:
        print("trigger   none")
        return 0
    if trigger is None:
        print(f"trigger   {live.trigger}: not answering")
        return 1
    policy = trigger["policy"]
    cooling = f", cooling down until {policy['cooldown_until']}" if policy.get("cooldown_until") else ""
    print(
        f"trigger   {live.trigger}: {trigger['mode']}, retrain on drift in {policy['min_drifted']} of the last "
        f"{policy['window_span']} windows, cooldown {policy['cooldown_s']:g} s{cooling}"
    )
    print(f"  events               {_short(trigger['events'])}")
    print(f"  decisions            {_short({k: v for k, v in trigger['decisions_by_action'].items() if v})}")
    for name, stream in trigger["streams"].items():
        latch = ", burst answered" if stream["latched"] else ""
        print(f"  stream {name}: latest window {stream['latest_window']}, drifted {stream['drifted_windows']}{latch}")
    for record in trigger["runs"][-5:]:
        print(
            f"  run {record['run']} ({record['started']}): {record['state']}: {record.get('gate') or record['reason']}"
        )
    print(f"  production           version {trigger.get('production')}")
    print(f"  audit                {trigger['audit']}")
    return 0


def _detector_lines(url: str, status: dict | None) -> None:
    if status is None:
        print(f"detector  {url}: not answering")
        return
    ready = "ready" if status.get("ready", True) else "not ready"
    print(f"detector  {url}: {ready}, {status.get('detector', '?')} on {status.get('model')}/{status.get('version')}")
    window, windows = status.get("window") or {}, status.get("windows") or {}
    if window:
        print(f"  open window          {window.get('index')}: {window.get('fill')} of {window.get('size')} rows")
    if windows:
        print(f"  windows              {_short(windows)}")
    if status.get("events"):
        print(f"  payload events       {_short(status['events'])}")
    if last := status.get("last_window"):
        features = ", ".join(last.get("drifted_features") or []) or "the output"
        drift = f"drift in {features}" if last.get("is_drift") else "no drift"
        report = f" ({last['report']})" if last.get("report") else ""
        print(f"  last window          {last.get('window')}: {last.get('rows')} rows, {drift}{report}")
    for key in ("backlog", "sink", "reports"):
        if key in status:
            print(f"  {key:<20} {_short(status[key])}")


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 100 else text[:97] + "..."
