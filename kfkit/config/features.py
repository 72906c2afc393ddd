"""Config groups for the Feast feature repository: one repository feeds training and serving."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from kfkit.errors import ConfigError

__all__ = ["FeaturesConfig", "RedisConfig", "ONLINE_STORES", "STALE_POLICIES", "TRANSFORMS", "check"]

ONLINE_STORES = ("sqlite", "redis")
STALE_POLICIES = ("reject", "flag")
TRANSFORMS = ("identity", "log1p")
"""Names ``features.transforms`` accepts (kfkit.features.preprocess implements them)."""
_FEAST_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class RedisConfig:
    """Where the Redis online store is (features.online_store=redis)."""

    host: str = "127.0.0.1"
    """Redis host; on a cluster the Helm chart's optional Redis Service, e.g. kfkit-redis-master.kfkit.svc."""
    port: int = 6379
    """Redis port."""
    db: int = 0
    """Redis database number."""
    password_env: Optional[str] = None
    """Environment variable holding the Redis password (written into feature_store.yaml as ${VAR}, which
    Feast expands when it opens the store, so no secret lands on disk); None = no password."""
    ssl: bool = False
    """Connect with TLS."""


@dataclass
class FeaturesConfig:
    """The Feast feature repository generated from the dataset schema (``kfkit features apply``).

    Training reads its features from it by point-in-time historical retrieval; the transformer reads the
    same features online by entity id; both pass them through one function (kfkit.features.preprocess).
    """

    enabled: bool = False
    """Prep writes the Feast offline source and trains on features read back from Feast (point in time)."""
    repo_path: str = "${work_dir}/feature_repo"
    """Folder of the generated Feast repository (feature_store.yaml, kfkit_features.json, registry)."""
    project: str = "kfkit"
    """Feast project name (letters, digits, '_')."""
    entity: str = "card"
    """Name of the Feast entity; its join key is dataset.entity_column."""
    view: str = "transactions"
    """Name of the feature view holding the model's features (also the FeatureService's name)."""
    online_store: str = "sqlite"
    """Online store: sqlite (a file in repo_path, the local default) or redis (features.redis.*)."""
    redis: RedisConfig = field(default_factory=RedisConfig)
    """Redis connection, for online_store=redis."""
    ttl_s: int = 0
    """Feature view TTL in seconds. Training: no feature older than this before the label's time is joined.
    Serving: a row whose event time is older than this is stale (stale_policy). 0 = values never expire."""
    stale_policy: str = "reject"
    """What serving does with a stale row: reject (404 naming the ids and their age) or flag (score it and
    name the ids in the response header kfkit-stale-entities)."""
    transforms: dict[str, str] = field(default_factory=dict)
    """Per-feature transform applied by the one preprocessing function of training and serving, e.g.
    {amount: log1p}; features not named pass through (identity)."""
    check_sample: int = 100
    """Entities `kfkit features serve-check` compares between the offline and the online store."""


def check(features: FeaturesConfig) -> None:
    """Check the ``features`` group (that the dataset has the columns it needs: ``kfkit.config.validate``).

    Raises:
        ConfigError: naming the key, the value, and what would be accepted.
    """
    if features.online_store not in ONLINE_STORES:
        raise ConfigError(f"features.online_store={features.online_store!r} is not one of {', '.join(ONLINE_STORES)}")
    if features.stale_policy not in STALE_POLICIES:
        raise ConfigError(f"features.stale_policy={features.stale_policy!r} is not one of {', '.join(STALE_POLICIES)}")
    for key in ("project", "entity", "view"):
        value = getattr(features, key)
        if not _FEAST_NAME.fullmatch(value):
            raise ConfigError(f"features.{key}={value!r} must be letters, digits and '_' (Feast names), e.g. card")
    for key, value in (("ttl_s", features.ttl_s), ("redis.db", features.redis.db)):
        if value < 0:
            raise ConfigError(f"features.{key}={value} must not be negative (features.ttl_s=0: never expires)")
    if not 0 < features.redis.port < 65536:
        raise ConfigError(f"features.redis.port={features.redis.port} is not a TCP port (1-65535)")
    if features.check_sample < 1:
        raise ConfigError(f"features.check_sample={features.check_sample} must be at least 1")
    for name, transform in features.transforms.items():
        if transform not in TRANSFORMS:
            raise ConfigError(
                f"features.transforms.{name}={transform!r} is not one of {', '.join(TRANSFORMS)} (e.g. log1p)"
            )
