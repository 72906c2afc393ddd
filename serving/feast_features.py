"""Online feature lookup for the transformer: entity ids in, the model's feature rows out, from a Feast store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit import errors

if TYPE_CHECKING:  # feast and numpy load only when a lookup is built
    import numpy as np

__all__ = ["OnlineFeatureLookup"]

_log = logging.getLogger(__name__)
_MAX_LISTED = 10  # ids quoted in one error message


class OnlineFeatureLookup:
    """The model's features for a batch of entity ids, read from a Feast repository's online store.

    Built once per process: it opens the store, finds where each of the model's features lives, and
    checks they share one entity join key. A registered FeatureService covering every feature is used
    when there is one (``feature_service`` names it, or the first one that fits is picked): Feast 0.47
    resolves a plain list of feature references one reference at a time, which costs about ten times
    more per lookup for a 30-feature model.
    """

    def __init__(self, repo_path: str | Path, feature_names: Sequence[str], *, feature_service: str | None = None):
        """Open the store and resolve the features.

        Args:
            repo_path: Folder holding ``feature_store.yaml`` (a Feast repository, already applied and
                materialized).
            feature_names: The model's input features, in the model's order (``model.json``).
            feature_service: A registered FeatureService to read through (default: one that covers all
                features, if any; else feature references).

        Raises:
            kfkit.errors.ConfigError: the repository cannot be opened, a feature is in no feature view
                (or in several), the views disagree on the entity key, or ``feature_service`` is unknown
                or lacks features.
        """
        from feast import FeatureStore

        self.repo_path = Path(repo_path)
        self.feature_names = list(feature_names)
        if not (self.repo_path / "feature_store.yaml").is_file():
            raise errors.ConfigError(
                f"--feast-repo {self.repo_path}: no feature_store.yaml there; point it at the Feast repository "
                "(the folder where `feast apply` was run)"
            )
        try:
            self.store = FeatureStore(repo_path=str(self.repo_path))
            views = {view.name: view for view in self.store.list_feature_views()}
        except Exception as e:  # feast raises many unrelated types for a broken repo/registry
            raise errors.ConfigError(f"cannot open the Feast repository {self.repo_path}: {e}") from e
        refs = self._resolve_refs(views)
        self.entity_key, self.entity_type = self._entity_key({ref.split(":")[0] for ref in refs}, views)
        self.features: Any = refs
        self.feature_service = self._pick_service(feature_service)
        if self.feature_service is not None:
            self.features = self.store.get_feature_service(self.feature_service)
        else:
            _log.warning(
                "no FeatureService covers the model's %d features: looking them up by reference, which Feast "
                "0.47 resolves one at a time (slow); register one and pass --feature-service",
                len(self.feature_names),
            )

    def _resolve_refs(self, views: dict[str, Any]) -> list[str]:
        homes: dict[str, list[str]] = {name: [] for name in self.feature_names}
        for view in views.values():
            for feature in view.features:
                if feature.name in homes:
                    homes[feature.name].append(view.name)
        if missing := [name for name, found in homes.items() if not found]:
            raise errors.ConfigError(
                f"features {missing[:_MAX_LISTED]} of the model are in no feature view of {self.repo_path} "
                f"(views: {sorted(views)}); add them to a feature view and run `feast apply`"
            )
        if doubled := {name: found for name, found in homes.items() if len(found) > 1}:
            raise errors.ConfigError(
                f"features in several feature views: {doubled}; pass --feature-service naming the views to use"
            )
        return [f"{found[0]}:{name}" for name, found in homes.items()]

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

    def _pick_service(self, wanted: str | None) -> str | None:
        services = {service.name: service for service in self.store.list_feature_services()}

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
        integer = "int" in str(self.entity_type).lower()
        checked = []
        for i, value in enumerate(ids):
            ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, str | int)
            if not ok:
                kind = "an integer" if integer else "a string"
                raise errors.InvalidInput(
                    f"{where}[{i}]: {self.entity_key} {value!r} is not {kind}; send {self.entity_key} ids as "
                    f"{'JSON integers' if integer else 'strings'}"
                )
            checked.append(value if integer else str(value))
        return checked

    def lookup(self, ids: Sequence[Any]) -> np.ndarray:
        """Feature rows (float32, ``[len(ids), n_features]``, model order) for ``ids``.

        Raises:
            EntityNotFound: some ids have no complete, unexpired row in the online store.
        """
        import numpy as np

        unique = list(dict.fromkeys(ids))
        table = self.store.get_online_features(
            features=self.features, entity_rows=[{self.entity_key: value} for value in unique]
        ).to_dict()
        columns = [table[name] for name in self.feature_names]
        missing = [value for i, value in enumerate(unique) if any(column[i] is None for column in columns)]
        if missing:
            shown = ", ".join(map(repr, missing[:_MAX_LISTED])) + (" ..." if len(missing) > _MAX_LISTED else "")
            raise errors.EntityNotFound(
                f"{self.entity_key} {shown} not found in the online store ({len(missing)} of {len(unique)} ids; "
                "never materialized, or older than the feature view's ttl); send the raw features instead, "
                "or materialize the store",
                missing,
            )
        found = np.asarray(columns, dtype=np.float32).T  # [unique ids, features]
        position = {value: i for i, value in enumerate(unique)}
        return found[[position[value] for value in ids]]
