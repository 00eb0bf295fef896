"""The torch model's answers on rows of a feature set: for validation, fitting and scoring.

Shared by the training loop (early stopping), the fitting of the served answer
(``training.answer_fit``) and the recipe (the ``needs_review`` threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from prodcat.training.feature_cache import Batch, BatchSource
from prodcat.training.fusion import FusionModel
from prodcat.training.scoring import all_levels


def predict_split(
    model: FusionModel,
    features: BatchSource,
    rows: Sequence[int],
    device: str,
    batch_size: int = 256,
) -> list[np.ndarray]:
    """Softmax probabilities per level for ``rows``, in eval mode."""
    model.eval()
    parts: list[list[np.ndarray]] = []
    rows = np.asarray(rows)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            outputs = forward_batch(model, features.batch(rows[start : start + batch_size]), device)
            parts.append([torch.softmax(o, dim=-1).cpu().numpy() for o in outputs])
    return [np.concatenate(level) for level in zip(*parts, strict=True)]


def evaluate_split(
    model: FusionModel,
    features: BatchSource,
    labels: np.ndarray,
    rows: Sequence[int],
    levels: Sequence[str],
    device: str,
    batch_size: int = 256,
) -> dict[str, Any]:
    probs = predict_split(model, features, rows, device, batch_size)
    truth = [labels[np.asarray(rows), i] for i in range(len(levels))]
    return all_levels(levels, truth, probs)


def forward_batch(model: FusionModel, batch: Batch, device: str) -> tuple[torch.Tensor, ...]:
    raw, masks, cached = batch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return model(
        {slug: {k: tensor(v) for k, v in inputs.items()} for slug, inputs in raw.items()},
        {slug: tensor(m) for slug, m in masks.items()},
        {slug: tensor(c) for slug, c in cached.items()},
    )
