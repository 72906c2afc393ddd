"""Early stopping on validation PR-AUC: the rule, and the worker keeping the best epoch's weights."""

import math

import numpy as np
import pytest

from kfkit.training.early_stopping import EarlyStopping


def test_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=2)
    verdicts = []
    for epoch, (score, loss) in enumerate([(0.5, 1.0), (0.6, 0.9), (0.6, 0.95), (0.55, 0.8)], start=1):
        verdicts.append((stopper.update(epoch, score, loss), stopper.should_stop))
    assert verdicts == [(True, False), (True, False), (False, False), (False, True)]
    assert (stopper.best_epoch, stopper.best_score, stopper.best_loss) == (2, 0.6, 0.9)


def test_equal_score_with_lower_loss_improves_and_nan_never_does():
    stopper = EarlyStopping(patience=1)
    assert stopper.update(1, 1.0, 0.3)
    assert stopper.update(2, 1.0, 0.2)  # saturated PR-AUC: the loss decides
    assert not stopper.update(3, math.nan, 0.1)
    assert stopper.should_stop and stopper.best_epoch == 2


def test_patience_zero_is_off_and_state_round_trips():
    off = EarlyStopping(patience=0)
    for epoch in range(1, 20):
        off.update(epoch, 0.1, 1.0)
    assert not off.enabled and not off.should_stop
    on = EarlyStopping(patience=3)
    on.update(1, 0.7, 0.4)
    on.update(2, 0.6, 0.5)
    copy = EarlyStopping(patience=3)
    copy.load_state_dict(on.state_dict())
    assert copy == on


@pytest.mark.slow
def test_worker_stops_early_and_keeps_the_best_epoch(bc_prepared, tmp_path, run_worker):
    import torch

    from kfkit.data.prep import load_prepared
    from kfkit.model import load_model
    from kfkit.training.data import load_split
    from kfkit.training.metrics import average_precision

    # A learning rate this high makes validation PR-AUC wander, so it stops well before 60 epochs.
    status, summary = run_worker(
        bc_prepared, tmp_path / "model", "training.epochs=60", "training.learning_rate=0.5",
        "training.early_stopping_patience=3", "training.log_every=1", "training.device=cpu",
    )  # fmt: skip
    assert status == 0
    history = summary["history"]
    assert summary["stopped_early"] and len(history) < 60
    best = summary["best_epoch"]
    assert len(history) == best + 3  # stopped exactly `patience` epochs after the best one
    scores = [h["val_pr_auc"] for h in history]
    assert scores[best - 1] == max(scores)
    # The saved weights are the best epoch's, not the last one's.
    prepared = load_prepared(bc_prepared)
    x_val, y_val = load_split(prepared.split_path("val"), prepared.feature_names, prepared.label, "cpu")
    model, _ = load_model(tmp_path / "model")
    with torch.inference_mode():
        kept = average_precision(y_val, model(x_val))
    assert kept == pytest.approx(scores[best - 1], abs=1e-9)
    assert summary["best_val_pr_auc"] == pytest.approx(kept, abs=1e-9)
    assert np.isfinite(summary["samples_per_s"]) and summary["samples_per_s"] > 0
