"""The products every benchmark publishes or featurises: real rows with their photo inline.

Taken from the end of the data file (the rows small training slices never reach), so a
benchmark classifies photos the way a shop publishes them. A fashion ``catalog.csv`` or a
product-event JSONL file (``bench/gpu.sh prepare`` writes one to carry to a GPU machine).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

from prodcat.sources import detect_format, read_source

Product = dict[str, Any]


class DataError(ValueError):
    """The data file is missing or holds too few products with a photo."""


def photo_products(path: Path, count: int) -> list[Product]:
    """The last ``count`` valid product events of ``path`` that carry a photo inline."""
    if not path.is_file():
        raise DataError(f"{path} not found; set data_dir (PRODCAT_DATA_DIR) or pass --data")
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
