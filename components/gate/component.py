"""gate: the candidate must clear absolute floors and not regress against the champion on the same test rows."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def gate(
    config: dict,
    prepared: Input[Dataset],
    evaluation: Input[Artifact],
    decision: Output[Artifact],
    report: Output[Markdown],
    gate_metrics: Output[Metrics],
):
    """Decide whether the candidate may be published; stop the pipeline if not.

    Args:
        config: The whole kfkit config; ``gate``, ``registry`` and ``model.name`` are used.
        prepared: Output of prep (the champion is scored on its test split).
        evaluation: Output of evaluate (the candidate's test metrics and their test-file digest).
        decision: gate.json: verdict, every check with its values, the champion and the test rows.
        report: The decision as Markdown (shown in the Kubeflow UI).
        gate_metrics: passed (1/0) and the number of failed checks.

    Raises:
        GateFailed: the candidate did not pass; the message names every failed check.
    """
    import json

    from kfkit.config import from_dict
    from kfkit.errors import GateFailed
    from kfkit.gate import run_gate

    cfg = from_dict(config)
    result = run_gate(cfg, prepared_dir=prepared.path, evaluation_dir=evaluation.path)
    with open(decision.path, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    decision.metadata.update({"passed": result.passed, "failed_checks": [c.reason for c in result.failed]})
    gate_metrics.log_metric("passed", 1.0 if result.passed else 0.0)
    gate_metrics.log_metric("failed_checks", float(len(result.failed)))
    for note in result.notes:
        print(f"[gate] {note}")
    print(f"[gate] {result.summary()}")
    if not result.passed:
        # One line: kfkit run reports it as the run's error; gate.json above keeps the details.
        raise GateFailed(f"{result.summary()} (decision: {decision.path})")
