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


def _kept_val_pr_auc(prepared_dir, model_dir):
    """Validation PR-AUC of the weights written to ``model_dir``."""
    import torch

    from kfkit.data.prep import load_prepared
    from kfkit.model import load_model
    from kfkit.training.data import load_split
    from kfkit.training.metrics import average_precision

    prepared = load_prepared(prepared_dir)
    x_val, y_val = load_split(prepared.split_path("val"), prepared.feature_names, prepared.label, "cpu")
    model, _ = load_model(model_dir)
    with torch.inference_mode():
        return average_precision(y_val, model(x_val))


def test_best_validation_epoch_is_published_and_named(bc_prepared, tmp_path, run_worker, capfd):
    # Breast cancer's 32 positive validation rows are too few to stop on (auto patience 0), but the best
    # epoch is still what gets published; lr 0.5 makes PR-AUC wander, so the best is not the last.
    status, summary = run_worker(
        bc_prepared, tmp_path / "model", "training.epochs=12", "training.learning_rate=0.5", "training.device=cpu"
    )
    assert status == 0
    assert summary["settings"]["early_stopping_patience"] == 0 and summary["settings"]["batch_size"] == 128
    history, published = summary["history"], summary["published_epoch"]
    assert len(history) == 12 and not summary["stopped_early"]
    assert published == summary["best_epoch"] < 12
    assert history[published - 1]["val_pr_auc"] == max(h["val_pr_auc"] for h in history)
    assert _kept_val_pr_auc(bc_prepared, tmp_path / "model") == pytest.approx(
        history[published - 1]["val_pr_auc"], abs=1e-9
    )
    assert f"epoch {published} weights (the best validation epoch of 12" in capfd.readouterr().out


def test_restore_best_weights_false_publishes_the_last_epoch(bc_prepared, tmp_path, run_worker):
    status, summary = run_worker(
        bc_prepared, tmp_path / "model", "training.epochs=12", "training.learning_rate=0.5",
        "training.device=cpu", "training.restore_best_weights=false",
    )  # fmt: skip
    assert status == 0
    assert summary["published_epoch"] == 12 and summary["best_epoch"] < 12
    kept = _kept_val_pr_auc(bc_prepared, tmp_path / "model")
    assert kept == pytest.approx(summary["history"][-1]["val_pr_auc"], abs=1e-9)
