"""Smoke test of a deployed endpoint: one real V2 request, compared with the offline model."""

from __future__ import annotations

import json
from pathlib import Path

from kfkit.errors import ServingError
from kfkit.model.names import LABEL, PROBABILITY

__all__ = ["run_smoke_test", "TOLERANCE"]

TOLERANCE = 1e-5
"""Largest accepted difference between served and offline probability (float32 arithmetic)."""


def run_smoke_test(
    *,
    model_uri: str,
    version: str,
    prepared_dir: str | Path,
    evaluation_dir: str | Path,
    endpoint_path: str | Path,
    summary_path: str | Path,
    gate_path: str | Path | None = None,
    promoted_to: str = "",
) -> dict:
    """Call the endpoint with the first test row, check the answer, and write the run summary JSON.

    The served probability must equal the published model's (loaded from the verified version, with
    any framework) and the served label must be that probability cut at the published threshold.

    Raises:
        ServingError: the endpoint did not answer, or answered something other than the offline model.
    """
    import pandas as pd

    from kfkit.deploy.local import LocalEndpoint, infer_v2
    from kfkit.model import load_scorer
    from kfkit.registry import resolve, split_version_uri

    endpoint = LocalEndpoint.from_dict(json.loads(Path(endpoint_path).read_text()))
    score, spec = load_scorer(resolve(model_uri))
    row = pd.read_parquet(Path(prepared_dir) / "test.parquet", columns=spec.feature_names).iloc[:1]
    features = row.to_numpy(dtype="float32")
    offline = float(score(features)[0])
    response = infer_v2(endpoint, features.tolist())
    outputs = {out["name"]: out for out in response.get("outputs", [])}
    if PROBABILITY not in outputs:
        raise ServingError(f"{endpoint.v2_url} answered without a {PROBABILITY!r} output: {json.dumps(response)[:300]}")
    served = float(outputs[PROBABILITY]["data"][0])
    if abs(served - offline) > TOLERANCE:
        raise ServingError(f"{endpoint.v2_url} answered probability {served}, the offline model gives {offline}")
    if LABEL in outputs and abs(offline - spec.threshold) > TOLERANCE:
        label, expected = int(outputs[LABEL]["data"][0]), int(offline >= spec.threshold)
        if label != expected:
            raise ServingError(
                f"{endpoint.v2_url} answered label {label} for probability {served}; at the published threshold "
                f"{spec.threshold} it is {expected}: the server does not use the version's model.json"
            )
    evaluation = json.loads((Path(evaluation_dir) / "metrics.json").read_text())
    summary = {
        "model_name": spec.name,
        "version": version,
        "model_uri": model_uri,
        "registry_uri": split_version_uri(model_uri)[0],
        "promoted_to": promoted_to,
        "test_metrics": {
            k: evaluation["metrics"][k] for k in ("accuracy", "roc_auc", "pr_auc", "f1", "precision", "recall")
        },
        "threshold": evaluation["threshold"],
        "threshold_rule": evaluation.get("threshold_rule", "fixed"),
        "endpoint": endpoint.to_dict(),
        "urls": {
            "v1_predict": endpoint.v1_url,
            "v2_infer": endpoint.v2_url,
            "v2_ready": f"http://{endpoint.host}:{endpoint.http_port}/v2/models/{spec.name}/ready",
            "grpc": f"{endpoint.host}:{endpoint.grpc_port}",
        },
        # str(np.float32) is the shortest text that reads back as the same float32: a short curl line.
        "curl": endpoint.curl_example([float(str(v)) for v in features[0]]),
        "smoke_test": {"probability": served, "offline_probability": offline},
        "files": {  # what a person looks at next: the report, the plots, the server's log
            "report": str(Path(evaluation_dir) / "report.html"),
            "plots": [str(Path(evaluation_dir) / f"{name}.png") for name in ("roc", "pr", "calibration")],
            "server_log": str(endpoint.log_path),
        },
    }
    if gate_path is not None and Path(gate_path).is_file():
        gate = json.loads(Path(gate_path).read_text())
        champion = gate.get("champion")
        summary["gate"] = {
            "passed": gate["passed"],
            "checks": len(gate.get("checks", [])),
            "champion": f"{champion['alias']} version {champion['version']}" if champion else None,
        }
    Path(summary_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
