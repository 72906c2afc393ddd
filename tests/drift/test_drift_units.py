"""The detector's light parts, in-process: decoding, windows, ingestion, labels, PSI, metrics, state.

These modules need only numpy/scipy and kfkit's standard-library modules, so they run in the main
environment too; the alibi-detect parts are tested in the drift environment (test_drift_service.py).
"""

import json

import numpy as np
import pytest

from kfkit.errors import InvalidInput
from kfkit.serving.drift.decoding import request_rows, response_probabilities
from kfkit.serving.drift.detectors import psi, psi_edges
from kfkit.serving.drift.feedback import Feedback, parse_feedback, rolling_metrics
from kfkit.serving.drift.ingest import REQUEST_EVENT, RESPONSE_EVENT, Ingestor
from kfkit.serving.drift.metrics import Metrics
from kfkit.serving.drift.settings import DriftSettings
from kfkit.serving.drift.state import load_state, save_state
from kfkit.serving.drift.windows import WindowBuffer

NAMES = ["a", "b", "c"]


def v2(rows):
    return {"inputs": [{"name": "features", "shape": [len(rows), 3], "datatype": "FP32", "data": rows}]}


def test_v1_and_v2_requests_give_the_same_rows():
    rows = [[1, 2, 3], [4, 5, 6]]
    expected = np.asarray(rows, dtype=np.float32)
    flat = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]}
    columns = {"inputs": [{"name": n, "shape": [2], "datatype": "FP32", "data": [r[i] for r in rows]}
                          for i, n in enumerate(NAMES)]}  # fmt: skip
    named = {"instances": [dict(zip(NAMES, r, strict=True)) for r in rows]}
    for body in (v2(rows), flat, columns, {"instances": rows}, named):
        np.testing.assert_array_equal(request_rows(body, NAMES), expected)
    assert request_rows(v2([[1, 2, 3]]) | {"id": "x"}, NAMES).shape == (1, 3)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2], "not a V1 or V2"),
        ({"rows": []}, "expected V1"),
        ({"inputs": []}, "non-empty"),
        (v2([[1, 2]]), "shape"),
        ({"inputs": [{"name": "f", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}, "numeric"),
        ({"inputs": [{"name": "f", "shape": [1, 3], "data": [1, "x", 3]}]}, "number"),
        ({"inputs": [{"name": "f", "shape": [1, 3], "data": [1, None, 3]}]}, "NaN"),
        ({"inputs": [{"name": "f", "shape": [1, 3], "data": [1, 1e39, 3]}]}, "float32 range"),
        ({"inputs": [{"name": "f", "shape": [2, 3], "data": [1, 2, 3]}]}, "needs 6 values"),
        ({"inputs": [{"name": "f", "shape": "1x3", "data": [1, 2, 3]}]}, "shape"),
        ({"instances": [{"a": 1, "b": 2}]}, "'c'"),
        ({"instances": [[1, 2, 3], [1, 2]]}, "equal length"),
    ],
)
def test_bad_requests_are_invalid_input_naming_the_problem(body, says):
    with pytest.raises(InvalidInput, match=says):
        request_rows(body, NAMES)


def test_probabilities_from_v1_and_v2_responses():
    v2_body = {"outputs": [{"name": "label", "data": [1, 0]}, {"name": "probability", "data": [0.9, 0.1]}]}
    v1_body = {"predictions": [{"probability": 0.9, "label": 1}, {"probability": 0.1, "label": 0}]}
    for body in (v2_body, v1_body, {"predictions": [0.9, 0.1]}):
        np.testing.assert_allclose(response_probabilities(body), [0.9, 0.1], rtol=1e-6)
    for body, says in (
        ({"predictions": [3.0]}, r"\[0, 1\]"),
        ({"outputs": [{"name": "x"}, {"name": "y"}]}, "none named"),
    ):
        with pytest.raises(InvalidInput, match=says):
            response_probabilities(body)


def test_windows_close_at_size_split_multi_row_requests_and_overlap():
    buffer = WindowBuffer(3, size=4, seconds=0, min_rows=2, overlap=0.5)
    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    closed = buffer.add(rows[:7], now=100.0)  # one 7-row request fills two windows (each reuses 2 rows)
    assert [w.index for w in closed] == [1, 2] and [w.rows.shape[0] for w in closed] == [4, 4]
    np.testing.assert_array_equal(closed[1].rows[:2], rows[2:4])  # the newest half of window 1 starts window 2
    assert buffer.n == 3
    closed = buffer.add(rows[7:], now=101.0)
    assert [w.index for w in closed] == [3, 4] and buffer.n == 2


