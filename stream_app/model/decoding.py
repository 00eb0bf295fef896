"""Model outputs -> category paths: the best path that exists in the taxonomy, and top-k.

Levels are not decoded independently: the served answer is the taxonomy path (seen in
training) with the highest product of its levels' probabilities, so a product is never
filed under a sub-category of another master category.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TOP_K = 3


def path_index(paths: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> np.ndarray:
    """(paths, levels) array of class indices of every taxonomy path."""
    lookup = [{label: i for i, label in enumerate(level)} for level in labels]
    return np.asarray(
        [[lookup[lv][label] for lv, label in enumerate(path)] for path in paths], dtype=np.int64
    ).reshape(len(paths), len(labels))


def path_log_scores(probs: Sequence[np.ndarray], paths: np.ndarray) -> np.ndarray:
    """(items, paths): the log of the product of each path's level probabilities."""
    logs = [np.log(np.clip(np.asarray(p, np.float64), 1e-12, 1.0)) for p in probs]
    return sum(logp[:, paths[:, lv]] for lv, logp in enumerate(logs))


def best_paths(probs: Sequence[np.ndarray], paths: np.ndarray) -> np.ndarray:
    """Index (into ``paths``) of every item's most probable taxonomy path."""
    return np.argmax(path_log_scores(probs, paths), axis=1)


def decode_paths(
    probs: Sequence[np.ndarray],
    levels: Sequence[str],
    labels: Sequence[Sequence[str]],
    paths: np.ndarray,
    top_k: int = TOP_K,
) -> list[dict[str, Any]]:
    """Best valid path by product of level probabilities, and top-k per level, per item."""
    scores = path_log_scores(probs, paths)
    best = np.argmax(scores, axis=1)
    items = []
    for row, path_id in enumerate(best):
        chosen = paths[path_id]
        category = [
            {
                "level": level,
                "label": labels[lv][chosen[lv]],
                "score": float(probs[lv][row, chosen[lv]]),
            }
            for lv, level in enumerate(levels)
        ]
        top = {}
        for lv, level in enumerate(levels):
            order = np.argsort(-probs[lv][row])[:top_k]
            top[level] = [
                {"label": labels[lv][i], "score": float(probs[lv][row, i])} for i in order
            ]
        items.append(
            {
                "category_path": category,
                "path_score": float(np.exp(scores[row, path_id])),
                "top_k": top,
            }
        )
    return items
