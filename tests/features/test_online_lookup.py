"""The online lookup on both stores: training's rows, and missing, partial and stale ids named, never defaulted."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from feature_store_helpers import features_config, redis_server

from kfkit.data.sources import load
from kfkit.errors import EntityNotFound
from kfkit.features.offline import write_offline_source
from kfkit.features.online import OnlineFeatureLookup
from kfkit.features.repo import materialize
from kfkit.features.training import historical_frame

pytestmark = pytest.mark.slow  # feast takes seconds to import

TTL_S = 7 * 86400
MISSING = 987654321


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def store(request, tmp_path_factory):
    """A materialized repository on each online store; one card's latest row has a NaN amount (partial)."""
    root = tmp_path_factory.mktemp(f"online-{request.param}")
    with redis_server(root / "redis") if request.param == "redis" else contextlib.nullcontext() as redis:
        cfg = features_config(root / "repo", "dataset.n_rows=600", f"features.ttl_s={TTL_S}",
                              "+features.transforms.amount=log1p", store=request.param,
                              redis_port=redis.port if redis else None)  # fmt: skip
        frame = load(cfg.dataset)
        latest = frame.sort_values("event_timestamp").groupby("card_id").tail(1)
        partial = int(latest.card_id.iloc[0])
        frame.loc[latest.index[0], "amount"] = np.nan
        write_offline_source(frame, cfg, root / "data")
        end = frame.event_timestamp.max().to_pydatetime() + timedelta(seconds=1)
        materialize(cfg.features.repo_path, end=end)
        training = historical_frame(cfg)
        yield cfg, training, partial, end


def _lookup(cfg, end, *, days_later: float = 0, policy: str | None = None) -> OnlineFeatureLookup:
    features = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
    now = end + timedelta(days=days_later)
    return OnlineFeatureLookup(cfg.features.repo_path, features, stale_policy=policy, clock=lambda: now)


def test_online_rows_equal_the_training_rows_exactly(store):
    cfg, training, partial, end = store
    lookup = _lookup(cfg, end)
    assert lookup.transforms == {"amount": "log1p"} and lookup.ttl_s == TTL_S
    latest = training.sort_values("event_timestamp").groupby("card_id").tail(1)
    fresh = latest.event_timestamp > pd.Timestamp(end) - pd.Timedelta(seconds=TTL_S)
    latest = latest[(latest.card_id != partial) & fresh].head(40)
    assert len(latest) >= 10
    ids = latest.card_id.astype(int).tolist()
    found = lookup.lookup(ids)
    np.testing.assert_array_equal(found.rows, latest[lookup.feature_names].to_numpy(np.float32))
    assert found.stale == []
    # Repeats and order follow the request.
    again = lookup.lookup([ids[1], ids[0], ids[1]]).rows
    np.testing.assert_array_equal(again, found.rows[[1, 0, 1]])


def test_a_batch_with_missing_and_partial_ids_names_each(store):
    cfg, training, partial, end = store
    good = int(training.card_id[training.card_id != partial].iloc[0])
    with pytest.raises(EntityNotFound) as info:
        _lookup(cfg, end).lookup([good, MISSING, partial, MISSING + 1])
    message = str(info.value)
    assert info.value.status_code == 404
    assert f"card_id {MISSING}, {MISSING + 1} not found" in message
    assert f"card_id {partial} have incomplete rows (e.g. no ['amount'])" in message
    assert f"{good}" not in message.replace(f"{MISSING}", "").replace(f"{partial}", "")
    assert sorted(info.value.missing) == sorted([MISSING, MISSING + 1, partial])


def test_stale_rows_are_rejected_or_flagged_never_defaulted(store):
    cfg, training, partial, end = store
    latest = training.sort_values("event_timestamp").groupby("card_id").tail(1)
    latest = latest[latest.card_id != partial]
    newest = latest.sort_values("event_timestamp").iloc[-1]
    oldest = latest.sort_values("event_timestamp").iloc[0]
    ids = [int(newest.card_id), int(oldest.card_id)]
    # A day after the newest row, the oldest card's row is weeks old, the newest one's is fresh.
    age_days = (end - oldest.event_timestamp.to_pydatetime()).total_seconds() / 86400 + 1
    assert age_days * 86400 > TTL_S
    with pytest.raises(EntityNotFound) as info:
        _lookup(cfg, end, days_later=1).lookup(ids)
    message = str(info.value)
    assert f"{int(oldest.card_id)} ({age_days:.1f} d old)" in message and f"stale (ttl {TTL_S} s)" in message
    assert f"{int(newest.card_id)} (" not in message
    flagged = _lookup(cfg, end, days_later=1, policy="flag").lookup(ids)
    assert [value for value, _ in flagged.stale] == [int(oldest.card_id)]
    # Flagged rows carry the stored values, not a default.
    expected = pd.DataFrame([newest, oldest])[_lookup(cfg, end).feature_names]
    np.testing.assert_array_equal(flagged.rows, expected.to_numpy(np.float32))
