"""evaluate: test-set metrics, ROC/PR curves and an HTML report."""

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
    """Score the model on the test split.

    Args:
        config: The whole kfkit config; ``evaluation`` is used.
        prepared: Output of prep (its test split is scored).
        model: Output of train.
        metrics: accuracy, roc_auc, pr_auc, f1, precision, recall (shown in the Kubeflow UI).
        roc: ROC curve and confusion matrix (kfp's ClassificationMetrics).
        report: Self-contained HTML page with metrics and plots.
        evaluation: Folder with metrics.json, roc.png, pr.png, report.html for later steps.
    """
    import os
    import shutil

    from kfkit.config import from_dict
    from kfkit.evaluation import evaluate_model, write_report

    cfg = from_dict(config)
    result = evaluate_model(model.path, os.path.join(prepared.path, "test.parquet"), cfg.evaluation.threshold)
    write_report(result, evaluation.path, title=f"{cfg.model.name}: test-set evaluation")
    shutil.copyfile(os.path.join(evaluation.path, "report.html"), report.path)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    roc.log_roc_curve(result.roc_curve["fpr"], result.roc_curve["tpr"], result.roc_curve["thresholds"])
    roc.log_confusion_matrix(["0", "1"], result.confusion_matrix)
    summary = "  ".join(f"{k} {result.metrics[k]:.4f}" for k in ("accuracy", "roc_auc", "pr_auc", "f1"))
    print(f"[evaluate] {summary}")
