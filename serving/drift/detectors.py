"""The drift tests, rebuilt from reference rows and settings (never unpickled): TabularDrift, MMDDrift, PSI.

:func:`build` returns a :class:`Detector` whose :meth:`~Detector.test` answers in alibi-detect's shape,
``{"meta": {...}, "data": {"is_drift", "p_val", "threshold", "distance"}}``, as Seldon's detector server
does. Every window also gets per-feature statistics whatever the deciding test is (:class:`FeatureStats`:
K-S or chi-square p-values and PSI), for the metrics and the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from kfkit.serving.drift.settings import DriftSettings

__all__ = ["Detector", "FeatureStats", "build", "psi_edges", "psi"]

_EPS = 1e-4
"""Floor of a bin's share in the PSI formula (an empty bin would make it infinite)."""
ALIBI_VERSION = "0.11.4"


class Detector:
    """One drift test against a fixed reference; :meth:`test` is thread-safe for one caller at a time."""

    name: str
    """alibi-detect's detector name (TabularDrift, MMDDriftTorch) or PSIDrift."""

    def test(self, x: np.ndarray) -> dict[str, Any]:
        """The test of ``x`` (float32 ``[n, k]``) in alibi-detect's result shape, as plain JSON-ready values."""
        raise NotImplementedError

    def drifted(self, result: dict[str, Any], names: list[str]) -> list[str]:  # noqa: ARG002 (overridden)
        """The features a result names as drifted (none for a multivariate test)."""
        return []


class _Tabular(Detector):
    def __init__(self, reference: np.ndarray, settings: DriftSettings, categorical: list[int]) -> None:
        from alibi_detect.cd import TabularDrift

        self.name = "TabularDrift"
        self._correction = settings.correction
        self._p_val = settings.p_val
        with warnings.catch_warnings():  # "no categories_per_feature: all numerical" is the intended default
            warnings.simplefilter("ignore")
            self._detector = TabularDrift(
                reference,
                p_val=settings.p_val,
                categories_per_feature={i: None for i in categorical} or None,
                correction=settings.correction,
            )

    def test(self, x: np.ndarray) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = self._detector.predict(x, drift_type="batch", return_p_val=True, return_distance=True)
        return _plain(result)

    def drifted(self, result: dict[str, Any], names: list[str]) -> list[str]:
        p_values = np.asarray(result["data"]["p_val"], dtype=np.float64)
        if self._correction == "fdr":  # Benjamini-Hochberg: the features whose rejection the procedure keeps
            order = np.argsort(p_values)
            ranked = p_values[order] <= self._p_val * np.arange(1, p_values.size + 1) / p_values.size
            cut = np.flatnonzero(ranked)
            chosen = order[: cut[-1] + 1] if cut.size else []
            return [names[i] for i in sorted(chosen)]
        return [n for n, p in zip(names, p_values.tolist(), strict=True) if p < result["data"]["threshold"]]


class _MMD(Detector):
    def __init__(self, reference: np.ndarray, settings: DriftSettings) -> None:
        from alibi_detect.cd import MMDDrift

        self.name = "MMDDriftTorch"
        # Standardised with the reference's statistics: the kernel's one bandwidth would otherwise be
        # set by the widest feature (an amount in currency units beside z-scores).
        self._mean = reference.mean(axis=0)
        std = reference.std(axis=0)
        self._scale = np.where(std > 0, std, 1.0).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._detector = MMDDrift(
                self._standardise(reference),
                backend="pytorch",
                p_val=settings.p_val,
                n_permutations=settings.n_permutations,
                device="cpu",
            )

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((x - self._mean) / self._scale).astype(np.float32)

    def test(self, x: np.ndarray) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = self._detector.predict(self._standardise(x), return_p_val=True, return_distance=True)
        return _plain(result)


class _PSI(Detector):
    def __init__(self, reference: np.ndarray, settings: DriftSettings) -> None:
        self.name = "PSIDrift"
        self._threshold = settings.psi_threshold
        self._edges = psi_edges(reference, settings.psi_bins)
        self._shares = [_shares(reference[:, j], e) for j, e in enumerate(self._edges)]

    def test(self, x: np.ndarray) -> dict[str, Any]:
        values = [_psi(s, _shares(x[:, j], e)) for j, (e, s) in enumerate(zip(self._edges, self._shares, strict=True))]
        return {
            "meta": {"name": self.name, "detector_type": "drift", "data_type": "tabular", "version": ALIBI_VERSION},
            "data": {
                "is_drift": int(max(values) >= self._threshold),
                "p_val": None,  # PSI has no p-value; distance holds the PSI of each feature
                "threshold": self._threshold,
                "distance": values,
            },
        }

    def drifted(self, result: dict[str, Any], names: list[str]) -> list[str]:
        return [n for n, v in zip(names, result["data"]["distance"], strict=True) if v >= self._threshold]


def build(settings: DriftSettings, reference: np.ndarray, *, categorical: list[int] = ()) -> Detector:
    """The detector ``settings.detector`` names, fitted on ``reference`` (float32 ``[n, k]``)."""
    if settings.detector == "tabular":
        return _Tabular(reference, settings, list(categorical))
    if settings.detector == "mmd":
        return _MMD(reference, settings)
    return _PSI(reference, settings)


@dataclass
class FeatureStats:
    """Per-feature statistics of every window, whichever test decides: K-S/chi-square p-values and PSI."""

    tabular: Detector
    """A TabularDrift (Bonferroni or FDR as set) for the per-feature p-values and K-S distances."""
    psi: Detector
    """PSI per feature."""

    @classmethod
    def build(cls, settings: DriftSettings, reference: np.ndarray, categorical: list[int]) -> FeatureStats:
        """Both side tests, on the same reference."""
        tabular = settings.replace(detector="tabular")
        return cls(tabular=_Tabular(reference, tabular, categorical), psi=_PSI(reference, settings))


def psi_edges(reference: np.ndarray, bins: int) -> list[np.ndarray]:
    """Inner bin edges per column at the reference's quantiles (fewer where values repeat)."""
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    return [np.unique(np.quantile(reference[:, j], quantiles)) for j in range(reference.shape[1])]


def psi(reference: np.ndarray, current: np.ndarray, edges: np.ndarray) -> float:
    """PSI of one feature: sum over bins of (current - reference share) * ln(current / reference share)."""
    return _psi(_shares(reference, edges), _shares(current, edges))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return np.maximum(counts / max(values.size, 1), _EPS)


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    return float(np.sum((current - reference) * np.log(current / reference)))


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    """alibi-detect's result with numpy values turned into JSON-ready ones."""
    meta = {k: _json(v) for k, v in result["meta"].items()}
    meta["data_type"] = meta.get("data_type") or "tabular"
    return {"meta": meta, "data": {k: _json(v) for k, v in result["data"].items()}}


def _json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
