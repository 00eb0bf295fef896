"""Calibrating the text-first cascade (``prodcat.model.cascade``) on the validation split.

On the validation rows that have both a first-stage modality and a later one (a title and
a photo), the first stage's answers are sorted by confidence: the served path's smallest
score over the levels. Deciding the k most confident rows by the first stage changes each
level's number of right answers by the sum of (first stage right - full path right) over
them. The threshold is taken at the largest k before that change first falls below
``-tolerance x rows`` at any level, then moved up past ties so that every row at the
threshold's score is counted: scanning from the most confident rows down and stopping at
the first violation, rather than taking the largest k that ends within tolerance, keeps a
lucky run of rows the first stage gets right from buying a lower threshold. One threshold
serves every level (stored per level, as the serving rule reads it).

The tolerance is in accuracy (0.002 = 0.2 points), measured on those rows alone: rows with
nothing to skip would dilute it. ``calibrate_cascade`` returns the manifest's ``cascade``
entry, or None when the bundle has nothing to skip or no validation row to calibrate on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prodcat.model.cascade import Cascade, chosen_scores
from prodcat.model.decoding import best_paths, path_index
from prodcat.training.build import DEFAULT_TOLERANCE
from prodcat.training.paths import FULL, PathProbs

FIRST_STAGE = "first_stage"


def first_stage(encoders: Sequence[Mapping[str, Any]]) -> list[str]:
    """Slugs of the cascade's first stage: every encoder whose modality is not ``image``."""
    return [e["slug"] for e in encoders if e["modality"] != "image"]


def cascade_paths(encoders: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The extra path calibration needs (the first stage alone), if the model has two stages."""
    first = first_stage(encoders)
    return {FIRST_STAGE: first} if first and len(first) < len(encoders) else {}


def calibrate_cascade(
    manifest: Mapping[str, Any],
    answers: PathProbs,
    labels: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any] | None:
    """The ``cascade`` manifest entry calibrated on ``answers`` (validation rows + labels)."""
    first = cascade_paths(manifest["encoders"]).get(FIRST_STAGE)
    if not first:
        return None
    rows = np.flatnonzero(Cascade(tuple(first), ()).applies(answers.present))
    if not len(rows):
        return None
    levels = manifest["levels"]
    paths = path_index(manifest["taxonomy"]["paths"], [manifest["labels"][lv] for lv in levels])
    text = [p[rows] for p in answers[FIRST_STAGE]]
    full = [p[rows] for p in answers[FULL]]
    text_best, full_best = best_paths(text, paths), best_paths(full, paths)
    truth = labels[rows]
    text_right = paths[text_best] == truth
    full_right = paths[full_best] == truth
    confidence = chosen_scores(text, paths, text_best).min(axis=1)
    order = np.argsort(-confidence, kind="stable")
    change = np.cumsum(text_right[order].astype(int) - full_right[order].astype(int), axis=0)
    within = np.all(change >= -tolerance * len(rows) - 1e-9, axis=1)
    decided = int(np.argmin(within)) if not within.all() else len(rows)
    while 0 < decided < len(rows) and confidence[order[decided - 1]] <= confidence[order[decided]]:
        decided -= 1  # a threshold cannot split rows of equal confidence
    threshold = float(confidence[order[decided - 1]]) if decided else None
    stops = confidence >= threshold if threshold is not None else np.zeros(len(rows), bool)
    served = np.where(stops[:, None], text_right, full_right)
    accuracy = {
        "fused": _per_level(levels, full_right),
        "cascade": _per_level(levels, served),
        "first_stage_only": _per_level(levels, text_right),
    }
    return {
        "first": first,
        "thresholds": None if threshold is None else dict.fromkeys(levels, threshold),
        "tolerance": tolerance,
        "rule": "first stage decides when every level's path score >= its threshold",
        "validation": {
            "rows": len(rows),
            "decided_by_first_stage": float(stops.mean()),
            "accuracy": accuracy,
            "accuracy_drop": {lv: accuracy["fused"][lv] - accuracy["cascade"][lv] for lv in levels},
        },
    }


def _per_level(levels: Sequence[str], right: np.ndarray) -> dict[str, float]:
    return {level: float(right[:, i].mean()) for i, level in enumerate(levels)}
