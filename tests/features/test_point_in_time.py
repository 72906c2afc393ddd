"""Training's reads are point-in-time correct: no feature value from after a label's time, none past the TTL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from feature_store_helpers import features_config

from kfkit.data.sources import load
from kfkit.features.offline import write_offline_source
from kfkit.features.training import historical_features, historical_frame

pytestmark = pytest.mark.slow  # feast takes seconds to import

PLANTED = 123456.0


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A frame with one later, planted transaction of a card (amount 123456), written as the offline source."""
    root = tmp_path_factory.mktemp("pit")
    cfg = features_config(root / "repo", "dataset.n_rows=800", "features.ttl_s=3600")
    frame = load(cfg.dataset)
    card = int(frame.card_id.value_counts().index[0])  # the card with most transactions
    rows = frame[frame.card_id == card].sort_values("event_timestamp")
    before = rows.iloc[len(rows) // 2]  # a label with later transactions of the same card
    plant = before.copy()
    plant["event_timestamp"] = before.event_timestamp + pd.Timedelta(seconds=1)
    plant["amount"], plant["is_fraud"] = np.float32(PLANTED), 0
    frame = pd.concat([frame, plant.to_frame().T.astype(frame.dtypes.to_dict())], ignore_index=True)
    write_offline_source(frame, cfg, root / "data")
    return cfg, frame, card, before


def test_a_planted_future_value_is_excluded(planted):
    cfg, frame, card, before = planted
    joined = historical_frame(cfg)
    assert len(joined) == len(frame)
    assert (joined.card_id.to_numpy() == frame.card_id.to_numpy()).all()  # rows come back in the labels' order
    mine = joined[joined.card_id == card]
    seen = mine[mine.amount == np.float32(PLANTED)].event_timestamp
    # Only rows at or after the planted time see it: the planted row itself, nothing earlier.
    assert len(seen) == 1 and seen.iloc[0] == before.event_timestamp + pd.Timedelta(seconds=1)
    earlier = mine[mine.event_timestamp <= before.event_timestamp]
    assert len(earlier) >= 2 and (earlier.amount != np.float32(PLANTED)).all()
    at_label = mine[mine.event_timestamp == before.event_timestamp].iloc[0]
    assert at_label.amount == np.float32(before.amount) and at_label.v01 == np.float32(before.v01)


def test_every_label_gets_its_own_transaction_features(planted):
    cfg, frame, _card, _before = planted
    joined = historical_frame(cfg)
    features = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
    np.testing.assert_array_equal(joined[features].to_numpy(), frame[features].to_numpy(np.float32))
    assert list(joined.columns) == [*features, "card_id", "event_timestamp", "is_fraud"]


def test_values_older_than_the_ttl_are_not_joined(planted):
    cfg, _frame, card, before = planted
    planted_at = before.event_timestamp + pd.Timedelta(seconds=1)
    asks = pd.DataFrame({"card_id": [card, card, card],
                         "event_timestamp": [planted_at - pd.Timedelta(milliseconds=500),  # before it: not yet
                                             planted_at + pd.Timedelta(minutes=30),  # within the 1 h ttl
                                             planted_at + pd.Timedelta(hours=2)]})  # fmt: skip
    nxt = _next_after(planted, planted_at)
    joined = historical_features(cfg.features.repo_path, asks)
    assert joined.amount.iloc[0] == np.float32(before.amount)
    if nxt is None or nxt > planted_at + pd.Timedelta(minutes=30):
        assert joined.amount.iloc[1] == np.float32(PLANTED)
    if nxt is None or nxt > planted_at + pd.Timedelta(hours=2):
        assert np.isnan(joined.amount.iloc[2])  # nothing within the ttl: NaN, never an older value


def _next_after(planted, when):
    _cfg, frame, card, _before = planted
    later = frame[(frame.card_id == card) & (frame.event_timestamp > when)].event_timestamp
    return later.min() if len(later) else None
