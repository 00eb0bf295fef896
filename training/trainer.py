"""The training loop: AdamW, loss summed over levels, early stopping on validation macro-F1.

Early stopping watches the mean over levels of the validation macro-F1
(:func:`training.scoring.selection_score`); the weights of the best epoch are restored at
the end, and the served answer's view weights and temperatures are then fitted on the
validation split (``training.answer_fit``). Rows with a photo are
shown ``photo_oversample`` times per epoch: most catalogue rows have only a title, and
without it the photo would barely matter to the loss. Everything random (weights,
shuffling, modality, title and category-word dropout) is seeded.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from prodcat.contract.components import Head
from prodcat.training.answer_fit import fit_temperatures, fit_view_weights
from prodcat.training.feature_cache import FeatureSet
from prodcat.training.fusion import FusionModel
from prodcat.training.predict import evaluate_split, forward_batch
from prodcat.training.scoring import selection_score
from prodcat.training.title_dropout import TitleDropout


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-2
    patience: int = 6
    modality_dropout: float = 0.25
    seed: int = 0
    device: str | None = None
    schedule: Literal["cosine", "constant"] = "cosine"
    photo_oversample: int = 3
    category_word_dropout: float = 0.5
    title_dropout: float = 0.3
    # the answer's views (``training.fusion``): fused, title alone, photo alone
    view_weights: dict[str, float] = field(
        default_factory=lambda: {"fused": 1.0, "text": 2.0, "image": 1.0}
    )
    # choose the view weights on the validation split (training.answer_fit); off: as given
    fit_views: bool = True
    # ... the best for poor titles among those this close (0.002 = 0.2 points of accuracy)
    # to the best full-input accuracy
    view_tolerance: float = 0.002
    temperature: bool = True
    # encoders that fine-tune (e.g. trainable_blocks): learning rate = lr x this
    encoder_lr_scale: float = 0.1
    # photos of a fine-tuned image encoder: cached versions per photo, copy 0 unaugmented
    augment_copies: int = 3

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
    titles: TitleDropout | None = None,
) -> TrainResult:
    """Fit ``model`` on ``train_idx`` rows; ``labels`` is (rows, levels) of class indices."""
    if config.epochs < 1 or not len(train_idx) or not len(val_idx):
        raise ValueError("training needs epochs >= 1 and non-empty train and val splits")
    device = pick_device(config.device)
    seed_everything(config.seed)
    model.to(device)
    optimiser = torch.optim.AdamW(
        parameter_groups(model, config), lr=config.lr, weight_decay=config.weight_decay
    )
    rows_per_epoch = epoch_rows(features, train_idx, config.photo_oversample)
    steps = config.epochs * -(-len(rows_per_epoch) // config.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        if config.schedule == "cosine"
        else None
    )
    rng = np.random.default_rng(config.seed)
    best = (-1.0, 0, {}, copy.deepcopy(model.state_dict()))
    history: list[dict[str, Any]] = []
    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch")
    for epoch in bar:
        model.train()
        order = rng.permutation(rows_per_epoch)
        losses = []
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            batch = features.batch(rows, rng)
            if titles is not None:
                batch = titles.apply(batch, rows, rng)
            outputs = forward_batch(model, batch, device)
            targets = [torch.from_numpy(labels[rows, i]).to(device) for i in range(len(levels))]
            loss = head.loss(outputs, targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
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
    if config.fit_views and len(model.view_weights) > 1:
        has_poor = titles is not None and titles.poor is not None
        poor = titles.poor_inputs(features) if has_poor else None
        fit_view_weights(
            model,
            features,
            poor,
            labels,
            val_idx,
            levels,
            device,
            config.view_tolerance,
            config.batch_size,
        )
    if config.temperature:
        fit_temperatures(model, features, labels, val_idx, device, config.batch_size)
    return TrainResult(best[1], best[0], best[2], history, device)


def parameter_groups(model: FusionModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Fine-tuned encoder weights at ``lr x encoder_lr_scale`` (pretrained: small steps),
    the fusion and head at ``lr``."""
    encoder = [p for p in model.encoders.parameters() if p.requires_grad]
    ids = {id(p) for p in encoder}
    rest = [p for p in model.trainable_parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if encoder:
        groups.append({"params": encoder, "lr": config.lr * config.encoder_lr_scale})
    return groups


def epoch_rows(features: FeatureSet, train_idx: Sequence[int], photo_oversample: int) -> np.ndarray:
    """The training rows of one epoch: rows with a non-text modality ``photo_oversample``
    times, the rest once."""
    rows = np.asarray(train_idx)
    if photo_oversample <= 1:
        return rows
    modality = zip(features.pipeline.slugs, features.pipeline.encoders, strict=True)
    other = [features.masks[s][rows] > 0 for s, e in modality if e.modality != "text"]
    if not other:
        return rows
    photo = rows[np.any(other, axis=0)]
    return np.concatenate([rows, *([photo] * (photo_oversample - 1))])
