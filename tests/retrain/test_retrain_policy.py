"""The trigger's rule: K of the last M windows, one retrain per burst, a cooldown, redeliveries counted once."""

import pytest
from retrain_events import drift_event

from kfkit.config import RetrainConfig
from kfkit.errors import ConfigError, InvalidInput
from kfkit.retrain import RetrainPolicy, check_retrain, parse_drift_event
from kfkit.retrain.events import DriftEvent


def _event(window, is_drift=True, **kwargs) -> DriftEvent:
    return parse_drift_event(*drift_event(window, is_drift=is_drift, **kwargs))


def _policy(k=3, m=5, cooldown_s=0.0, capacity=100) -> RetrainPolicy:
    return RetrainPolicy(min_drifted=k, window_span=m, cooldown_s=cooldown_s, dedup_capacity=capacity)


def _actions(policy, windows, now=0.0, **kwargs):
    return [policy.observe(_event(w, drift, **kwargs), now=now).action for w, drift in windows]


def test_a_burst_of_drifted_windows_retrains_once():
    policy = _policy()
    actions = _actions(policy, [(w, True) for w in range(12)])
    assert actions == ["hold", "hold", "retrain"] + ["burst"] * 9
    assert policy.counts["retrain"] == 1


def test_k_of_the_last_m_windows():
    # 3 drifted among windows 0..4 (no-drift windows reported): fires on the third
    assert _actions(_policy(), [(0, True), (1, False), (2, True), (3, False), (4, True)]) == [
        "hold",
        "no_drift",
        "hold",
        "no_drift",
        "retrain",
    ]
    # never 3 within any 5 consecutive windows: never fires
    assert "retrain" not in _actions(_policy(), [(w, w % 3 == 0) for w in range(30)])


def test_windows_the_detector_did_not_report_count_as_no_drift():
    # the detector sends drifted windows only: windows 2..9 were tested and did not drift
    policy = _policy()
    assert _actions(policy, [(0, True), (1, True), (10, True), (11, True)]) == ["hold", "hold", "hold", "hold"]
    decision = policy.observe(_event(12), now=0)
    assert decision.action == "retrain"
    assert decision.drifted_windows == [10, 11, 12] and decision.windows == [8, 9, 10, 11, 12]
    assert "windows 10, 11, 12" in decision.reason and "mean_radius, mean_texture" in decision.reason


def test_a_new_burst_after_the_old_one_ended_retrains_again():
    policy = _policy()
    first = _actions(policy, [(w, True) for w in range(5)])
    calm = _actions(policy, [(w, False) for w in range(5, 10)])
    second = _actions(policy, [(w, True) for w in range(10, 14)])
    assert first.count("retrain") == 1 and set(calm) == {"no_drift"}
    assert second == ["hold", "hold", "retrain", "burst"]


def test_the_burst_ends_across_a_gap_of_unreported_windows():
    policy = _policy()
    _actions(policy, [(w, True) for w in range(3)])  # retrain at 2
    # windows 3..19 unreported (no drift): the burst ended; 20, 21, 22 are a new one
    assert _actions(policy, [(20, True), (21, True), (22, True)]) == ["hold", "hold", "retrain"]


def test_cooldown_holds_a_second_burst_until_it_has_passed():
    policy = _policy(cooldown_s=3600)
    assert _actions(policy, [(w, True) for w in range(3)], now=0)[-1] == "retrain"
    _actions(policy, [(w, False) for w in range(3, 8)], now=50)
    during = _actions(policy, [(w, True) for w in range(8, 12)], now=100)
    assert during == ["hold", "hold", "cooldown", "cooldown"]
    decision = policy.observe(_event(12), now=3601)  # the burst went on past the cooldown
    assert decision.action == "retrain"
    assert policy.cooldown_until() == 3601 + 3600


def test_no_retrain_while_one_runs_and_the_burst_counts_as_answered():
    policy = _policy()
    actions = [policy.observe(_event(w), now=0, running=True).action for w in range(4)]
    assert actions == ["hold", "hold", "running", "burst"]


def test_the_same_event_delivered_ten_times_counts_once():
    policy = _policy(k=1, m=1)
    actions = [policy.observe(_event(0), now=0).action for _ in range(10)]
    assert actions == ["retrain"] + ["duplicate"] * 9
    assert policy.counts["duplicate"] == 9


def test_remembered_ids_are_bounded():
    policy = _policy(capacity=3)
    for w in range(10):
        policy.observe(_event(w, is_drift=False), now=0)
    assert len(policy.to_state()["seen"]) == 3
    assert policy.observe(_event(9, is_drift=False), now=0).action == "duplicate"  # the latest are kept


