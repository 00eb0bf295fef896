"""Category-word and whole-title dropout: training rows shown with the titles shops send.

A model trained on catalogue titles that name the article type reads the title and ignores
the photo. Per training row and epoch, with probability ``title_dropout`` the title is
hidden (only where the row has another modality to answer from), else with probability
``category_word_dropout`` the text encoders see the row's *poor* title (every category word
removed, ``training.title_variants``). Frozen text encoders' outputs for the poor titles
are computed once and cached like the full titles' (``training.feature_cache``), so this
costs one more pass of the text encoder per data set, and nothing per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.contract.components import Product
from prodcat.contract.pipeline import Pipeline
from prodcat.training.feature_cache import Batch, FeatureSet, build_features, sub_pipeline
from prodcat.training.fusion import FusionModel
from prodcat.training.title_variants import CategoryWords, no_photo, poor_title


@dataclass
class TitleDropout:
    """The text encoders' inputs for poor titles, and how often to use them."""

    text_slugs: list[str]
    other_slugs: list[str]
    poor: FeatureSet | None
    category_word_dropout: float
    title_dropout: float

    def poor_inputs(self, features: FeatureSet) -> PoorTitleInputs:
        assert self.poor is not None
        return PoorTitleInputs(features, self.poor)

    def apply(self, batch: Batch, rows: np.ndarray, rng: np.random.Generator) -> Batch:
        """``batch`` (of ``rows``) with some titles hidden and some made poor."""
        if not self.text_slugs:
            return batch
        raw, masks, cached = batch
        masks = dict(masks)
        draw = rng.random(len(rows))
        other = np.zeros(len(rows), dtype=bool)
        for slug in self.other_slugs:
            other |= masks[slug] > 0
        hide = (draw < self.title_dropout) & other
        poor = ~hide & (draw < self.title_dropout + self.category_word_dropout)
        if self.poor is not None and poor.any():
            raw, masks, cached = _take(self.poor.batch(rows), (raw, masks, cached), poor)
        for slug in self.text_slugs:
            masks[slug] = np.where(hide, 0.0, masks[slug]).astype(np.float32)
        return raw, masks, cached


@dataclass
class PoorTitleInputs:
    """Every row of ``features`` with its poor title (validation: what shops send)."""

    features: FeatureSet
    poor: FeatureSet

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> Batch:
        rows = np.asarray(indices)
        every = np.ones(len(rows), dtype=bool)
        return _take(self.poor.batch(rows), self.features.batch(rows, rng), every)


def _take(source: Batch, target: Batch, rows: np.ndarray) -> Batch:
    """``target`` with every part ``source`` has replaced by ``source``'s on ``rows``."""
    raw, masks, cached = ({**part} for part in target)
    for slug, inputs in source[0].items():
        raw[slug] = {k: np.where(_wide(rows, v), v, raw[slug][k]) for k, v in inputs.items()}
    for slug, mask in source[1].items():
        masks[slug] = np.where(rows, mask, masks[slug])
    for slug, output in source[2].items():
        cached[slug] = np.where(_wide(rows, output), output, cached[slug])
    return raw, masks, cached


def _wide(rows: np.ndarray, like: np.ndarray) -> np.ndarray:
    return rows.reshape((-1,) + (1,) * (like.ndim - 1))


def build_title_dropout(
    pipeline: Pipeline,
    model: FusionModel,
    products: Sequence[Product],
    classes: dict[str, list[str]],
    identity: dict[str, Any],
    cache_dir: Path | None,
    rates: tuple[float, float],
    device: str = "cpu",
    threads: int | None = None,
) -> TitleDropout:
    """``rates``: (category-word dropout, title dropout); the poor titles' inputs are only
    computed when category-word dropout is on."""
    modality = dict(zip(pipeline.slugs, (e.modality for e in pipeline.encoders), strict=True))
    text = [s for s, kind in modality.items() if kind == "text"]
    other = [s for s, kind in modality.items() if kind != "text"]
    word_rate, title_rate = rates
    poor = None
    if text and word_rate > 0:
        words = CategoryWords.from_classes(classes)
        poor = build_features(
            sub_pipeline(pipeline, text),
            model,
            [no_photo(poor_title(p, words)) for p in products],
            {**identity, "titles": words.describe()},
            cache_dir,
            device,
            threads,
        )
    return TitleDropout(text, other, poor, word_rate, title_rate)
