"""The ``needs_review`` threshold, fitted on the validation split for a share of the wrong answers.

An answer needs review when any level's served score is under the threshold. A fixed 0.5
flagged only about a third of the fashion model's wrong answers: its scores are calibrated
(ECE 0.015 on articleType), so 64% of its mistakes score above 0.5, where most answers are
right (four in five between 0.5 and 0.9). So the threshold is fitted instead, as the
lowest that flags ``catch`` of the validation split's wrong answers (wrong at any level);
what that costs in reviews (the share of all rows flagged) is recorded beside it, and the
worker uses it unless ``[worker] review_threshold`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from prodcat.model.cascade import chosen_scores
from prodcat.model.decoding import best_paths

REVIEW_CATCH = 0.75  # the share of wrong validation answers the fitted threshold flags


def fit_review(
    probs: Sequence[np.ndarray], labels: np.ndarray, paths: np.ndarray, catch: float = REVIEW_CATCH
) -> dict[str, Any] | None:
    """The manifest's ``review`` entry from validation answers (None: no wrong answer to fit on).

    ``probs``: served probabilities per level; ``labels``: (rows, levels) class indices;
    ``paths``: the taxonomy's paths as class indices (``prodcat.model.decoding.path_index``).
    """
    best = best_paths(probs, paths)
    weakest = chosen_scores(probs, paths, best).min(axis=1)
    wrong = np.any(paths[best] != labels, axis=1)
    if not wrong.any():
        return None
    ranked = np.sort(weakest[wrong])
    needed = ranked[min(math.ceil(catch * len(ranked)), len(ranked)) - 1]
    threshold = min(math.ceil(needed * 1000 + 1e-9) / 1000, 1.0)  # flags score < threshold
    flagged = weakest < threshold
    return {
        "threshold": threshold,
        "catch": catch,
        "rule": "needs_review when any level's score < threshold",
        "validation": {
            "rows": len(weakest),
            "flagged": float(flagged.mean()),
            "errors_flagged": float(flagged[wrong].mean()),
        },
    }
