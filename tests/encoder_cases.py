"""Real product rows and the encoder configurations shared by the encoder tests.

A plain module (no torch) so the cross-process featurize check can import it too.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from prodcat.contract.components import Encoder
from prodcat.plugins.image_encoders import EfficientNetLite0Encoder, TorchvisionEncoder
from prodcat.plugins.multilingual import UseMultilingualEncoder
from prodcat.plugins.text_encoders import HashgramEncoder, LstmEncoder, MiniLMEncoder

CHINESE = "女士纯棉短袖T恤 白色"
UNK_ID = 100  # MiniLM's [UNK]

# Small configs keep the trainable modules quick; the pretrained ones are the real thing.
SMALL_HASHGRAM = {"buckets": 1024, "dim": 16, "max_ids": 64}
SMALL_LSTM = {"buckets": 1024, "embedding_dim": 16, "hidden_size": 8, "max_tokens": 12}
SMALL_RESNET = {"arch": "resnet18", "image_size": 64, "resize": 64}


def all_encoders() -> list[Encoder]:
    return [
        HashgramEncoder(SMALL_HASHGRAM),
        MiniLMEncoder(),
        LstmEncoder(SMALL_LSTM),
        UseMultilingualEncoder(),
        EfficientNetLite0Encoder(),
        TorchvisionEncoder(SMALL_RESNET),
    ]


def first_rows(path: Path, count: int, keep: Any = lambda row: True) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(itertools.islice(filter(keep, csv.DictReader(handle)), count))


@pytest.fixture(name="sources", scope="module")
def sources_fixture(data_dir: Path) -> list[dict[str, Any]]:
    """JSON-able product descriptions (title, optional photo path) from the three data sets."""
    fashion = first_rows(data_dir / "fashion" / "catalog.csv", 3, lambda row: row["image"])
    pricerunner = first_rows(data_dir / "pricerunner" / "products.csv", 2)
    amazon = first_rows(data_dir / "amazon_uk_toys" / "products.csv", 2)
    return [
        *(
            {"title": r["productDisplayName"], "photo": str(data_dir / "fashion" / r["image"])}
            for r in fashion
        ),
        *({"title": r["product_title"]} for r in pricerunner),
        *({"title": r["product_name"]} for r in amazon),
        {"title": CHINESE},
        {"title": "", "photo": str(data_dir / "fashion" / fashion[0]["image"])},
    ]


def as_product(source: dict[str, Any]) -> dict[str, Any]:
    """The product as the preprocessors leave it: an RGB image under ``_image`` if any."""
    product = {"title": source["title"]}
    if "photo" in source:
        with Image.open(source["photo"]) as image:
            product["_image"] = image.convert("RGB")
    return product


@pytest.fixture(name="products", scope="module")
def products_fixture(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [as_product(source) for source in sources]
