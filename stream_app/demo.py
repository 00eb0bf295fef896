"""``prodcat demo``'s parts: a quick model if none exists, unseen products, the live tally.

The products come from the bundle's own data set description (manifest ``dataset``): the
test split the training held out, topped up with rows after the training slice, so the
demo never scores the model on what it trained on. Some lose their photo (the model must
cope with missing modalities) and a few malformed events show the dead-letter path.
"""

from __future__ import annotations

import base64
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream_app.bundle import BundleError, ModelBundle
from stream_app.config import Settings
from stream_app.sources import read_source

PHOTOLESS_EVERY = 8  # every 8th demo product is sent without its photo


@dataclass
class DemoProduct:
    key: bytes
    value: bytes
    labels: dict[str, str]  # level -> true label; {} for malformed events
    title: str


def have_model(model_dir: Path) -> bool:
    try:
        ModelBundle.load(model_dir)
    except BundleError:
        return False
    return True


def train_quick_model(settings: Settings, model_dir: Path, rows: int) -> None:
    """Frozen pretrained encoders (MiniLM titles, EfficientNet-Lite0 photos) + an MLP head.

    The encoders are frozen, so their features are computed once (cached under the cache
    dir) and only the head trains: minutes on a laptop CPU, with progress bars.
    """
    from training.datasets import DatasetOptions
    from training.recipe import TrainSpec, run_training
    from training.trainer import TrainConfig

    run_training(
        TrainSpec(
            data=settings.data_path() / "fashion" / "catalog.csv",
            out=model_dir,
            dataset=DatasetOptions(with_images_only=True, limit=rows),
            train=TrainConfig(epochs=15, patience=4),
            cache_dir=Path(settings.cache_dir) / "features",
            overwrite=True,
        )
    )


def unseen_products(manifest: dict[str, Any], count: int) -> list[DemoProduct]:
    """``count`` labelled products the bundle did not train on (see module doc)."""
    from training.datasets import load_dataset

    info = manifest["dataset"]
    data = load_dataset(info["path"], info["format"], _dataset_options(info))
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


def _dataset_options(info: dict[str, Any]) -> Any:
    """The DatasetOptions that reproduce the bundle's split, from its manifest description."""
    from training.datasets import DatasetOptions

    return DatasetOptions(
        levels=info["levels"],
        with_images_only=info["with_images_only"],
        limit=info["limit"],
        seed=info["split"]["seed"],
        fractions=tuple(info["split"]["fractions"]),
        min_class_count=info["rare_classes"]["threshold"],
        rare=info["rare_classes"]["action"],
    )


def malformed_events(template: DemoProduct) -> list[DemoProduct]:
    """A few broken events, one per way things go wrong at the door."""
    event = orjson.loads(template.value)
    base = {k: v for k, v in event.items() if k != "image"}
    cases = [
        ("not JSON", b"{this is not json"),
        ("title is a number", orjson.dumps(base | {"title": 404})),
        ("unknown field", orjson.dumps(base | {"price_eur": 10})),
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
    return [
        DemoProduct(f"malformed-{i}".encode(), value, {}, title)
        for i, (title, value) in enumerate(cases)
    ]


@dataclass
class Tally:
    """Outcomes as they arrive, and the summary at the end."""

    levels: list[str]
    rate: float | None = None  # events/s the products were published at; None = one burst
    sent_at: dict[bytes, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # publish -> outcome received
    worker_ms: list[float] = field(default_factory=list)  # consumed -> assignment published
    correct: Counter[str] = field(default_factory=Counter)
    scored: int = 0
    assigned: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    first_sent: float | None = None
    last_outcome: float | None = None

    def sent(self, key: bytes) -> None:
        now = time.time()
        self.sent_at[key] = now
        self.first_sent = self.first_sent or now

    def assignment(self, value: dict[str, Any], received: float, truth: dict[str, str]) -> bool:
        """Record one assignment; True when every level matches the known labels."""
        self._arrived(value["product_id"].encode(), received)
        self.assigned += 1
        if value.get("latency_ms") is not None:
            self.worker_ms.append(value["latency_ms"])
        if not truth:
            return False
        self.scored += 1
        path = {c["level"]: c["label"] for c in value["category_path"]}
        hits = [path.get(level) == truth.get(level) for level in self.levels]
        for level, hit in zip(self.levels, hits, strict=True):
            self.correct[level] += hit
        return all(hits)

    def dead_letter(self, key: bytes | None, stage: str, reason: str, received: float) -> None:
        if key is not None:
            self._arrived(key, received)
        self.dead[f"{stage}: {reason}"] += 1

    @property
    def outcomes(self) -> int:
        return self.assigned + sum(self.dead.values())

    def _arrived(self, key: bytes, received: float) -> None:
        sent = self.sent_at.get(key)
        if sent is not None:
            self.latencies_ms.append((received - sent) * 1000)
        self.last_outcome = max(received, self.last_outcome or received)

    def summary(self) -> dict[str, Any]:
        elapsed = (self.last_outcome or 0) - (self.first_sent or 0)
        return {
            "published": "burst" if self.rate is None else f"{self.rate:g} events/s",
            "outcomes": self.outcomes,
            "assigned": self.assigned,
            "dead_letters": sum(self.dead.values()),
            "events_per_s": round(self.outcomes / elapsed, 1) if elapsed > 0 else None,
            "latency_ms": _percentiles(self.latencies_ms),
            "worker_latency_ms": _percentiles(self.worker_ms),
            "accuracy": {
                level: round(self.correct[level] / self.scored, 4) if self.scored else None
                for level in self.levels
            },
            "dead_letters_by_reason": dict(self.dead.most_common()),
        }


def _percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 1) for q in (50, 95, 99)}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN when there are no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
