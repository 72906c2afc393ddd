"""The drift detector's settings: the ``drift`` section of a version's config.json, typed and checked.

Standard library only: the main environment checks ``drift.*`` with this class too (``kfkit.config.validate``),
so a config that composes there builds a detector here. The fields and their documentation are those of
:class:`kfkit.config.DriftConfig` (a test keeps the two equal); this side cannot import it, since
kfkit.config needs omegaconf, which the drift environment does not have.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfkit.errors import ConfigError

__all__ = ["DriftSettings", "DETECTORS", "CORRECTIONS", "PERFORMANCE_METRICS"]

DETECTORS = ("tabular", "mmd", "psi")
CORRECTIONS = ("bonferroni", "fdr")
PERFORMANCE_METRICS = ("accuracy", "precision", "recall", "roc_auc", "pr_auc")


@dataclass(frozen=True)
class DriftSettings:
    """What the detector tests and when; see :class:`kfkit.config.DriftConfig` for each field."""

    detector: str = "tabular"
    """tabular, mmd or psi."""
    p_val: float = 0.05
    """Significance level (tabular, mmd)."""
    correction: str = "bonferroni"
    """bonferroni or fdr (tabular)."""
    reference_rows: int = 1000
    """Rows of reference.parquet (publish-time setting; the detector uses what was published)."""
    window_size: int = 200
    """Rows per window."""
    window_seconds: float = 3600.0
    """Time limit of a window (0 = count windows only)."""
    min_window_rows: int = 20
    """Fewest rows a time-closed window is tested with."""
    overlap: float = 0.0
    """Share of a closed window's rows carried into the next."""
    categorical_features: list[str] = field(default_factory=list)
    """Chi-square features (tabular)."""
    n_permutations: int = 100
    """MMD permutations."""
    psi_bins: int = 10
    """PSI bins per feature."""
    psi_threshold: float = 0.25
    """PSI drift threshold."""
    output_drift: bool = True
    """Test the predicted probability too."""
    performance_window: int = 500
    """Labelled rows of the rolling metrics."""
    performance_min_labels: int = 100
    """Labelled rows before floors are checked."""
    performance_floors: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.8, "roc_auc": 0.75})
    """Floors of the rolling metrics."""
    sink: str | None = None
    """Where drift events go (None: $K_SINK)."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, where: str = "drift") -> DriftSettings:
        """Typed, checked settings from a plain mapping (config.json's ``drift`` section).

        Keys that are absent take their defaults, so a version published before a field existed still
        builds; an unknown key is refused, so a typo does not silently fall back to a default.

        Args:
            data: The section; None for all defaults.
            where: How messages name the section (``drift``, ``config.json drift``).

        Raises:
            ConfigError: an unknown key, a value of the wrong type, or one out of range; the message names it.
        """
        data = dict(data or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - set(names)):
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
        values = {key: _typed(f"{where}.{key}", value, names[key].type) for key, value in data.items()}
        settings = cls(**values)
        settings.check(where)
        return settings

    def replace(self, **changes: Any) -> DriftSettings:
        """A copy with ``changes`` (command-line overrides), checked again."""
        settings = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        settings.check("drift")
        return settings

    def check(self, where: str = "drift") -> None:
        """Check choices and ranges.

        Raises:
            ConfigError: naming the key, its value and what is accepted.
        """
        if self.detector not in DETECTORS:
            raise ConfigError(f"{where}.detector={self.detector!r} is not one of {', '.join(DETECTORS)}")
        if self.correction not in CORRECTIONS:
            raise ConfigError(f"{where}.correction={self.correction!r} is not one of {', '.join(CORRECTIONS)}")
        if not 0 < self.p_val < 1:
            raise ConfigError(f"{where}.p_val={self.p_val} must be in (0, 1), e.g. 0.05")
        for key in ("reference_rows", "window_size", "min_window_rows", "psi_bins"):
            if getattr(self, key) < 2:
                raise ConfigError(f"{where}.{key}={getattr(self, key)} must be at least 2")
        for key in ("n_permutations", "performance_window", "performance_min_labels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}={getattr(self, key)} must be at least 1")
        if self.min_window_rows > self.window_size:
            raise ConfigError(
                f"{where}.min_window_rows={self.min_window_rows} is above window_size={self.window_size}; "
                "lower it (a time-closed window must be able to close before it is full)"
            )
        if not (math.isfinite(self.window_seconds) and self.window_seconds >= 0):
            raise ConfigError(f"{where}.window_seconds={self.window_seconds} must be 0 (count windows) or more")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"{where}.overlap={self.overlap} must be in [0, 1) (0.5 = half of each window reused)")
        if not self.psi_threshold > 0:
            raise ConfigError(f"{where}.psi_threshold={self.psi_threshold} must be above 0 (0.25 is the usual band)")
        if self.performance_min_labels > self.performance_window:
            raise ConfigError(
                f"{where}.performance_min_labels={self.performance_min_labels} is above performance_window="
                f"{self.performance_window}; the rolling window could never hold that many labels"
            )
        for metric, floor in self.performance_floors.items():
            if metric not in PERFORMANCE_METRICS:
                raise ConfigError(
                    f"{where}.performance_floors has {metric!r}, not one of {', '.join(PERFORMANCE_METRICS)}"
                )
            if not 0 <= floor <= 1:
                raise ConfigError(f"{where}.performance_floors.{metric}={floor} must be in [0, 1]")
        if self.sink is not None and not self.sink.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.sink={self.sink!r} must be an http:// or https:// URL (or null for $K_SINK)")


def _typed(key: str, value: Any, annotation: str) -> Any:
    """``value`` as the field's type (annotations are strings here), or a ConfigError naming the key."""
    kind = annotation.split("[", 1)[0].split(" |", 1)[0]
    if value is None and "None" in annotation:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # kfp turns ints into doubles
            return int(value)
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "list":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
    elif kind == "dict":
        if isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in value.items()
        ):
            return {k: float(v) for k, v in value.items()}
    raise ConfigError(f"{key}={value!r} is not a valid {annotation}")
