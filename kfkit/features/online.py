"""The transformer's online lookup: entity ids in, model inputs out (Feast's online store, the shared preprocess)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit import errors
from kfkit.features.preprocess import preprocess
from kfkit.features.spec import SPEC_FILE, load_spec
from kfkit.features.staleness import stale_ids

if TYPE_CHECKING:  # feast and numpy load only when a lookup is built
    import numpy as np

__all__ = ["OnlineFeatureLookup", "FeatureRows"]

_log = logging.getLogger(__name__)
_MAX_LISTED = 10  # ids quoted in one error message


@dataclass
class FeatureRows:
    """What one lookup found.

    Attributes:
        rows: Model inputs, float32 ``[len(ids), n_features]`` in the model's order, after the shared preprocess.
        stale: ``(id, age_s)`` of rows past the TTL that were kept (stale_policy=flag); empty otherwise.
    """

    rows: np.ndarray
    stale: list[tuple[Any, float]] = field(default_factory=list)


class OnlineFeatureLookup:
    """The model's features for a batch of entity ids, read from a Feast repository's online store.

    Built once per process: it opens the store, finds the feature view of each of the model's features and
    checks they share one entity join key. A lookup reads each view through the online store's own
    ``online_read`` (the same SQLite or Redis code Feast's ``get_online_features`` ends in), skipping the
    feature server's per-call resolution of services, views and entity rows: that resolution costs most of
    the few milliseconds a Feast lookup takes. The rows then go through
    :func:`kfkit.features.preprocess.preprocess` with the repository's transforms (``kfkit_features.json``),
    the function training used, and the view's TTL is enforced here (Feast's online reads do not).
    """

    def __init__(
        self,
        repo_path: str | Path,
        feature_names: Sequence[str],
        *,
        feature_service: str | None = None,
        stale_policy: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Open the store and resolve the features.

        Args:
            repo_path: Folder holding ``feature_store.yaml`` (applied and materialized).
            feature_names: The model's input features, in the model's order (``model.json``).
            feature_service: A registered FeatureService whose views to read (default: one that covers all
                features, if any; else each feature's only view).
            stale_policy: ``reject`` or ``flag`` rows past the TTL; default the repository's (reject).
            clock: Current UTC time, for staleness (tests move it).

        Raises:
            kfkit.errors.ConfigError: the repository cannot be opened, a feature is in no feature view (or in
                several), the views disagree on the entity key, ``feature_service`` is unknown or lacks
                features, or ``stale_policy`` is unknown.
        """
        from kfkit.features.repo import open_store

        self.repo_path = Path(repo_path)
        self.feature_names = list(feature_names)
        self.store = open_store(self.repo_path)
        spec = load_spec(self.repo_path) if (self.repo_path / SPEC_FILE).is_file() else None
        self.transforms = dict(spec.transforms) if spec else {}  # a plain Feast repo has no kfkit transforms
        self.stale_policy = stale_policy or (spec.stale_policy if spec else "reject")
        if self.stale_policy not in ("reject", "flag"):
            raise errors.ConfigError(f"stale policy {self.stale_policy!r} is not one of reject, flag")
        self.clock = clock or (lambda: datetime.now(UTC))
        try:
            views = {view.name: view for view in self.store.list_feature_views()}
            services = {service.name: service for service in self.store.list_feature_services()}
        except Exception as e:  # feast raises many unrelated types for a broken registry
            raise errors.ConfigError(f"cannot read the Feast registry of {self.repo_path}: {e}") from e
        self.feature_service = self._pick_service(feature_service, services)
        allowed = None
        if self.feature_service is not None:
            allowed = {p.name for p in services[self.feature_service].feature_view_projections}
        homes = self._resolve_views({n: v for n, v in views.items() if allowed is None or n in allowed})
        self.entity_key, self.entity_type = self._entity_key(set(homes.values()), views)
        # Per view: the table, the features asked of it, and where each lands in the model's order.
        self._reads = []
        for name in dict.fromkeys(homes.values()):
            wanted = [f for f in self.feature_names if homes[f] == name]
            self._reads.append((views[name], wanted, [self.feature_names.index(f) for f in wanted]))
        ttls = [int(views[name].ttl.total_seconds()) for name in set(homes.values()) if views[name].ttl]
        self.ttl_s = min((t for t in ttls if t > 0), default=0)  # 0: no view expires its rows
        self._provider = self.store._get_provider()  # Feast's public read re-resolves per call (see class doc)
        self._integer = "int" in str(self.entity_type).lower()

    def _resolve_views(self, views: dict[str, Any]) -> dict[str, str]:
        homes: dict[str, list[str]] = {name: [] for name in self.feature_names}
        for view in views.values():
            for feature in view.features:
                if feature.name in homes:
                    homes[feature.name].append(view.name)
        if missing := [name for name, found in homes.items() if not found]:
            raise errors.ConfigError(
                f"features {missing[:_MAX_LISTED]} of the model are in no feature view of {self.repo_path} "
                f"(views: {sorted(views)}); add them to a feature view and run `kfkit features apply`"
            )
        if doubled := {name: found for name, found in homes.items() if len(found) > 1}:
            raise errors.ConfigError(
                f"features in several feature views: {doubled}; pass --feature-service naming the views to use"
            )
        return {name: found[0] for name, found in homes.items()}

    def _entity_key(self, view_names: set[str], views: dict[str, Any]) -> tuple[str, Any]:
        keys = {column.name for name in view_names for column in views[name].entity_columns}
        if len(keys) != 1:
            raise errors.ConfigError(
                f"the model's features come from views {sorted(view_names)} keyed by {sorted(keys) or 'no entity'}; "
                "the transformer needs all of them keyed by one entity join key"
            )
        key = keys.pop()
        column = next(c for name in view_names for c in views[name].entity_columns if c.name == key)
        return key, column.dtype

    def _pick_service(self, wanted: str | None, services: dict[str, Any]) -> str | None:
        def covered(service: Any) -> set[str]:
            return {f.name for projection in service.feature_view_projections for f in projection.features}

        if wanted is not None:
            if wanted not in services:
                raise errors.ConfigError(
                    f"--feature-service {wanted!r} is not registered in {self.repo_path} (have {sorted(services)})"
                )
            if missing := [n for n in self.feature_names if n not in covered(services[wanted])]:
                raise errors.ConfigError(
                    f"feature service {wanted!r} lacks the model's features {missing[:_MAX_LISTED]}"
                )
            return wanted
        return next((name for name, s in sorted(services.items()) if set(self.feature_names) <= covered(s)), None)

    def check_ids(self, ids: Sequence[Any], where: str) -> list[Any]:
        """Entity ids as the online store wants them (ints for an integer key).

        Raises:
            kfkit.errors.InvalidInput: an id has the wrong type for the entity key.
        """
        checked = []
        for i, value in enumerate(ids):
            ok = (
                isinstance(value, int) and not isinstance(value, bool)
                if self._integer
                else isinstance(value, str | int)
            )
            if not ok:
                kind = "an integer" if self._integer else "a string"
                raise errors.InvalidInput(
                    f"{where}[{i}]: {self.entity_key} {value!r} is not {kind}; send {self.entity_key} ids as "
                    f"{'JSON integers' if self._integer else 'strings'}"
                )
            checked.append(value if self._integer else str(value))
        return checked

    def raw_rows(self, ids: Sequence[Any]) -> tuple[np.ndarray, list[datetime | None], dict[Any, list[str]]]:
        """Stored values for unique ``ids``, before preprocessing.

        Returns:
            float32 rows with NaN where nothing is stored, each id's oldest event time over the views (None:
            no row), and id -> the names of the features it lacks.
        """
        import numpy as np
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        field_name = "int64_val" if self._integer else "string_val"
        keys = [EntityKey(join_keys=[self.entity_key], entity_values=[Value(**{field_name: v})]) for v in ids]
        nan = float("nan")
        values_of = [[nan] * len(self.feature_names) for _ in ids]  # lists, then one array: cheaper per value
        times: list[datetime | None] = [None] * len(ids)
        for view, wanted, columns in self._reads:
            # A copy of the names: Feast's Redis store appends its timestamp key to the list it is given.
            found = self._provider.online_read(config=self.store.config, table=view, entity_keys=keys,
                                               requested_features=list(wanted))  # fmt: skip
            for i, (when, values) in enumerate(found):
                if not values:
                    continue
                row, stored = values_of[i], False
                for name, column in zip(wanted, columns, strict=True):
                    value = values.get(name)
                    kind = value.WhichOneof("val") if value is not None else None
                    if kind is not None:
                        row[column] = getattr(value, kind)
                        stored = True
                if not stored or when is None:  # Redis answers an unknown key with empty values at time 0
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)  # SQLite keeps UTC without a zone
                times[i] = when if times[i] is None or when < times[i] else times[i]
        raw = np.array(values_of, dtype=np.float32).reshape(len(ids), len(self.feature_names))
        lacking = {
            ids[i]: [self.feature_names[j] for j in np.flatnonzero(np.isnan(raw[i]))]
            for i in np.flatnonzero(np.isnan(raw).any(axis=1))
        }
        return raw, times, lacking

    def lookup(self, ids: Sequence[Any]) -> FeatureRows:
        """Model inputs for ``ids`` (repeats allowed), from the online store through the shared preprocess.

        Raises:
            EntityNotFound: some ids have no row, an incomplete row, or (stale_policy=reject) a row past the
                TTL; the message names which ids are which (404).
        """
        unique = list(dict.fromkeys(ids))
        raw, times, lacking = self.raw_rows(unique)
        stale = stale_ids(unique, times, ttl_s=self.ttl_s, now=self.clock())
        stale = [(value, age) for value, age in stale if value not in lacking]
        if lacking or (stale and self.stale_policy == "reject"):
            raise errors.EntityNotFound(
                self._not_found(unique, lacking, times, stale), [*lacking, *(s for s, _ in stale)]
            )
        rows = preprocess(raw, self.feature_names, self.transforms)
        position = {value: i for i, value in enumerate(unique)}
        return FeatureRows(rows[[position[value] for value in ids]], stale)

    def _not_found(
        self, unique: list, lacking: dict[Any, list[str]], times: list, stale: list[tuple[Any, float]]
    ) -> str:
        def listed(values: list) -> str:
            return ", ".join(map(repr, values[:_MAX_LISTED])) + (" ..." if len(values) > _MAX_LISTED else "")

        absent = [v for i, v in enumerate(unique) if v in lacking and times[i] is None]
        partial = [v for i, v in enumerate(unique) if v in lacking and times[i] is not None]
        parts = []
        if absent:
            parts.append(f"{self.entity_key} {listed(absent)} not found in the online store")
        if partial:
            example = lacking[partial[0]][:5]
            parts.append(f"{self.entity_key} {listed(partial)} have incomplete rows (e.g. no {example})")
        if stale:
            ages = ", ".join(f"{v!r} ({age / 86400:.1f} d old)" for v, age in stale[:_MAX_LISTED])
            parts.append(f"{self.entity_key} {ages} are stale (ttl {self.ttl_s} s)")
        bad = len(lacking) + len(stale)
        return (
            "; ".join(parts) + f" ({bad} of {len(unique)} ids); materialize the store (`kfkit features materialize`) "
            "or send the raw features instead"
        )
