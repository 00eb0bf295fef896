"""The products every benchmark publishes or featurises: real rows with their photo inline.

When the data file is the one the bundle was trained on, they are its test split's rows
with a photo, which training never saw: the cascade's share of products decided by the
title depends on how sure the model is, and it is surest of the rows it trained on.
Otherwise they are the end of the file (the rows small training slices never reach). A
fashion ``catalog.csv`` or a product-event JSONL file (``bench/gpu.sh prepare`` writes one
to carry to a GPU machine).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

from prodcat.model.bundle import ModelBundle
from prodcat.sources import detect_format, read_source

Product = dict[str, Any]


class DataError(ValueError):
    """The data file is missing or holds too few products with a photo."""


def photo_products(path: Path, count: int, bundle: ModelBundle | None = None) -> list[Product]:
    """Up to ``count`` product events of ``path`` that carry a photo inline: the bundle's
    test split when ``path`` is its training file, else the last ones."""
    if not path.is_file():
        raise DataError(f"{path} not found; set data_dir (PRODCAT_DATA_DIR) or pass --data")
    trained_on = bundle is not None and Path(bundle.manifest["dataset"]["path"]).resolve()
    if bundle is not None and trained_on == path.resolve():
        from prodcat.training.evaluate import load_eval_data  # training extra, not on a GPU host

        rows = load_eval_data(bundle, path, "test", with_images_only=True).products
        return [row for row in rows if (row.get("image") or {}).get("data")][:count]
    rows = [
        row.event
        for row in read_source(path, detect_format(path))
        if row.event is not None and (row.event.get("image") or {}).get("data")
    ]
    if not rows:
        raise DataError(f"{path}: no product events with an inline photo")
    return rows[-count:]


def cycle(products: list[Product], count: int, start: int = 0) -> list[Product]:
    """``count`` products, wrapping around the list (for runs longer than the list)."""
    return [products[(start + i) % len(products)] for i in range(count)]


def as_messages(products: list[Product]) -> list[tuple[str, bytes, bytes]]:
    """(event id, key, value) per product, each with a fresh event id.

    The same product may be published several times in one run (warm-up, each load level);
    a fresh ``event_id`` tells its outcomes apart. Encoded ahead of time so a burst
    measures the pipeline, not the publisher's JSON encoding.
    """
    messages = []
    for product in products:
        event_id = str(uuid.uuid4())
        value = orjson.dumps({**product, "event_id": event_id})
        messages.append((event_id, str(product["product_id"]).encode(), value))
    return messages