def test_time_windows_close_after_the_limit_only_with_enough_rows():
    buffer = WindowBuffer(3, size=100, seconds=10, min_rows=3, overlap=0)
    buffer.add(np.ones((2, 3), np.float32), now=0.0)
    assert buffer.tick(20.0) is None  # 2 rows: too few to test
    buffer.add(np.ones((1, 3), np.float32), now=21.0)
    window = buffer.tick(21.0)
    assert window is not None and window.reason == "time" and window.rows.shape[0] == 3
    assert (window.start, window.end) == (0.0, 21.0) and buffer.n == 0 and buffer.tick(100.0) is None


def make_ingestor(window_size=4, **kwargs):
    settings = DriftSettings(window_size=window_size, min_window_rows=2, performance_min_labels=1)
    feedback = Feedback(settings, threshold=0.5, capacity=kwargs.pop("capacity", 100))
    buffer = WindowBuffer(3, size=window_size, seconds=0, min_rows=2, overlap=0)
    return Ingestor(NAMES, buffer, feedback, Metrics(), **kwargs)


def headers(event_id, ce_type=REQUEST_EVENT, **extra):
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "s", "ce-type": ce_type,
            "content-type": "application/json", **extra}  # fmt: skip


def test_the_same_event_delivered_ten_times_is_counted_once():
    ingestor = make_ingestor(window_size=100)
    body = json.dumps(v2([[1, 2, 3], [4, 5, 6]])).encode()
    outcomes = [ingestor.ingest(headers("e1"), body, now=1.0).duplicate for _ in range(10)]
    assert outcomes == [False] + [True] * 9
    assert ingestor.window.n == 2  # multi-row: its rows, once
    assert ingestor.metrics.get("kfkit_drift_events_total", "request", "duplicate") == 9
    # the response shares the id (KServe's pairing) and is not a duplicate of the request
    response = json.dumps({"outputs": [{"name": "probability", "data": [0.2, 0.7]}]}).encode()
    assert not ingestor.ingest(headers("e1", RESPONSE_EVENT), response, now=1.0).duplicate
    assert "e1" in ingestor.feedback.predictions and not ingestor.pending


def test_dedupe_memory_is_bounded_and_forgets_the_oldest():
    ingestor = make_ingestor(window_size=1000, dedupe_capacity=50)
    body = json.dumps(v2([[1, 2, 3]])).encode()
    for i in range(500):
        ingestor.ingest(headers(f"e{i}"), body, now=1.0)
    assert len(ingestor.seen) == 50 and len(ingestor.pending) == 50
    assert ingestor.ingest(headers("e499"), body, now=1.0).duplicate
    assert not ingestor.ingest(headers("e0"), body, now=1.0).duplicate  # forgotten long ago


@pytest.mark.parametrize(
    ("hdrs", "body", "status", "says"),
    [
        ({"content-type": "application/json"}, b"{}", 400, "not a CloudEvent"),
        (headers("x") | {"ce-type": "io.other"}, b"{}", 400, "not a payload event"),
        (headers("x") | {"content-type": "text/plain"}, b"{}", 415, "not JSON"),
        (headers("x"), b'{"inputs": [', 400, "not valid JSON"),
        (headers("x"), b"[" * 100_000 + b"]" * 100_000, 400, "nests too deeply|not valid JSON"),
        (headers("x"), b'{"inputs": NaN}', 400, "not valid JSON"),
    ],
)
def test_malformed_events_are_refused_with_their_status(hdrs, body, status, says):
    with pytest.raises(InvalidInput, match=says) as info:
        make_ingestor().ingest(hdrs, body, now=1.0)
    assert info.value.status_code == status


def test_a_refused_event_is_not_remembered_so_a_good_retry_is_taken():
    ingestor = make_ingestor()
    with pytest.raises(InvalidInput):
        ingestor.ingest(headers("e1"), b"{bad", now=1.0)
    assert not ingestor.ingest(headers("e1"), json.dumps(v2([[1, 2, 3]])).encode(), now=1.0).duplicate


