"""Training inputs: frozen encoders' outputs computed once and cached, raw inputs for the rest.

A frozen encoder (``Encoder.frozen``) has no trainable weights, so its output for a product
never changes during training: it is computed once per data set, written to
``<cache_dir>/features/<slug>-<key>.npz`` (key = fingerprint of the encoder, the
preprocessors and the data set's identity) and reused by every later run, which makes
retraining a head take seconds. Trainable encoders get their raw featurizer inputs: held in
memory when they fit the memory budget, otherwise featurized again per batch; one whose
module has a frozen prefix (an image encoder fine-tuning its last blocks) gets that
prefix's cached outputs instead (``training.prefix_cache``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from prodcat.contract.components import MASK_INPUT, Product, fingerprint_of
from prodcat.contract.pipeline import Pipeline, input_name
from prodcat.training.augment import Augmentation
from prodcat.training.fusion import FusionModel
from prodcat.training.prefix_cache import PREFIX_INPUT, PrefixCache, build_prefix_cache

log = logging.getLogger(__name__)
CHUNK = 64
MEMORY_BUDGET = 1 << 30

Batch = tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], dict[str, np.ndarray]]


class BatchSource(Protocol):
    """Anything that hands out training batches by row index (a FeatureSet, or one seen
    with poor titles, ``training.title_dropout``)."""

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> Batch: ...


@dataclass
class FeatureSet:
    """Per-record training inputs for every encoder of a pipeline."""

    pipeline: Pipeline
    products: Sequence[Product]
    cached: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    lazy: list[str] = field(default_factory=list)
    prefixed: dict[str, PrefixCache] = field(default_factory=dict)
    failures: int = 0
    threads: int = 2

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> Batch:
        """(raw inputs per trainable slug, mask per slug, cached output per frozen slug).

        ``rng``: training, so a prefixed slug gets a random augmented copy of each photo.
        """
        idx = np.asarray(indices)
        raw: dict[str, dict[str, np.ndarray]] = {
            slug: {PREFIX_INPUT: cache.batch(idx, rng)} for slug, cache in self.prefixed.items()
        }
        masks = {slug: m[idx] for slug, m in self.masks.items()}
        for name, _, spec in self.pipeline.inputs():
            if name in self.raw:
                slug = name.split("__", 1)[0]
                raw.setdefault(slug, {})[spec.name] = self.raw[name][idx]
        if self.lazy:
            sub = sub_pipeline(self.pipeline, self.lazy)
            with ThreadPoolExecutor(self.threads) as pool:
                items, _ = sub.featurize_many([self.products[i] for i in idx], pool)
            batch = sub.collate(items)
            for slug in self.lazy:
                raw[slug] = {s.name: batch[input_name(slug, s.name)] for s in sub.specs[slug]}
                masks[slug] = raw[slug][MASK_INPUT]
        cached = {slug: c[idx] for slug, c in self.cached.items()}
        return raw, masks, cached


def build_features(
    pipeline: Pipeline,
    model: FusionModel,
    products: Sequence[Product],
    identity: dict[str, Any],
    cache_dir: Path | None,
    device: str = "cpu",
    threads: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
    augmentation: tuple[Augmentation, int] | None = None,
) -> FeatureSet:
    """Load or compute every encoder's training inputs for ``products``.

    ``augmentation``: (augmentation, copies per photo) for prefixed encoders' caches.
    """
    threads = threads or os.cpu_count() or 1
    fs = FeatureSet(pipeline, products, threads=threads)
    n = len(products)
    keys = {}
    todo: list[str] = []
    augment, copies = augmentation or (Augmentation(), 1)
    for slug, encoder in zip(pipeline.slugs, pipeline.encoders, strict=True):
        module = model.encoders[slug]
        if model.frozen[slug]:
            keys[slug] = _cache_key(pipeline, encoder.describe(), identity)
            if not _load_cached(fs, slug, _cache_path(cache_dir, slug, keys[slug])):
                todo.append(slug)
        elif hasattr(module, "frozen_prefix"):
            what = {"prefix": encoder.describe(), "augment": augment.describe(), "copies": copies}
            key = _cache_key(pipeline, what, identity)
            fs.prefixed[slug], fs.masks[slug] = build_prefix_cache(
                pipeline,
                slug,
                module,
                products,
                _cache_path(cache_dir, f"{slug}-prefix", key),
                augment,
                copies,
                device,
                threads,
            )
        elif n * _item_bytes(pipeline, slug) <= memory_budget:
            todo.append(slug)
        else:
            fs.lazy.append(slug)
    if todo:
        _compute(fs, model, todo, device)
        for slug in todo:
            if slug in keys and cache_dir is not None:
                _save_cached(fs, slug, _cache_path(cache_dir, slug, keys[slug]))
    return fs


def _compute(fs: FeatureSet, model: FusionModel, slugs: list[str], device: str) -> None:
    """One featurize pass over all products for ``slugs``; frozen ones are run right away."""
    sub = sub_pipeline(fs.pipeline, slugs)
    n = len(fs.products)
    names = ", ".join(slugs)
    with (
        ThreadPoolExecutor(fs.threads) as pool,
        tqdm(total=n, desc=f"featurize {names}", unit="item") as bar,
        torch.inference_mode(),
    ):
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, CHUNK):
            items, failed = sub.featurize_many(fs.products[start : start + CHUNK], pool)
            fs.failures += failed
            batch = sub.collate(items)
            for slug in slugs:
                inputs = {s.name: batch[input_name(slug, s.name)] for s in sub.specs[slug]}
                chunks.setdefault(f"{slug}/mask", []).append(inputs[MASK_INPUT])
                if model.frozen[slug]:
                    chunks.setdefault(slug, []).append(_embed_present(model, slug, inputs, device))
                else:
                    for name, array in inputs.items():
                        chunks.setdefault(input_name(slug, name), []).append(array)
            bar.update(len(items))
    if fs.failures:
        log.warning("%d product(s) could not be featurized; trained as all-missing", fs.failures)
    for slug in slugs:
        fs.masks[slug] = np.concatenate(chunks.pop(f"{slug}/mask"))
        if model.frozen[slug]:
            fs.cached[slug] = np.concatenate(chunks.pop(slug))
    fs.raw.update({name: np.concatenate(parts) for name, parts in chunks.items()})


def _embed_present(
    model: FusionModel, slug: str, inputs: dict[str, np.ndarray], device: str
) -> np.ndarray:
    """A frozen encoder's output for the rows that have its modality; zeros for the rest.

    The fusion masks a missing modality's output anyway, and most catalogue rows have no
    photo: running the image encoder on their blank pixels would cost most of the pass.
    """
    present = np.flatnonzero(inputs[MASK_INPUT] > 0)
    out = np.zeros((len(inputs[MASK_INPUT]), model.norms[slug].normalized_shape[0]), np.float32)
    if len(present):
        tensors = {k: torch.from_numpy(v[present]).to(device) for k, v in inputs.items()}
        out[present] = model.embed(slug, tensors).float().cpu().numpy()
    return out


def sub_pipeline(pipeline: Pipeline, slugs: Sequence[str]) -> Pipeline:
    pairs = [(s, e) for s, e in zip(pipeline.slugs, pipeline.encoders, strict=True) if s in slugs]
    return Pipeline(pipeline.preprocessors, [e for _, e in pairs], [s for s, _ in pairs])


def _item_bytes(pipeline: Pipeline, slug: str) -> int:
    return sum(
        int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
        for spec in pipeline.specs[slug]
    )


def _cache_key(pipeline: Pipeline, encoder: dict[str, Any], identity: dict[str, Any]) -> str:
    return fingerprint_of(
        {
            "encoder": encoder,
            "preprocessors": [p.describe() for p in pipeline.preprocessors],
            "data": identity,
        }
    )


def _cache_path(cache_dir: Path | None, slug: str, key: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / "features" / f"{slug}-{key}.npz"


def _load_cached(fs: FeatureSet, slug: str, path: Path | None) -> bool:
    if path is None or not path.is_file():
        return False
    with np.load(path) as data:
        if len(data["mask"]) != len(fs.products):
            return False
        fs.cached[slug], fs.masks[slug] = data["output"], data["mask"]
    log.info("using cached %s features from %s", slug, path)
    return True


def _save_cached(fs: FeatureSet, slug: str, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, output=fs.cached[slug], mask=fs.masks[slug])
    tmp.replace(path)
