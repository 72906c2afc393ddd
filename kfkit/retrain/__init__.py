"""Retrain trigger: drift CloudEvents in, a gated retraining run out (``python -m kfkit.retrain``).

The detector (``kfkit.serving.drift``, in .venv-drift) POSTs one CloudEvent per drifted window; the trigger
retrains on drift in K of the last M windows, once per burst, at most once per cooldown, and records why in
an audit file beside the registry's. The run is the whole pipeline (``kfkit run --no-serve`` here, a KFP
run on a cluster), so the gate still decides what serves. docs/drift.md is the contract.
"""

from kfkit.retrain.events import EVENT_TYPES, DriftEvent, parse_drift_event
from kfkit.retrain.policy import Decision, RetrainPolicy, check_retrain

__all__ = ["DriftEvent", "EVENT_TYPES", "parse_drift_event", "Decision", "RetrainPolicy", "check_retrain"]
