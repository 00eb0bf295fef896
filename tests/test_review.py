"""Fitting the needs_review threshold on validation answers (prodcat.training.review)."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.model.decoding import best_paths
from prodcat.training.review import fit_review

# two levels: masters 0/1, each with two children (sub 0,1 under master 0; 2,3 under 1)
PATHS = np.asarray([[0, 0], [0, 1], [1, 2], [1, 3]])


def answers(rows: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Probabilities whose confidence tracks correctness, as a calibrated model's do: the
    true class gets a random share of the mass, the rest goes to one wrong class."""
    rng = np.random.default_rng(seed)
    labels = PATHS[rng.integers(0, len(PATHS), rows)]
    probs = []
    for level, size in enumerate((2, 4)):
        p = np.zeros((rows, size))
        true_share = rng.uniform(0.3, 1.0, rows)
        other = (labels[:, level] + 1 + rng.integers(0, size - 1, rows)) % size
        p[np.arange(rows), labels[:, level]] = true_share
        p[np.arange(rows), other] += 1 - true_share
        probs.append(p)
    return probs, labels


@pytest.mark.parametrize("catch", [0.5, 0.75, 0.9])
def test_the_threshold_flags_the_share_of_wrong_answers_asked_for(catch: float) -> None:
    probs, labels = answers(2000)
    review = fit_review(probs, labels, PATHS, catch)
    assert review is not None
    validation = review["validation"]
    assert validation["errors_flagged"] >= catch
    assert 0 < validation["flagged"] < 1
    # the lowest such threshold (to the rounding of 0.001): one step down flags too few
    served = PATHS[best_paths(probs, PATHS)]
    weakest = np.min([p[np.arange(len(p)), served[:, i]] for i, p in enumerate(probs)], axis=0)
    wrong = np.any(served != labels, axis=1)
    assert np.mean(weakest[wrong] < review["threshold"] - 0.001) < catch


def test_more_caught_costs_more_reviews() -> None:
    probs, labels = answers(2000, seed=1)
    fitted = [fit_review(probs, labels, PATHS, c) for c in (0.5, 0.75, 0.95)]
    flagged = [r["validation"]["flagged"] for r in fitted if r]
    assert flagged == sorted(flagged) and flagged[0] < flagged[-1]


def test_no_wrong_answer_leaves_nothing_to_fit() -> None:
    labels = PATHS[[0, 1, 2, 3]]
    probs = [np.eye(2)[labels[:, 0]], np.eye(4)[labels[:, 1]]]
    assert fit_review(probs, labels, PATHS) is None
