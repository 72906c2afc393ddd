"""Upload a compiled pipeline as a version of one named pipeline, start a run or a recurring run of it, follow a run.

Every call names the namespace: in multi-user mode kfp's list of recurring runs (and pipelines) does not
use the client's namespace, so relying on it would look in the wrong place (or nowhere).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfkit.errors import ConfigError, PipelineError

__all__ = [
    "PipelineVersion",
    "require_namespace",
    "upload_version",
    "experiment_id",
    "start_run",
    "schedule",
    "watch",
    "failed_tasks",
    "FINAL_STATES",
]

FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
"""KFP v2beta1 run states after which nothing changes."""


@dataclass(frozen=True)
class PipelineVersion:
    """An uploaded pipeline version."""

    pipeline_id: str
    version_id: str
    name: str
    """The version's display name."""
    created_pipeline: bool
    """True when this upload created the pipeline itself."""


def _quiet() -> contextlib.AbstractContextManager:
    """Send kfp's prints ("Run details: <link>" and such) to stderr: stdout is for kfkit's own lines."""
    return contextlib.redirect_stdout(sys.stderr)


def _by_name(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def require_namespace(client: Any, namespace: str | None) -> None:
    """Refuse to go on without a namespace when the KFP API is multi-user.

    Raises:
        ConfigError: multi-user KFP and no namespace.
    """
    if namespace is None and getattr(client.get_kfp_healthz(sleep_duration=1), "multi_user", False):
        raise ConfigError(
            "this Kubeflow Pipelines is multi-user: name your profile namespace with --namespace NS "
            "(or kubeflow.namespace=NS)"
        )


def upload_version(
    client: Any, package: str | Path, *, pipeline_name: str, version_name: str, namespace: str | None,
    description: str = "",
) -> PipelineVersion:  # fmt: skip
    """Upload ``package`` as version ``version_name`` of the pipeline ``pipeline_name``, creating it if missing.

    Args:
        client: A ``kfp.Client``.
        package: The compiled IR YAML.
        pipeline_name: The one pipeline every version goes to.
        version_name: The new version's name (unique within the pipeline).
        namespace: Where the pipeline lives; None: shared (or a single-user KFP).
        description: The version's description (e.g. the git commit it was compiled from).
    """
    with _quiet():
        found = client.list_pipelines(filter=_by_name(pipeline_name), namespace=namespace, page_size=2).pipelines or []
        if len(found) > 1:
            raise PipelineError(f"{len(found)} pipelines are named {pipeline_name!r}; rename or delete all but one")
        if not found:
            # A new pipeline comes with a first version made from the same package: use it, not a second copy.
            pipeline = client.upload_pipeline(
                str(package), pipeline_name=pipeline_name, description=description or None, namespace=namespace
            )
            listed = client.list_pipeline_versions(pipeline.pipeline_id, page_size=1, sort_by="created_at desc")
            if not listed.pipeline_versions:
                raise PipelineError(f"pipeline {pipeline_name} ({pipeline.pipeline_id}) was created with no version")
            version = listed.pipeline_versions[0]
            return PipelineVersion(pipeline.pipeline_id, version.pipeline_version_id, version.display_name, True)
        pipeline_id = found[0].pipeline_id
        version = client.upload_pipeline_version(
            str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id, description=description or None
        )
    return PipelineVersion(pipeline_id, version.pipeline_version_id, version_name, False)


def experiment_id(client: Any, name: str, namespace: str | None) -> str:
    """The id of experiment ``name`` in ``namespace``, created if missing."""
    with _quiet():
        return client.create_experiment(name=name, namespace=namespace).experiment_id


def start_run(
    client: Any, version: PipelineVersion, *, experiment: str, run_name: str, arguments: dict[str, Any],
    service_account: str | None = None,
) -> str:  # fmt: skip
    """Start a run of ``version`` with ``arguments`` in ``experiment``; returns the run id."""
    with _quiet():
        run = client.run_pipeline(
            experiment_id=experiment,
            job_name=run_name,
            params=arguments,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            service_account=service_account,
        )
    return run.run_id


def schedule(
    client: Any, version: PipelineVersion, *, experiment: str, name: str, namespace: str | None,
    arguments: dict[str, Any], recurring: Any, service_account: str | None = None,
) -> tuple[str, list[str]]:  # fmt: skip
    """Create the recurring run ``name`` of ``version``, replacing the one of that name in ``experiment``.

    Args:
        client: A ``kfp.Client``.
        version: The uploaded version the schedule runs.
        experiment: Experiment id.
        name: Display name of the recurring run.
        namespace: Where to look for the one it replaces (explicit: kfp's list ignores the client's).
        arguments: Run parameters (:func:`kfkit.pipelines.parameters.pipeline_arguments`).
        recurring: ``kubeflow.recurring`` (cron or interval_s, max_concurrency, catchup, start/end time).
        service_account: Service account of the runs' pods; None: the profile's default.

    Returns:
        The new recurring run's id, and the ids of those it replaced.

    Raises:
        ConfigError: neither cron nor interval_s is set.
    """
    if recurring.cron is None and recurring.interval_s is None:
        raise ConfigError("no schedule: set kubeflow.recurring.cron='0 0 3 * * *' or kubeflow.recurring.interval_s=N")
    with _quiet():
        # Explicit namespace: in multi-user mode kfp's list ignores the client's own.
        listed = client.list_recurring_runs(namespace=namespace, filter=_by_name(name), page_size=100)
        replaced = [
            r.recurring_run_id
            for r in listed.recurring_runs or []
            if r.display_name == name and r.experiment_id in (None, experiment)
        ]
        for recurring_run_id in replaced:
            client.delete_recurring_run(recurring_run_id)
        created = client.create_recurring_run(
            experiment_id=experiment,
            job_name=name,
            description=f"{version.name} of pipeline {version.pipeline_id}",
            start_time=recurring.start_time,
            end_time=recurring.end_time,
            interval_second=recurring.interval_s,
            cron_expression=recurring.cron,
            max_concurrency=recurring.max_concurrency,
            no_catchup=not recurring.catchup,
            params=arguments,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            service_account=service_account,
        )
    return created.recurring_run_id, replaced


def watch(
    client: Any, run_id: str, *, poll_s: float, timeout_s: float, report: Callable[[str], None] | None = None
) -> Any:
    """Follow run ``run_id`` until it ends; returns it if it SUCCEEDED.

    Args:
        client: A ``kfp.Client``.
        run_id: The run.
        poll_s: Seconds between reads.
        timeout_s: Give up after this long.
        report: Called with each new state as it is seen (e.g. to print it).

    Raises:
        PipelineError: the run FAILED, was CANCELED or SKIPPED (naming the failed tasks and their errors), or
            was still going after ``timeout_s`` (the run itself goes on).
    """
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        run = client.get_run(run_id)
        state = str(run.state or "PENDING").upper()
        if state != seen and report is not None:
            report(state)
        seen = state
        if state == "SUCCEEDED":
            return run
        if state in FINAL_STATES:
            tasks = "; ".join(f"{task}: {error}" if error else task for task, error in failed_tasks(run))
            error = getattr(getattr(run, "error", None), "message", None)
            why = tasks or error or "no task says why"
            raise PipelineError(f"run {run_id} ended {state}: {why}")
        if time.monotonic() >= deadline:
            raise PipelineError(
                f"run {run_id} is still {state} after kubeflow.watch_timeout_s={timeout_s:g} s; it goes on in the "
                "cluster (raise kubeflow.watch_timeout_s to wait longer)"
            )
        time.sleep(poll_s)


def failed_tasks(run: Any) -> list[tuple[str, str]]:
    """The (task name, error message) of each FAILED task of a v2beta1 run."""
    details = getattr(run, "run_details", None)
    failed = []
    for task in getattr(details, "task_details", None) or []:
        if str(getattr(task, "state", "")).upper() == "FAILED":
            message = getattr(getattr(task, "error", None), "message", None) or ""
            failed.append((str(getattr(task, "display_name", "") or "?"), str(message)))
    return failed
