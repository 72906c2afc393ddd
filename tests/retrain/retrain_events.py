"""What the retrain tests share: the model name and the drift CloudEvent a window sends (docs/drift.md)."""

from __future__ import annotations

import json

MODEL = "breast-cancer-mlp"
FEATURES = ["mean_radius", "mean_texture", "mean_perimeter"]


def drift_event(
    window: int,
    *,
    is_drift: bool = True,
    version: str = "1",
    model: str = MODEL,
    kind: str = "data",
    event_id: str | None = None,
    drifted: list[str] | None = None,
) -> tuple[dict[str, str], bytes]:
    """The binary-mode drift CloudEvent of one window, as docs/drift.md fixes it (headers, body)."""
    drifted = (FEATURES[:2] if is_drift else []) if drifted is None else drifted
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id or f"{model}-{version}-w{window}-{kind}",
        "ce-source": f"kfkit-drift/{model}",
        "ce-type": f"org.kfkit.drift.{kind}",
        "ce-subject": f"{model}/{version}",
        "content-type": "application/json",
    }
    p_val = [1e-6 if name in drifted else 0.4 for name in FEATURES]
    body = {
        "meta": {"name": "TabularDrift", "detector_type": "drift", "data_type": "tabular", "version": "0.11.4"},
        "data": {"is_drift": int(is_drift), "p_val": p_val, "threshold": 0.0167, "distance": [0.5, 0.4, 0.1]},
        "kfkit": {
            "model": model,
            "version": version,
            "window": window,
            "rows": 50,
            "start": "2026-12-01T10:00:00Z",
            "end": "2026-12-01T10:01:00Z",
            "drifted_features": drifted,
            "report": f"http://127.0.0.1:8090/v1/drift/reports/w{window}.html",
            "metrics": {"accuracy": 0.71, "roc_auc": None},
        },
    }
    return headers, json.dumps(body).encode()
