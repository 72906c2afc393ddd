"""Validation PR-AUC computed in torch matches scikit-learn's average precision."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from kfkit.training.metrics import average_precision


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(500) < 0.1).astype(np.float32)
    scores = rng.normal(size=500).astype(np.float32) + labels
    tied = np.round(scores, 1)  # many equal scores: each run of ties is one threshold
    for s in (scores, tied):
        expected = average_precision_score(labels, s)
        assert average_precision(torch.from_numpy(labels), torch.from_numpy(s)) == pytest.approx(expected, abs=1e-12)


def test_perfect_ranking_and_no_positives():
    assert average_precision(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.1, 0.8, 0.9])) == 1.0
    assert math.isnan(average_precision(torch.zeros(4), torch.rand(4)))