def test_structured_mode_events_are_read_too():
    envelope = {"specversion": "1.0", "id": "s1", "source": "s", "type": REQUEST_EVENT, "data": v2([[1, 2, 3]])}
    ingestor = make_ingestor()
    ingestor.ingest({"content-type": "application/cloudevents+json"}, json.dumps(envelope).encode(), now=1.0)
    assert ingestor.window.n == 1


def test_labels_join_by_id_and_unknown_ones_are_counted():
    feedback = Feedback(DriftSettings(performance_min_labels=2, performance_window=10), threshold=0.5)
    feedback.remember("a", np.asarray([0.9], np.float32))
    feedback.remember("b", np.asarray([0.2, 0.8], np.float32))
    answer = feedback.add(parse_feedback({"labels": [{"id": "a", "label": 1}, {"id": "b", "label": [0, 1]},
                                                     {"id": "zz", "label": 0}]}), now=5.0)  # fmt: skip
    assert (answer["joined"], answer["unknown"], answer["unknown_ids"]) == (3, 1, ["zz"])
    assert answer["metrics"]["accuracy"] == 1.0
    assert feedback.add(parse_feedback({"id": "a", "label": 1}), now=6.0)["duplicate"] == 1
    for bad in ({"id": "a", "label": 2}, {"labels": []}, {"label": 1}, {"id": 3, "label": 1}):
        with pytest.raises(InvalidInput):
            parse_feedback(bad)


def test_rolling_metrics_match_scikit_learn():
    from sklearn import metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1).round(2)  # ties on purpose
    ours = rolling_metrics(list(zip(p.tolist(), y.tolist(), strict=True)), 0.5)
    predicted = (p >= 0.5).astype(int)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y, predicted))
    assert ours["precision"] == pytest.approx(metrics.precision_score(y, predicted))
    assert ours["recall"] == pytest.approx(metrics.recall_score(y, predicted))
    assert ours["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, p))
    assert ours["pr_auc"] == pytest.approx(metrics.average_precision_score(y, p))
    assert rolling_metrics([(0.9, 1), (0.8, 1)], 0.5)["roc_auc"] is None  # one class: undefined


def test_a_performance_event_is_due_once_per_window_of_labels_while_below_the_floor():
    settings = DriftSettings(performance_min_labels=4, performance_window=4, performance_floors={"accuracy": 0.8})
    feedback = Feedback(settings, threshold=0.5)
    due = []
    for i in range(12):
        feedback.remember(str(i), np.asarray([0.9], np.float32))
        feedback.add([(str(i), [0])], now=float(i))  # every label contradicts the prediction
        due.append(feedback.breach() is not None)
    assert due == [False, False, False, True, False, False, False, True, False, False, False, True]


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((5000, 1))
    edges = psi_edges(reference, 10)[0]
    assert psi(reference[:, 0], rng.standard_normal(5000), edges) < 0.01
    assert psi(reference[:, 0], rng.standard_normal(5000) + 0.5, edges) > 0.2
    discrete = np.repeat([0.0, 1.0], 500)
    assert len(psi_edges(discrete.reshape(-1, 1), 10)[0]) <= 3  # repeated quantiles collapse


def test_metrics_render_the_prometheus_text_format():
    m = Metrics()
    m.inc("kfkit_drift_events_total", "request", "accepted", by=3)
    m.set_many("kfkit_drift_p_val", [("v01", 0.5), ('we"ird', None)])
    text = m.render().decode()
    assert 'kfkit_drift_events_total{type="request",outcome="accepted"} 3' in text
    assert 'kfkit_drift_p_val{feature="we\\"ird"} NaN' in text
    assert "# TYPE kfkit_drift_window_fill gauge" in text and "kfkit_drift_window_fill 0" in text


def test_state_round_trips_without_pickles_and_ignores_another_version(tmp_path):
    rows = np.ones((3, 2), np.float32)
    save_state(tmp_path, {"model": "m", "version": "1", "window": {"index": 7}}, {"rows": rows, "times": None})
    state, arrays = load_state(tmp_path, model="m", version="1", n_features=2)
    assert state["window"]["index"] == 7 and arrays["rows"].shape == (3, 2)
    assert load_state(tmp_path, model="m", version="2", n_features=2) == ({}, {})
    assert load_state(tmp_path, model="m", version="1", n_features=5)[1].get("rows") is None
