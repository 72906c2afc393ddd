"""evaluate: operating threshold from validation, test metrics, calibration, segments, plots and an HTML report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def evaluate(
    config: dict,
    prepared: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
):
    """Pick the operating threshold on the validation split, then score the test split.

    Args:
        config: The whole kfkit config; ``evaluation`` is used.
        prepared: Output of prep (validation and test splits).
        model: Output of train (PyTorch or TensorFlow).
        metrics: Test metrics at the chosen threshold, the threshold, ECE (shown in the Kubeflow UI).
        roc: ROC curve and confusion matrix (kfp's ClassificationMetrics).
        report: Self-contained HTML page: metrics, confusion matrix, ROC/PR/calibration plots, segments.
        evaluation: Folder with metrics.json (threshold included), roc.png, pr.png, calibration.png, report.html.
    """
    import math
    import os
    import shutil

    from kfkit.config import from_dict
    from kfkit.evaluation.metrics import evaluate as run_evaluation
    from kfkit.evaluation.report import write_report

    cfg = from_dict(config)
    result = run_evaluation(model.path, prepared.path, cfg.evaluation)
    write_report(result, evaluation.path, title=f"{cfg.model.name}: test-set evaluation")
    shutil.copyfile(os.path.join(evaluation.path, "report.html"), report.path)
    for key, value in result.metrics.items():
        if math.isfinite(value):  # kfp metrics are protobuf doubles shown as numbers: no NaN
            metrics.log_metric(key, value)
    metrics.log_metric("threshold", result.threshold)
    evaluation.metadata.update({"threshold": result.threshold, "threshold_rule": result.threshold_rule})
    roc.log_roc_curve(result.roc_curve["fpr"], result.roc_curve["tpr"], result.roc_curve["thresholds"])
    roc.log_confusion_matrix(["0", "1"], result.confusion_matrix)
    summary = "  ".join(f"{k} {result.metrics[k]:.4f}" for k in ("accuracy", "roc_auc", "pr_auc", "f1", "ece"))
    print(f"[evaluate] threshold {result.threshold:.4f} ({result.threshold_rule} on validation)  {summary}")
    if result.threshold_note:
        print(f"[evaluate] note: {result.threshold_note}")
