"""``kfkit deploy`` and ``kfkit rollout``: a registry version onto KServe, and canary moves on it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kfkit.errors import ConfigError

__all__ = ["add_parsers", "run_deploy", "run_rollout", "ROLLOUT_ACTIONS"]

ROLLOUT_ACTIONS = ("start", "status", "step", "promote", "rollback", "auto")
_OVERRIDES = (
    "Hydra overrides, e.g. deploy=kserve-gpu deploy.namespace=team registry=s3 registry.uri=s3://models/team "
    "(default deploy group: kserve)"
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit deploy`` and ``kfkit rollout`` on the top-level subcommand parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", metavar="NAME", help="model (and InferenceService) name (default: model.name)")
    common.add_argument("--json", action="store_true", help="print JSON")
    deploy = sub.add_parser(
        "deploy",
        parents=[common],
        help="deploy a registry version to KServe and wait until it is Ready",
        description="Build the ServingRuntime and InferenceService for a registry version (lineage labels, "
        "autoscaling, GPUs, logger, transformer from the deploy group), apply them with server-side apply (field "
        "manager kfkit) and wait for Ready of the applied generation; a failure names its cause (image pull, "
        "storage initializer, quota, readiness ...). The cluster is the pod's own (in-cluster) or the "
        "kubeconfig's current context. Once Ready, the production alias is moved to the version.",
        epilog="exit status: 0 Ready, 1 failed or timed out, 2 bad input",
    )
    what = deploy.add_mutually_exclusive_group()
    what.add_argument("--version", metavar="REF", help="version number or alias (default: registry.promote_to)")
    what.add_argument("--model-uri", metavar="URI", help="a version URI instead, s3://bucket/prefix/NAME/VERSION/")
    deploy.add_argument("--dry-run", action="store_true", help="print exactly what would be applied, as YAML")
    deploy.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES)

    rollout = sub.add_parser(
        "rollout",
        parents=[common],
        help="canary rollout on KServe: start, status, promote, rollback, auto",
        description="Canary moves on a deployed InferenceService. start: serve --version as a canary with "
        "--percent of the traffic; status: readiness, traffic split, aliases, each version's error rate and p99 "
        "(Prometheus at deploy.prometheus_url); step: give the canary --percent; promote: canary to 100%% and "
        "the production alias to it; rollback: all "
        "traffic back to production (Knative: canaryTrafficPercent 0, previous revision pinned); auto: step "
        "through deploy.canary_steps while the error rate and p99 stay within deploy.max_error_rate and "
        "deploy.slo_p99_ms, roll back otherwise. Each move is recorded in the registry's audit log.",
        epilog="exit status: 0 done (auto: promoted), 1 failed (auto: rolled back), 2 bad input",
    )
    rollout.add_argument("action", choices=ROLLOUT_ACTIONS, help="the move")
    rollout.add_argument("--version", metavar="REF", help="start, auto: the version (number or alias) to canary")
    rollout.add_argument("--percent", type=int, help="start: the canary's share (default: the first step); "
                         "step: its new share")  # fmt: skip
    rollout.add_argument("--steps", help="auto: percentages, e.g. 10,50,100 (default deploy.canary_steps)")
    rollout.add_argument("--step-seconds", type=float, help="auto: seconds watched per step (deploy.canary_step_s)")
    rollout.add_argument("--reason", default="", help="promote, rollback: why, for the audit log")
    rollout.add_argument("--no-metrics", action="store_true", help="status: skip the Prometheus queries")
    rollout.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES)


def _config(overrides: list[str]):
    from kfkit.cli import _compose  # the CLI's one way to compose (absolute paths, S3 environment)

    picked = any(o.lstrip("+~").startswith("deploy=") for o in overrides)
    cfg = _compose(overrides if picked else ["deploy=kserve", *overrides])
    if cfg.deploy.target != "kserve":
        raise ConfigError(
            f"deploy.target={cfg.deploy.target!r}: `kfkit deploy` and `kfkit rollout` work on a KServe cluster; "
            "pick a cluster deploy group (deploy=kserve, kserve-dev, kserve-gpu or kserve-standard)"
        )
    return cfg


def run_deploy(args: argparse.Namespace) -> int:
    """``kfkit deploy``."""
    from kfkit.deploy.inference_service import to_yaml
    from kfkit.deploy.kserve import deploy_version

    cfg = _config(args.overrides)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    result = deploy_version(
        cfg, name=args.model, ref=args.version, model_uri=args.model_uri, dry_run=args.dry_run, log=log
    )
    if args.dry_run:
        print(json.dumps(result.applied, indent=2) if args.json else to_yaml(result.applied).rstrip("\n"))
        return 0
    if args.json:
        print(json.dumps(result.endpoint(), indent=2))
    else:
        endpoint = result.endpoint()
        print(f"kfkit deploy: {result.name} version {result.version} Ready in {result.namespace} "
              f"(generation {result.generation})\n  url       {result.url or '(none reported)'}\n"
              f"  in-cluster {endpoint['v2_url']}")  # fmt: skip
    return 0


def run_rollout(args: argparse.Namespace) -> int:
    """``kfkit rollout ACTION``."""
    from kfkit.deploy.rollout import Rollout

    cfg = _config(args.overrides)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    rollout = Rollout(cfg, name=args.model, log=log)
    if args.action in ("start", "auto") and not args.version:
        raise ConfigError(f"kfkit rollout {args.action} needs --version N (a version number or alias)")
    code = 0
    if args.action == "start":
        result: Any = rollout.start(args.version, args.percent)
    elif args.action == "status":
        result = rollout.status(with_metrics=not args.no_metrics)
    elif args.action == "step":
        if args.percent is None:
            raise ConfigError("kfkit rollout step needs --percent P (the canary's new share, 1-99)")
        result = rollout.set_traffic(args.percent)
    elif args.action == "promote":
        result = rollout.promote(args.reason)
    elif args.action == "rollback":
        result = rollout.rollback(args.reason)
    else:
        steps = [int(s) for s in args.steps.split(",")] if args.steps else None
        result = rollout.auto(args.version, steps=steps, step_s=args.step_seconds)
        code = 0 if result.outcome == "promoted" else 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print(result)
    return code


def _print(result: Any) -> None:
    data = result.to_dict()
    if "outcome" in data:
        print(f"kfkit rollout auto: version {data['version']} {data['outcome'].replace('_', ' ')}"
              + (f": {data['reason']}" if data["reason"] else ""))  # fmt: skip
        for step in data["steps"]:
            print(f"  {step['percent']:>3}%  error rate {step['error_rate']}  p99 ms {step['p99_ms']}")
        data = data["status"] or {}
    if not data:
        return
    canary = (f"version {data['canary_version']} at {data['canary_percent']}%" if data["canary_version"]
              else "none")  # fmt: skip
    print(f"{data['namespace']}/{data['name']} ({data['mode']}): {'Ready' if data['ready'] else 'not Ready'}, "
          f"generation {data['generation']} (observed {data['observed_generation']})\n"
          f"  stable    version {data['stable_version']}\n  canary    {canary}\n"
          f"  aliases   {', '.join(f'{k}={v}' for k, v in data['aliases'].items())}")  # fmt: skip
    for entry in data["traffic"]:
        print(f"  traffic   {json.dumps(entry, sort_keys=True)}")
    for version, health in data["metrics"].items():
        print(f"  metrics   version {version}: {json.dumps(health, sort_keys=True)}")
