"""Drift at a glance: the categories assigned now against the training distribution.

Per taxonomy level, the population stability index (PSI) between the labels of the last
``[dashboard] drift_window`` assignments and the labels of the model's training split:
``sum((now - train) * ln(now / train))`` over the classes, with empty classes smoothed to
``EPSILON``. Rules of thumb: under 0.1 stable, 0.1-0.25 moderate, over 0.25 a shift worth a
look. A window of n assignments over k classes shows about (k - 1) / n from sampling noise
alone, so the noise floor is reported beside each score. The same window gives the
confidence histogram (scores per level in tenths).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
EPSILON = 1e-4
MIN_SAMPLE = 100  # fewer assignments than this: no score (it would be noise)
BINS = 10
UNSEEN = "(not in training)"


def psi(now: Mapping[str, int], train: Mapping[str, int]) -> float:
    """Population stability index of two label counts (labels missing from one count 0)."""
    total_now = sum(now.values()) or 1
    total_train = sum(train.values()) or 1
    score = 0.0
    for label in set(now) | set(train):
        a = max(now.get(label, 0) / total_now, EPSILON)
        e = max(train.get(label, 0) / total_train, EPSILON)
        score += (a - e) * math.log(a / e)
    return score


def training_distribution(manifest: Mapping[str, Any]) -> dict[str, dict[str, int]] | None:
    """Label counts per level of the bundle's training split.

    Bundles record them (``dataset.class_counts``); for older ones the split is recomputed
    from the data file named in the manifest when it is readable here, else None.
    """
    dataset = manifest.get("dataset") or {}
    if dataset.get("class_counts"):
        return {level: dict(counts) for level, counts in dataset["class_counts"].items()}
    if not dataset.get("path") or not Path(dataset["path"]).is_file():
        return None
    from prodcat.training.datasets import load_dataset, options_from_description

    try:
        data = load_dataset(dataset["path"], dataset["format"], options_from_description(dataset))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("no training distribution for drift: %s", exc)
        return None
    return data.class_counts("train")


class DriftWindow:
    """The last ``size`` assignments' labels and scores, with running counts."""

    def __init__(self, levels: Sequence[str], size: int) -> None:
        self.levels = list(levels)
        self._window: deque[tuple[tuple[str, ...], tuple[float, ...]]] = deque(maxlen=size)
        self._counts = {level: Counter[str]() for level in self.levels}
        self.train: dict[str, dict[str, int]] | None = None

    def add(self, assignment: Mapping[str, Any]) -> None:
        steps = {step["level"]: step for step in assignment["category_path"]}
        if any(level not in steps for level in self.levels):
            return  # another model's levels: not comparable with this training split
        labels = tuple(steps[level]["label"] for level in self.levels)
        scores = tuple(float(steps[level]["score"]) for level in self.levels)
        if len(self._window) == self._window.maxlen:
            old_labels, _ = self._window[0]
            for level, label in zip(self.levels, old_labels, strict=True):
                self._counts[level][label] -= 1
        self._window.append((labels, scores))
        for level, label in zip(self.levels, labels, strict=True):
            self._counts[level][label] += 1

    def __len__(self) -> int:
        return len(self._window)

    def scores(self) -> dict[str, float | None]:
        """PSI per level (None without a training distribution or enough assignments)."""
        if self.train is None or len(self) < MIN_SAMPLE:
            return {level: None for level in self.levels}
        return {level: psi(self._counts[level], self.train.get(level, {})) for level in self.levels}

    def report(self, top: int = 12) -> dict[str, Any]:
        """Scores, noise floors and the largest shares now vs in training, per level."""
        scores = self.scores()
        levels = {}
        for level in self.levels:
            now = +self._counts[level]
            train = (self.train or {}).get(level, {})
            total_now, total_train = sum(now.values()) or 1, sum(train.values()) or 1
            labels = sorted(set(now) | set(train), key=lambda x: -(now.get(x, 0) + train.get(x, 0)))
            levels[level] = {
                "psi": scores[level],
                "noise_floor": (len(train) - 1) / len(self) if len(self) and train else None,
                "classes": [
                    {
                        "label": label if label in train or not train else f"{label} {UNSEEN}",
                        "now": now.get(label, 0) / total_now,
                        "train": train.get(label, 0) / total_train,
                    }
                    for label in labels[:top]
                ],
            }
        return {
            "window": len(self),
            "window_size": self._window.maxlen,
            "min_sample": MIN_SAMPLE,
            "has_training": self.train is not None,
            "levels": levels,
            "confidence": self.confidence(),
        }

    def confidence(self) -> dict[str, list[int]]:
        """Histogram of scores per level in ``BINS`` equal bins over [0, 1]."""
        hist = {level: [0] * BINS for level in self.levels}
        for _, scores in self._window:
            for level, score in zip(self.levels, scores, strict=True):
                hist[level][min(int(score * BINS), BINS - 1)] += 1
        return hist
