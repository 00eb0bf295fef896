"""A bounded cache of image embeddings, keyed by the photo's bytes.

Shops republish products (a price change, a new colour name) with the same photo; the image
encoder is most of a product's model cost, so its embedding is worth keeping. The key is a
SHA-256 of the photo as the event carries it (the inline base64 text, or the bytes fetched
from its URL), never the URL alone: what a URL serves can change. The cache belongs to one
loaded model (a reload starts an empty one), holds at most ``[worker] image_cache_size``
embeddings (least recently used go first; about 5 KB each for EfficientNet-Lite0), and
counts hits and misses (``prodcat_image_cache_lookups_total``). It is used from the event
loop only, so it needs no lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol

import numpy as np

from prodcat.contract.components import IMAGE_BYTES_KEY, Product


class CacheObserver(Protocol):
    def cache_lookup(self, hit: bool) -> None: ...


def photo_key(product: Product) -> str | None:
    """SHA-256 of the product's photo as received, or None when it has none."""
    fetched = product.get(IMAGE_BYTES_KEY)
    if fetched is not None:
        return hashlib.sha256(bytes(fetched)).hexdigest()
    image = product.get("image")
    data = image.get("data") if isinstance(image, dict) else None
    if isinstance(data, str) and data:
        return hashlib.sha256(data.encode()).hexdigest()
    return None


class EmbeddingCache:
    """At most ``size`` embeddings, least recently used evicted first."""

    def __init__(self, size: int, observer: CacheObserver) -> None:
        if size < 1:
            raise ValueError(f"image_cache_size must be at least 1 to cache, got {size}")
        self.size = size
        self.observer = observer
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> np.ndarray | None:
        vector = self._entries.get(key)
        self.observer.cache_lookup(vector is not None)
        if vector is not None:
            self._entries.move_to_end(key)
        return vector

    def put(self, key: Hashable, vector: np.ndarray) -> None:
        self._entries[key] = np.array(vector, dtype=np.float32)  # a copy: not a view of a batch
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
