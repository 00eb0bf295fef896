"""The demo's products: labelled ones the model never trained on, and a few malformed ones.

The products come from the bundle's own data set description (manifest ``dataset``): the
test split the training held out, topped up with rows after the training slice, so the
demo never scores the model on what it trained on. Some lose their photo (the model must
cope with missing modalities) and a few malformed events show the dead-letter path.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from prodcat.sources import read_source

PHOTOLESS_EVERY = 8  # every 8th demo product is sent without its photo


@dataclass
class DemoProduct:
    key: bytes
    value: bytes
    labels: dict[str, str]  # level -> true label; {} for malformed events
    title: str


def unseen_products(manifest: dict[str, Any], count: int) -> list[DemoProduct]:
    """``count`` labelled products the bundle did not train on (see module doc)."""
    from prodcat.training.datasets import load_dataset, options_from_description

    info = manifest["dataset"]
    data = load_dataset(info["path"], info["format"], options_from_description(info))
    levels = data.label_space.levels
    picked: list[tuple[dict[str, Any], dict[str, str]]] = []
    seen: set[str] = set()
    for index in data.splits["test"]:
        record = data.records[index]
        labels = {
            level: data.label_space.classes[level][i]
            for level, i in zip(levels, record.labels, strict=True)
        }
        picked.append((record.product, labels))
        seen.add(record.product["product_id"])
    last_line = max(r.line for r in data.records)
    for row in read_source(info["path"], info["format"]):
        if len(picked) >= count:
            break
        if row.line <= last_line or row.event is None or not row.event.get("image"):
            continue
        if row.event["product_id"] in seen or any(not row.labels.get(lv) for lv in levels):
            continue
        picked.append((row.event, {lv: row.labels[lv] for lv in levels}))
    products = []
    for n, (event, labels) in enumerate(picked[:count]):
        if n % PHOTOLESS_EVERY == PHOTOLESS_EVERY - 1:
            event = {k: v for k, v in event.items() if k != "image"}
        key = str(event["product_id"]).encode()
        products.append(DemoProduct(key, orjson.dumps(event), labels, event["title"]))
    return products


def malformed_events(template: DemoProduct, photos: bool = True) -> list[DemoProduct]:
    """A few broken events, one per way things go wrong at the door.

    ``photos``: include the broken photos (a model without an image encoder never looks at
    a photo, so for it they are no fault).
    """
    event = orjson.loads(template.value)
    base = {k: v for k, v in event.items() if k != "image"}
    cases = [
        ("not JSON", b"{this is not json"),
        ("title is a number", orjson.dumps(base | {"title": 404})),
        ("unknown field", orjson.dumps(base | {"price_eur": 10})),
    ]
    photo_cases = [
        (
            "photo is not an image",
            orjson.dumps(
                base
                | {
                    "image": {
                        "data": base64.b64encode(b"definitely not a jpeg").decode(),
                        "media_type": "image/jpeg",
                    }
                }
            ),
        ),
        (
            "photo URL points at the cloud metadata service",
            orjson.dumps(base | {"image": {"url": "http://169.254.169.254/latest/meta-data"}}),
        ),
    ]
    if photos:
        cases += photo_cases
    return [
        DemoProduct(f"malformed-{i}".encode(), value, {}, title)
        for i, (title, value) in enumerate(cases)
    ]
