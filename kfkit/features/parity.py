"""Training/serving parity: the rows a model trained on against the rows the online lookup returns, exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Mismatch", "ParityReport", "compare_rows", "latest_rows", "serve_check"]


@dataclass(frozen=True)
class Mismatch:
    """One feature of one entity that differs between the offline (training) and the online row."""

    entity: Any
    feature: str
    offline: float
    online: float


@dataclass
class ParityReport:
    """What a parity check compared and found.

    Attributes:
        checked: Entities compared.
        mismatches: Feature values that differ (bit for bit; NaN equals NaN).
        stale: Entities whose online row is past the TTL (compared all the same).
        missing: Entities with no online row at all (their values count as mismatches).
    """

    checked: int
    mismatches: list[Mismatch] = field(default_factory=list)
    stale: list[Any] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every compared value is identical."""
        return not self.mismatches

    def summary(self, limit: int = 5) -> str:
        """One line: the verdict and the first differing features."""
        if self.ok:
            return f"parity ok: {self.checked} entities, every feature identical online and offline"
        if self.missing and len(self.missing) == len({m.entity for m in self.mismatches}):
            return (
                f"{len(self.missing)} of {self.checked} entities are not in the online store "
                f"(e.g. {self.missing[:limit]}): run `kfkit features materialize`"
            )
        features = sorted({m.feature for m in self.mismatches})
        listed = f"{features[:8]}{' ...' if len(features) > 8 else ''}"
        differ = [m for m in self.mismatches if m.entity not in set(self.missing)][:limit]
        shown = "; ".join(f"{m.entity!r}.{m.feature}: offline {m.offline!r} online {m.online!r}" for m in differ)
        entities = len({m.entity for m in self.mismatches})
        return f"SKEW: {entities} of {self.checked} entities differ in features {listed}: {shown}"


def compare_rows(
    ids: Sequence[Any], feature_names: Sequence[str], offline: np.ndarray, online: np.ndarray
) -> list[Mismatch]:
    """Every (entity, feature) whose offline and online values are not the same float32 (NaN == NaN)."""
    import numpy as np

    a, b = np.asarray(offline, dtype=np.float32), np.asarray(online, dtype=np.float32)
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return [
        Mismatch(ids[i], feature_names[j], float(a[i, j]), float(b[i, j]))
        for i, j in zip(*np.nonzero(differ), strict=True)
    ]


def latest_rows(repo: str | Path, frame: pd.DataFrame, sample: int, *, seed: int = 0) -> pd.DataFrame:
    """Up to ``sample`` entities of ``frame`` (entity and timestamp columns), each at its latest event time.

    That is the row the online store holds for the entity once materialized.
    """
    from kfkit.features.spec import load_spec

    spec = load_spec(repo)
    latest = frame.sort_values(spec.timestamp, kind="stable").groupby(spec.join_key, sort=False).tail(1)
    return latest.sample(n=min(sample, len(latest)), random_state=seed).reset_index(drop=True)


def serve_check(
    repo: str | Path, *, sample: int = 100, seed: int = 0, training: pd.DataFrame | None = None
) -> ParityReport:
    """Compare offline (training) rows with the transformer's online lookup for ``sample`` entities.

    The online row is what the lookup reads now, through the shared preprocess. The offline row is, with
    ``training`` (the rows a model was trained on: prep's ``train.parquet``), the training row at each
    entity's latest event time, which catches a repository changed since training (its transforms, say);
    without it, the point-in-time row the repository gives now, which catches the stores disagreeing.

    Raises:
        ConfigError: the repository cannot be opened.
        DatasetError: its offline source cannot be read, or ``training`` holds no entity's latest row.
    """
    import pandas as pd

    from kfkit.errors import DatasetError
    from kfkit.features.online import OnlineFeatureLookup
    from kfkit.features.preprocess import preprocess
    from kfkit.features.spec import load_spec
    from kfkit.features.staleness import stale_ids
    from kfkit.features.training import historical_features

    spec = load_spec(repo)
    key, ts = spec.join_key, spec.timestamp
    try:
        source = pd.read_parquet(spec.source, columns=[key, ts])
    except (OSError, ValueError) as e:
        raise DatasetError(f"offline source {spec.source} cannot be read ({e}); rerun `kfkit features apply`") from e
    latest = latest_rows(repo, source, len(source), seed=seed)
    if training is None:
        picked = latest.sample(n=min(sample, len(latest)), random_state=seed)[[key, ts]]
        offline = historical_features(repo, picked)
    else:
        times = pd.to_datetime(training[ts], utc=True)
        newest = set(zip(latest[key], pd.to_datetime(latest[ts], utc=True), strict=True))
        held = training[[pair in newest for pair in zip(training[key], times, strict=True)]]
        if held.empty:
            raise DatasetError("no training row is its entity's latest in the offline source: nothing to compare")
        offline = held.sample(n=min(sample, len(held)), random_state=seed).reset_index(drop=True)
    ids = offline[key].tolist()
    lookup = OnlineFeatureLookup(repo, spec.features)
    # The lookup's own steps without its verdict, so missing and stale rows are compared too (NaN != value).
    raw, found_at, _lacking = lookup.raw_rows(ids)
    online = preprocess(raw, spec.features, lookup.transforms)
    report = ParityReport(len(ids), compare_rows(ids, spec.features, offline[spec.features].to_numpy(), online))
    report.stale = [value for value, _ in stale_ids(ids, found_at, ttl_s=lookup.ttl_s, now=lookup.clock())]
    report.missing = [value for value, when in zip(ids, found_at, strict=True) if when is None]
    return report
