"""The files a training run leaves beside the model, named once for the trainers, the launcher and publish."""

from __future__ import annotations

__all__ = ["TRAINING_SUMMARY_FILE", "ERROR_FILE"]

TRAINING_SUMMARY_FILE = "training.json"
"""The training summary both trainers write beside the model (resolved settings, history, throughput, best epoch)."""
ERROR_FILE = "training-error.txt"
"""A worker that fails on purpose (a KfkitError) leaves its message here for the launcher to raise."""
