"""The adaptive batcher: concurrent requests share forward passes on the worker thread, each gets its own rows."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from kfkit.serving.batching import AdaptiveBatcher

N = 4


class Recorder:
    """A scoring function that records each pass (rows, thread) and returns row sums."""

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        self.passes: list[int] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.fail_on = fail_on

    def __call__(self, features: np.ndarray) -> np.ndarray:
        self.passes.append(len(features))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and (features == self.fail_on).any():
            raise ValueError("poisoned row")
        return features.sum(axis=1).astype(np.float32)


def _rows(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, N), float(i), dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None]


async def _gather(batcher: AdaptiveBatcher, sizes: list[int]) -> list[np.ndarray]:
    return await asyncio.gather(*(batcher.submit(_rows(i, n)) for i, n in enumerate(sizes)))


def test_concurrent_requests_share_passes_and_get_their_own_rows():
    score = Recorder(delay_s=0.002)
    batches = []
    batcher = AdaptiveBatcher(
        score, max_batch_size=16, max_batch_latency_ms=5, on_batch=lambda r, q, s: batches.append((r, q))
    )
    sizes = [1, 3, 1, 2, 5, 1, 1, 4] * 8
    results = asyncio.run(_gather(batcher, sizes))
    for i, (n, result) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(result, _rows(i, n).sum(axis=1))
    assert sum(score.passes) == sum(sizes)
    assert len(score.passes) < len(sizes) / 3, score.passes  # merged
    assert max(score.passes) <= 16
    assert score.threads == {"kfkit-infer"}  # never on the event loop's thread
    assert sum(q for _, q in batches) == len(sizes) and [r for r, _ in batches] == score.passes
    batcher.close()


def test_a_request_larger_than_the_batch_runs_alone_unsplit():
    score = Recorder()
    batcher = AdaptiveBatcher(score, max_batch_size=4, max_batch_latency_ms=1)
    results = asyncio.run(_gather(batcher, [1, 10, 1]))
    assert [len(r) for r in results] == [1, 10, 1]
    assert 10 in score.passes and max(score.passes) == 10
    batcher.close()


def test_batch_size_one_turns_batching_off():
    score = Recorder(delay_s=0.001)
    batcher = AdaptiveBatcher(score, max_batch_size=1, max_batch_latency_ms=5)
    results = asyncio.run(_gather(batcher, [1] * 12))
    assert score.passes == [1] * 12
    assert [float(r[0]) for r in results] == [float(_rows(i).sum()) for i in range(12)]
    assert score.threads == {"kfkit-infer"}
    batcher.close()


def test_a_lone_request_does_not_wait_for_the_latency_budget():
    batcher = AdaptiveBatcher(Recorder(), max_batch_size=64, max_batch_latency_ms=500)

    async def one() -> float:
        started = time.perf_counter()
        await batcher.submit(_rows(1))
        return time.perf_counter() - started

    async def several() -> list[float]:
        return [await one() for _ in range(5)]

    assert max(asyncio.run(several())) < 0.25  # far below the 500 ms budget
    batcher.close()


def test_a_failed_pass_fails_its_requests_only_and_the_next_pass_runs():
    score = Recorder(fail_on=7.0)
    batcher = AdaptiveBatcher(score, max_batch_size=64, max_batch_latency_ms=5)

    async def run() -> tuple[list, np.ndarray]:
        results = await asyncio.gather(*(batcher.submit(_rows(i)) for i in range(10)), return_exceptions=True)
        return results, await batcher.submit(_rows(100))

    results, after = asyncio.run(run())
    assert any(isinstance(r, ValueError) for r in results)
    np.testing.assert_array_equal(after, _rows(100).sum(axis=1))
    batcher.close()


def test_works_across_event_loops_and_from_sync_code():
    """Each test (and asyncio.run) brings a new loop; the batcher follows it."""
    batcher = AdaptiveBatcher(Recorder(), max_batch_size=8, max_batch_latency_ms=1)
    for _ in range(3):
        (result,) = asyncio.run(_gather(batcher, [1]))
        np.testing.assert_array_equal(result, _rows(0).sum(axis=1))
    np.testing.assert_array_equal(batcher.run_sync(_rows(5, 2)), _rows(5, 2).sum(axis=1))
    batcher.close()


def test_closed_batcher_refuses_new_requests():
    batcher = AdaptiveBatcher(Recorder(), max_batch_size=8, max_batch_latency_ms=1)
    batcher.close()
    with pytest.raises(RuntimeError, match="unloading"):
        asyncio.run(batcher.submit(_rows(1)))


@pytest.mark.parametrize(("size", "latency"), [(0, 1.0), (4, -1.0)])
def test_bad_settings_are_refused(size, latency):
    with pytest.raises(ValueError, match="max_batch"):
        AdaptiveBatcher(Recorder(), max_batch_size=size, max_batch_latency_ms=latency)


def test_batched_model_scores_equal_offline(publish_random_mlp):
    """The real predictor under concurrency: every request's answer equals scoring its rows alone."""
    from kfkit.registry import resolve
    from kfkit.serving.predictor import KfkitPredictor

    published = publish_random_mlp("batching", seed=3, n_rows=40)
    predictor = KfkitPredictor("test-mlp", resolve(published.uri), max_batch_size=16, max_batch_latency_ms=2)
    predictor.load()
    rows = published.rows

    async def run() -> list[tuple[np.ndarray, np.ndarray]]:
        return await asyncio.gather(*(predictor.score(rows[i : i + 1 + i % 3]) for i in range(0, 36, 3)))

    for i, (probabilities, labels) in zip(range(0, 36, 3), asyncio.run(run()), strict=True):
        expected = published.expected[i : i + 1 + i % 3]
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(labels, (expected >= 0.5).astype(np.int64))
    predictor.stop()
    assert not predictor.ready
