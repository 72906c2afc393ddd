"""KServe V1 requests: ``{"instances": [[x0, x1, ...], ...]}`` or rows of ``{feature: value}``, decoded and checked.

The JSON body is decoded by :func:`kfkit.serving.json_decoding.parse_v1_json`; this module checks its shape
and reorders named rows into the model's feature order, then hands the rows to the shared
:class:`~kfkit.serving.tensors.TensorChecks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.serving.messages import json_kind, quote_list
from kfkit.serving.tensors import TensorChecks

__all__ = ["V1Decoder"]


class V1Decoder:
    """V1 request bodies to a validated float32 batch, for one model."""

    def __init__(self, checks: TensorChecks) -> None:
        """Decode for the model whose tensor ``checks`` these are."""
        self._checks = checks
        self._features = checks.features
        self._feature_set = frozenset(checks.feature_names)

    def decode(self, payload: Any) -> np.ndarray:
        """Validate a decoded V1 body: ``{"instances": [[x0, x1, ...], ...]}`` or rows of ``{feature: value}``.

        Returns:
            The batch, float32 (N, n_features).

        Raises:
            InvalidInput: the body cannot be scored.
        """
        if not isinstance(payload, dict):
            raise InvalidInput(
                f"request body is {json_kind(payload)}, not a JSON object; "
                f'send {{"instances": [[{self._checks.width_hint}], ...]}} with Content-Type: application/json'
            )
        instances = payload.get("instances")
        if not isinstance(instances, list | np.ndarray):
            raise InvalidInput(
                f'expected {{"instances": [[{self._checks.width_hint}], ...]}} (a list of rows); '
                f"got keys {sorted(map(str, payload))}"
            )
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            instances = self._named_rows(instances)
        return self._features(instances, where="instances")

    def _named_rows(self, instances: list) -> list[list[Any]]:
        """Rows of ``{feature name: value}`` reordered into the model's feature order."""
        names, expected = self._checks.feature_names, self._feature_set
        rows = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InvalidInput(
                    f"instances[{i}] is {json_kind(instance)} but instances[0] is an object; "
                    "send every row as {feature name: value} or every row as a list"
                )
            if instance.keys() != expected:
                missing = [n for n in names if n not in instance]
                extra = sorted(str(k) for k in instance if k not in expected)
                problems = [  # every missing name: the client has to add each of them
                    f"missing {quote_list(missing, limit=len(missing))}" if missing else "",
                    f"unknown {quote_list(extra)}" if extra else "",
                ]
                raise InvalidInput(
                    f"instances[{i}]: {'; '.join(p for p in problems if p)}; "
                    f"the model takes exactly these {len(names)} features (GET /v2/models/<name> lists them "
                    f"in order): {quote_list(names)}"
                )
            rows.append([instance[n] for n in names])
        return rows
