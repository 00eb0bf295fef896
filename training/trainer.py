"""The training loop: AdamW, loss summed over levels, early stopping on validation macro-F1.

Early stopping watches the mean over levels of the validation macro-F1
(:func:`training.metrics.selection_score`); the weights of the best epoch are restored at
the end. Everything random (weights, shuffling, modality dropout) is seeded.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from prodcat.contract.components import Head
from prodcat.training.feature_cache import Batch, FeatureSet
from prodcat.training.fusion import FusionModel
from prodcat.training.scoring import all_levels, selection_score


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-2
    patience: int = 6
    modality_dropout: float = 0.25
    seed: int = 0
    device: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    val_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"


def pick_device(requested: str | None = None) -> str:
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    model: FusionModel,
    head: Head,
    features: FeatureSet,
    labels: np.ndarray,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    levels: Sequence[str],
    config: TrainConfig,
) -> TrainResult:
    """Fit ``model`` on ``train_idx`` rows; ``labels`` is (rows, levels) of class indices."""
    if config.epochs < 1 or not len(train_idx) or not len(val_idx):
        raise ValueError("training needs epochs >= 1 and non-empty train and val splits")
    device = pick_device(config.device)
    seed_everything(config.seed)
    model.to(device)
    optimiser = torch.optim.AdamW(
        model.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(config.seed)
    best = (-1.0, 0, {}, copy.deepcopy(model.state_dict()))
    history: list[dict[str, Any]] = []
    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch")
    for epoch in bar:
        model.train()
        order = rng.permutation(np.asarray(train_idx))
        losses = []
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            outputs = _forward(model, features.batch(rows), device)
            targets = [torch.from_numpy(labels[rows, i]).to(device) for i in range(len(levels))]
            loss = head.loss(outputs, targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        val = evaluate_split(model, features, labels, val_idx, levels, device, config.batch_size)
        score = selection_score(val)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val": val, "score": score})
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_f1=f"{score:.4f}")
        if score > best[0]:
            best = (score, epoch, val, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    bar.close()
    model.load_state_dict(best[3])
    model.eval()
    return TrainResult(best[1], best[0], best[2], history, device)


def predict_split(
    model: FusionModel,
    features: FeatureSet,
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
            outputs = _forward(model, features.batch(rows[start : start + batch_size]), device)
            parts.append([torch.softmax(o, dim=-1).cpu().numpy() for o in outputs])
    return [np.concatenate(level) for level in zip(*parts, strict=True)]


def evaluate_split(
    model: FusionModel,
    features: FeatureSet,
    labels: np.ndarray,
    rows: Sequence[int],
    levels: Sequence[str],
    device: str,
    batch_size: int = 256,
) -> dict[str, Any]:
    probs = predict_split(model, features, rows, device, batch_size)
    truth = [labels[np.asarray(rows), i] for i in range(len(levels))]
    return all_levels(levels, truth, probs)


def _forward(model: FusionModel, batch: Batch, device: str) -> tuple[torch.Tensor, ...]:
    raw, masks, cached = batch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return model(
        {slug: {k: tensor(v) for k, v in inputs.items()} for slug, inputs in raw.items()},
        {slug: tensor(m) for slug, m in masks.items()},
        {slug: tensor(c) for slug, c in cached.items()},
    )