def test_a_window_older_than_the_span_is_stale():
    policy = _policy()
    _actions(policy, [(10, False)])
    assert policy.observe(_event(4), now=0).action == "stale"
    assert policy.observe(_event(7), now=0).action == "hold"  # late but inside the span: counted


def test_streams_are_separate_per_version_and_kind():
    policy = _policy(k=2, m=3)
    assert _actions(policy, [(0, True)], version="1") == ["hold"]
    assert _actions(policy, [(1, True)], version="2") == ["hold"]  # another version: its own history
    assert _actions(policy, [(1, True)], version="1", kind="performance") == ["hold"]
    assert _actions(policy, [(1, True)], version="1") == ["retrain"]


def test_state_round_trip_keeps_latch_ids_and_cooldown():
    policy = _policy(cooldown_s=60)
    _actions(policy, [(w, True) for w in range(3)], now=10)
    restored = _policy(cooldown_s=60)
    restored.load_state(policy.to_state())
    assert restored.observe(_event(2), now=20).action == "duplicate"
    assert restored.observe(_event(3), now=20).action == "burst"
    assert restored.cooldown_until() == 70


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_drifted": 6}, "retrain.min_drifted=6 must be between 1 and retrain.window_span=5"),
        ({"min_drifted": 0}, "retrain.min_drifted=0"),
        ({"window_span": 0, "min_drifted": 0}, "retrain.window_span=0 must be at least 1"),
        ({"cooldown_s": -1}, "retrain.cooldown_s=-1 must be >= 0"),
        ({"dedup_capacity": 0}, "retrain.dedup_capacity=0"),
        ({"port": 70000}, "retrain.port=70000 is not a TCP port"),
        ({"kfp_pipeline_id": "p"}, "set both or neither"),
    ],
)
def test_settings_out_of_bounds_name_themselves(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_retrain(RetrainConfig(**changes))


def test_performance_events_count_in_arrival_order():
    # the detector gives each one the open data window's index, the same while labels come without traffic
    policy = _policy()
    actions = [
        policy.observe(_event(7, kind="performance", event_id=f"m-1-p{n}-performance"), now=0).action
        for n in range(1, 5)
    ]
    assert actions == ["hold", "hold", "retrain", "burst"]


def test_a_performance_event_with_null_statistics_is_taken():
    headers, _ = drift_event(3, kind="performance")
    body = (
        b'{"meta": {"name": "RollingPerformance"}, "data": {"is_drift": 1, "p_val": null, "threshold": null, '
        b'"distance": null}, "kfkit": {"window": 3, "metrics": {"accuracy": 0.6, "roc_auc": null}}}'
    )
    event = parse_drift_event(headers, body)
    assert (event.kind, event.window, event.metrics, event.p_val) == ("performance", 3, {"accuracy": 0.6}, None)


def test_structured_mode_is_taken_too():
    import json

    headers, body = drift_event(4)
    envelope = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")} | {"data": json.loads(body)}
    event = parse_drift_event({"content-type": "application/cloudevents+json"}, json.dumps(envelope).encode())
    assert (event.window, event.subject, event.drifted_features) == (4, "breast-cancer-mlp/1", FEATURES_2)


FEATURES_2 = ["mean_radius", "mean_texture"]


@pytest.mark.parametrize(
    ("change", "status", "phrase"),
    [
        ({"drop": "ce-id"}, 400, "ce-id"),
        ({"drop": "ce-type"}, 400, "ce-type"),
        ({"headers": {"ce-type": "org.kubeflow.serving.inference.request"}}, 400, "not a drift event"),
        ({"headers": {"content-type": "text/plain"}}, 415, "application/json"),
        ({"body": b"{not json"}, 400, "not valid JSON"),
        ({"body": b"[1, 2]"}, 400, "a list, not a JSON object"),
        ({"body": b'{"data": {}}'}, 400, "no data.is_drift"),
        ({"body": b'{"data": {"is_drift": "yes"}}'}, 400, "data.is_drift is 'yes'"),
        ({"body": b'{"data": {"is_drift": 1}, "kfkit": {"window": -1}}'}, 400, "kfkit.window is -1"),
        ({"body": b'{"data": {"is_drift": 1}, "kfkit": {"drifted_features": "v02"}}'}, 400, "list of feature names"),
        ({"body": b'{"data": {"is_drift": 1, "p_val": "low"}}'}, 400, "data.p_val"),
    ],
)
def test_malformed_events_are_4xx_naming_the_problem(change, status, phrase):
    headers, body = drift_event(1)
    headers.pop(change.get("drop", ""), None)
    headers.update(change.get("headers", {}))
    with pytest.raises(InvalidInput) as caught:
        parse_drift_event(headers, change.get("body", body))
    assert caught.value.status_code == status
    assert phrase in str(caught.value)
