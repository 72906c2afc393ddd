"""Validation computed in torch on the training device (no sklearn import, no host round trip per row)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["average_precision", "validate"]


def average_precision(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """PR-AUC as average precision, defined as scikit-learn's ``average_precision_score``.

    Sum over distinct score thresholds (highest first) of precision times the recall gained there;
    tied scores form one threshold. NaN when ``labels`` has no positive row.
    """
    import torch

    labels = labels.detach().reshape(-1).to(torch.float64)
    scores = scores.detach().reshape(-1).to(torch.float64)
    positives = labels.sum()
    if positives.item() == 0:
        return float("nan")
    scores, order = torch.sort(scores, descending=True, stable=True)
    labels = labels[order]
    true_pos = torch.cumsum(labels, 0)
    seen = torch.arange(1, len(labels) + 1, device=labels.device, dtype=torch.float64)
    # The last row of each run of equal scores closes that threshold.
    last_of_run = torch.ones_like(scores, dtype=torch.bool)
    last_of_run[:-1] = scores[1:] != scores[:-1]
    true_pos, seen = true_pos[last_of_run], seen[last_of_run]
    precision = true_pos / seen
    recall = true_pos / positives
    recall_gain = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((recall_gain * precision).sum())


def validate(model: torch.nn.Module, loss_fn: Any, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[float, float]:
    """Validation loss and PR-AUC in fp32 (the precision the exported model serves in)."""
    import torch

    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = model(x_val)
        loss = float(loss_fn(logits, y_val))
        pr_auc = average_precision(y_val, logits)  # a monotone transform of the scores: same ranking
    model.train(was_training)
    return loss, pr_auc
