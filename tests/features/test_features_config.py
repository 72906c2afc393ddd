"""features.* config: the checks, and the feature_store.yaml generated from it."""

from __future__ import annotations

import pytest
import yaml

from kfkit.config import compose
from kfkit.errors import ConfigError
from kfkit.features.repo import feature_store_yaml


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("features.online_store=memcached", "features.online_store='memcached' is not one of sqlite, redis"),
        ("features.stale_policy=ignore", "features.stale_policy='ignore' is not one of reject, flag"),
        ("features.ttl_s=-1", "features.ttl_s=-1 must not be negative"),
        ("features.view=card-features", "features.view='card-features' must be letters"),
        ("features.redis.port=70000", "features.redis.port=70000 is not a TCP port"),
        ("+features.transforms.amount=sqrt", "features.transforms.amount='sqrt' is not one of identity, log1p"),
    ],
)
def test_bad_values_are_named(override, fragment):
    with pytest.raises(ConfigError) as info:
        compose(["dataset=synthetic_fraud", override])
    assert fragment in str(info.value)


def test_enabled_needs_an_entity_and_a_timestamp():
    with pytest.raises(ConfigError, match="features.enabled=true needs an entity and a timestamp column"):
        compose(["features.enabled=true"])  # breast_cancer has neither
    assert compose(["dataset=synthetic_fraud", "features.enabled=true"]).features.enabled


def test_store_yaml_follows_the_config(tmp_path):
    sqlite = yaml.safe_load(feature_store_yaml(compose(["features.project=fraud"]).features))
    assert sqlite["project"] == "fraud" and sqlite["online_store"] == {"type": "sqlite", "path": "online.db"}
    assert sqlite["offline_store"] == {"type": "file"} and sqlite["registry"] == "registry.db"
    redis = compose(["features.online_store=redis", "features.redis.host=kfkit-redis-master.kfkit.svc",
                     "features.redis.port=6380", "features.redis.db=2", "features.redis.password_env=REDIS_PASSWORD",
                     "features.redis.ssl=true"]).features  # fmt: skip
    online = yaml.safe_load(feature_store_yaml(redis))["online_store"]
    # The password stays an environment reference: Feast expands it when it opens the store.
    assert online["type"] == "redis"
    assert online["connection_string"] == "kfkit-redis-master.kfkit.svc:6380,db=2,ssl=true,password=${REDIS_PASSWORD}"
