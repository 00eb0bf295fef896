"""Classification metrics per taxonomy level, shared by the training loop and evaluation.

Rows whose true label is unknown (-1: a class the model never saw) count as errors for
accuracy and the F1 scores rather than being left out, so a model is never flattered by
classes it cannot predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score

ECE_BINS = 15


def level_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | int]:
    """Accuracy, macro-F1 and weighted-F1 of one level (labels as class indices)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if len(y_true) == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "weighted_f1": 0.0, "n": 0}
    labels = np.unique(y_true)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "n": len(y_true),
    }


def all_levels(
    levels: Sequence[str], y_true: Sequence[np.ndarray], probs: Sequence[np.ndarray]
) -> dict[str, dict[str, float | int]]:
    return {
        level: level_metrics(truth, p.argmax(axis=1))
        for level, truth, p in zip(levels, y_true, probs, strict=True)
    }


def selection_score(metrics: dict[str, dict[str, float | int]]) -> float:
    """What early stopping maximises: the mean of the levels' macro-F1.

    The mean rather than the finest level alone: the finest level's macro-F1 is dominated by
    a few rare classes (noisy on a small validation split), while the coarse levels are
    what a wrong department would break; the mean rewards both.
    """
    return float(np.mean([m["macro_f1"] for m in metrics.values()]))


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE of the top-1 confidence: |accuracy - confidence| averaged over equal-width bins."""
    if len(y_true) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def review_catch(
    levels: Sequence[str],
    labels: np.ndarray,
    served: np.ndarray,
    scores: np.ndarray,
    threshold: float,
) -> dict[str, object]:
    """What the worker's ``needs_review`` flag (any level's served score under
    ``threshold``) catches: the share of rows it flags, and per level the share of the wrong
    answers it flags (``errors_flagged``: how much of the damage a reviewer gets to see).

    ``served`` and ``scores`` are (rows, levels): the served path's class indices and scores.
    """
    flagged = (scores < threshold).any(axis=1)
    wrong = served != labels
    caught = {
        level: float(flagged[wrong[:, i]].mean()) if wrong[:, i].any() else None
        for i, level in enumerate(levels)
    }
    return {
        "threshold": threshold,
        "flagged": float(flagged.mean()) if len(flagged) else 0.0,
        "errors_flagged": caught,
        "wrong_any_level": int(wrong.any(axis=1).sum()),
        "errors_flagged_any_level": float(flagged[wrong.any(axis=1)].mean())
        if wrong.any()
        else None,
    }
