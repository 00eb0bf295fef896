"""Fine-tuning an encoder's last blocks cheaply: its frozen early layers run once per photo.

An encoder module with ``frozen_prefix`` / ``trainable_suffix`` (EfficientNet-Lite0 with
``trainable_blocks``) spends most of its time in the frozen early layers, whose output
never changes during training. Their output is computed once for ``copies`` versions of
each photo (copy 0 as is, the others augmented, ``training.augment``), stored in float16
under ``<cache_dir>/features/<slug>-prefix-<key>.npz`` and reused by later runs; an epoch
then runs only the trainable blocks, on a random copy per photo (validation: copy 0).
Rows without the modality get no entry at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prodcat.contract.components import MASK_INPUT, Product
from prodcat.contract.pipeline import Pipeline, input_name
from prodcat.training.augment import Augmentation

log = logging.getLogger(__name__)
PREFIX_INPUT = "__prefix__"  # the raw input name that carries a cached prefix output
CHUNK = 64


@dataclass
class PrefixCache:
    outputs: np.ndarray  # (copies, rows with the modality, *feature map), float16
    where: np.ndarray  # row -> index into outputs' second axis, -1 = no modality

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Float32 prefix outputs of ``rows`` (zeros where missing); a random copy per row
        with ``rng``, else the unaugmented copy."""
        index = self.where[rows]
        out = np.zeros((len(rows), *self.outputs.shape[2:]), np.float32)
        have = index >= 0
        copies = (
            rng.integers(0, len(self.outputs), int(have.sum()))
            if rng is not None
            else np.zeros(int(have.sum()), np.int64)
        )
        out[have] = self.outputs[copies, index[have]]
        return out


def build_prefix_cache(
    pipeline: Pipeline,
    slug: str,
    module: torch.nn.Module,
    products: Sequence[Product],
    path: Path | None,
    augmentation: Augmentation,
    copies: int,
    device: str,
    threads: int,
    seed: int = 0,
) -> tuple[PrefixCache, np.ndarray]:
    """The prefix cache of ``slug`` and its mask per row, loaded from ``path`` or computed."""
    if path is not None and path.is_file():
        with np.load(path) as data:
            if len(data["where"]) == len(products):
                log.info("using cached %s prefix outputs from %s", slug, path)
                return PrefixCache(data["outputs"], data["where"]), data["mask"]
    sub = Pipeline(pipeline.preprocessors, [pipeline.encoders[pipeline.slugs.index(slug)]], [slug])
    generator = torch.Generator().manual_seed(seed)
    masks, parts = [], []
    pixels_name = next(s.name for s in sub.specs[slug] if s.name != MASK_INPUT)
    with (
        ThreadPoolExecutor(threads) as pool,
        tqdm(total=len(products), desc=f"prefix {slug} x{copies}", unit="item") as bar,
        torch.inference_mode(),
    ):
        for start in range(0, len(products), CHUNK):
            items, _ = sub.featurize_many(products[start : start + CHUNK], pool)
            batch = sub.collate(items)
            mask = batch[input_name(slug, MASK_INPUT)]
            masks.append(mask)
            present = np.flatnonzero(mask > 0)
            if len(present):
                pixels = torch.from_numpy(batch[input_name(slug, pixels_name)][present])
                versions = [pixels] + [augmentation(pixels, generator) for _ in range(copies - 1)]
                parts.append(
                    np.stack(
                        [
                            module.frozen_prefix(v.to(device)).cpu().numpy().astype(np.float16)
                            for v in versions
                        ]
                    )
                )
            bar.update(len(items))
    mask = np.concatenate(masks)
    where = np.full(len(mask), -1, np.int64)
    where[mask > 0] = np.arange(int((mask > 0).sum()))
    outputs = np.concatenate(parts, axis=1) if parts else np.zeros((copies, 0), np.float16)
    cache = PrefixCache(outputs, where)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, outputs=outputs, where=where, mask=mask)
        tmp.replace(path)
    return cache, mask
