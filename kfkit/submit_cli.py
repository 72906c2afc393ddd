"""``kfkit submit``: compile the pipeline, upload it as a new version, start a run (or a recurring run) on Kubeflow."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Compile the pipeline from the composed config (the same config `kfkit run` uses), upload it as a new version
of the pipeline kubeflow.pipeline_name, and start a run of that version in the experiment; print the run's URL.
With kubeflow.recurring.cron (or interval_s) set, create that recurring run instead (replacing the one of the
same name). Auth: in a pod, the projected service-account token (audience pipelines.kubeflow.org); from
outside, --token-file FILE holding a Kubernetes token (kubectl create token ... --audience=pipelines.kubeflow.org).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit submit`` on the top-level subcommand parser."""
    parser = sub.add_parser(
        "submit",
        help="compile the pipeline and submit a run to a Kubeflow Pipelines host",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="KFP API URL (default kubeflow.host), e.g. http://ml-pipeline.kubeflow:8888")
    parser.add_argument("--namespace", help="profile namespace of a multi-user Kubeflow (default kubeflow.namespace)")
    parser.add_argument("--experiment", help="experiment to file the run under (default kubeflow.experiment)")
    parser.add_argument("--token-file", help="file holding a Kubernetes token, for use from outside the cluster")
    parser.add_argument("--watch", action="store_true", help="follow the run to its end; exit 1 unless it SUCCEEDED")
    parser.add_argument("--version-name", help="name of the uploaded pipeline version (default MODEL-UTCTIME)")
    parser.add_argument("-o", "--output", help="also keep the compiled YAML here")
    parser.add_argument(
        "--allow-local-paths",
        action="store_true",
        help="submit with a file:// registry (only where every pod mounts it); without it, use registry=s3",
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="config overrides, KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    """Run ``kfkit submit``; returns the exit status.

    Raises:
        ConfigError: a bad override, no host, a local registry, a missing token, no namespace on a multi-user KFP.
        PipelineError: the API refused a call or could not be reached; with ``--watch``, the run did not succeed.
    """
    from kfkit.config import compose, to_dict
    from kfkit.errors import ConfigError
    from kfkit.kubeflow import client as kfp_client
    from kfkit.kubeflow import runs
    from kfkit.pipelines.compile import check_cluster_paths, compile_pipeline, is_local_registry
    from kfkit.pipelines.parameters import pipeline_arguments

    cfg = compose(args.overrides)
    check_cluster_paths(cfg, allow_local_paths=args.allow_local_paths)
    if is_local_registry(cfg):  # allowed: every pod mounts it, at this machine's absolute path
        from kfkit.registry import root_path

        registry = dataclasses.replace(cfg.registry, uri=root_path(cfg.registry.uri).as_uri())
        cfg = dataclasses.replace(cfg, registry=registry)
    kf = cfg.kubeflow
    recurring = kf.recurring.cron is not None or kf.recurring.interval_s is not None
    if recurring and args.watch:
        raise ConfigError("--watch follows one run, but kubeflow.recurring schedules many: drop one of them")
    target = kfp_client.KfpTarget.from_config(cfg, host=args.host, namespace=args.namespace)
    if args.token_file:
        target = dataclasses.replace(target, token_file=args.token_file, auth="token")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    commit = _git_commit()
    version_name = args.version_name or f"{cfg.model.name}-{stamp}" + (f"-{commit[:12]}" if commit else "")
    with tempfile.TemporaryDirectory(prefix="kfkit-submit-") as tmp:
        package = compile_pipeline(args.output or Path(tmp) / "pipeline.yaml", to_dict(cfg))
        with _api_errors(target.host):
            client = kfp_client.connect(target)
            runs.require_namespace(client, target.namespace)
            version = runs.upload_version(
                client, package, pipeline_name=kf.pipeline_name, version_name=version_name,
                namespace=None if kf.shared_pipeline else target.namespace,
                description=f"git commit {commit}" if commit else "",
            )  # fmt: skip
            print(f"kfkit submit: pipeline {kf.pipeline_name} version {version.name} ({version.version_id})")
            experiment = runs.experiment_id(client, args.experiment or kf.experiment, target.namespace)
            if recurring:
                name = kf.recurring.name or f"{kf.pipeline_name}-{cfg.model.name}"
                recurring_id, replaced = runs.schedule(
                    client, version, experiment=experiment, name=name, namespace=target.namespace,
                    arguments=pipeline_arguments(cfg), recurring=kf.recurring, service_account=kf.service_account,
                )  # fmt: skip
                when = f"cron '{kf.recurring.cron}'" if kf.recurring.cron else f"every {kf.recurring.interval_s} s"
                was = f", replacing {', '.join(replaced)}" if replaced else ""
                print(f"kfkit submit: recurring run {name} ({recurring_id}) {when}{was}")
                return 0
            run_id = runs.start_run(
                client, version, experiment=experiment, run_name=f"{cfg.model.name}-{stamp}",
                arguments=pipeline_arguments(cfg), service_account=kf.service_account,
            )  # fmt: skip
            print(f"kfkit submit: run {run_id}: {target.run_url(run_id)}", flush=True)
            if args.watch:
                runs.watch(
                    client, run_id, poll_s=kf.poll_s, timeout_s=kf.watch_timeout_s,
                    report=lambda state: print(f"kfkit submit: run {run_id} {state}", flush=True),
                )  # fmt: skip
    if args.output:
        print(f"kfkit submit: wrote {args.output}")
    return 0


@contextlib.contextmanager
def _api_errors(host: str) -> Iterator[None]:
    """Turn kfp's HTTP and connection errors into a PipelineError naming the host and what to check."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    from kfkit.errors import PipelineError

    try:
        yield
    except ApiException as e:
        hint = " (check the token, and that it may use the namespace)" if e.status in (401, 403) else ""
        body = e.body.strip() if isinstance(e.body, str) else ""
        raise PipelineError(f"{host} answered {e.status} {e.reason}{hint}: {body[:300]}") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise PipelineError(f"cannot reach Kubeflow Pipelines at {host}: {e}") from e
    except ValueError as e:  # kfp's own checks of what it is given or answered
        raise PipelineError(f"{host}: {e}") from e


def _git_commit() -> str:
    """The commit the pipeline is compiled from: $KFKIT_GIT_COMMIT (baked into images), else this checkout's HEAD."""
    if commit := os.environ.get("KFKIT_GIT_COMMIT", "").strip():
        return commit
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
