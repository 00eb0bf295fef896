"""The training loop: AdamW, loss summed over levels, early stopping on validation macro-F1.

Early stopping watches the mean over levels of the validation macro-F1
(:func:`training.metrics.selection_score`); the weights of the best epoch are restored at
the end, and a temperature per level is then fitted on the validation split so that the
served scores (and with them ``needs_review``) mean what they say. Rows with a photo are
shown ``photo_oversample`` times per epoch: most catalogue rows have only a title, and
without it the photo would barely matter to the loss. Everything random (weights,
shuffling, modality, title and category-word dropout) is seeded.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from prodcat.contract.components import Head
from prodcat.training.feature_cache import Batch, BatchSource, FeatureSet
from prodcat.training.fusion import FusionModel
from prodcat.training.scoring import all_levels, selection_score
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
    # choose the view weights on the validation split (the grid below); off: as given
    fit_views: bool = True
    # ... scoring poor titles as much as full ones (poor titles 89.5 instead of 84.8 on the
    # photo rows, but full-input articleType 93.3 instead of 96.6: off by default)
    fit_views_on_poor_titles: bool = False
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
            outputs = _forward(model, batch, device)
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
        poor = titles if config.fit_views_on_poor_titles else None
        fit_view_weights(model, features, labels, val_idx, levels, device, config.batch_size, poor)
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


VIEW_GRID = (0.0, 0.5, 1.0, 2.0, 3.0)


def fit_view_weights(
    model: FusionModel,
    features: FeatureSet,
    labels: np.ndarray,
    val_idx: Sequence[int],
    levels: Sequence[str],
    device: str,
    batch_size: int = 256,
    titles: TitleDropout | None = None,
) -> list[float]:
    """The weights of the non-fused views (each from :data:`VIEW_GRID`, the fused view's
    stays 1) that maximise the validation mean over levels of accuracy + macro-F1, averaged
    over the full input and, with ``titles``' poor titles, the rows with poor titles (what
    shops send); ties go to the first in grid order. Stored in the model."""
    others = len(model.view_weights) - 1
    inputs: list[BatchSource] = [features]
    if titles is not None and titles.poor is not None:
        inputs.append(titles.poor_inputs(features))
    best: tuple[float, list[float]] = (-1.0, list(model.view_weights))
    for combination in itertools.product(VIEW_GRID, repeat=others):
        model.view_weights = [1.0, *combination]
        score = 0.0
        for source in inputs:
            val = evaluate_split(model, source, labels, val_idx, levels, device, batch_size)
            score += float(np.mean([m["accuracy"] + m["macro_f1"] for m in val.values()]))
        if score > best[0]:
            best = (score, list(model.view_weights))
    model.view_weights = best[1]
    return best[1]


TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 121))


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
            outputs = _forward(model, features.batch(rows[start : start + batch_size]), device)
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


def _forward(model: FusionModel, batch: Batch, device: str) -> tuple[torch.Tensor, ...]:
    raw, masks, cached = batch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return model(
        {slug: {k: tensor(v) for k, v in inputs.items()} for slug, inputs in raw.items()},
        {slug: tensor(m) for slug, m in masks.items()},
        {slug: tensor(c) for slug, c in cached.items()},
    )
