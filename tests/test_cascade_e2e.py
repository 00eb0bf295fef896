"""The cascade end to end: embedded broker, real worker processes, real bundles of both formats.

A format-2 bundle (hashgram titles + frozen EfficientNet-Lite0 photos, with its calibrated
cascade, tests/bundles.py) classifies unseen fashion products with and without a photo:
every assignment says which path decided it, the worker's metrics agree with the
assignments, the image graph ran exactly for the photos the title did not decide, and a
corrupt photo is still a dead letter whichever path would have decided. The format-1
bundle of the same data is still served, every answer by the full path.
"""

from __future__ import annotations

import base64
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import photo_bundle
from harness import publish, read_topic, text_products, topic_settings, worker_env

from prodcat.kafka.clients import ensure_topics
from prodcat.sources import read_source
from prodcat.worker.child import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.training]

IMAGE = "image_efficientnet_lite0"
TRACEPARENT = "00-{:032x}-00f067aa0ba902b7-01"
PHOTOS = 60
WITHOUT = 20


def photo_events(data_dir: Path, count: int) -> list[dict[str, Any]]:
    """The last ``count`` fashion rows with a photo (inline), which training never saw."""
    rows = read_source(data_dir / "fashion" / "catalog.csv", "fashion")
    events = [r.event for r in rows if r.event is not None and r.event.get("image")]
    return events[-count:]


class Served:
    """A worker process that was given ``events``; its outcomes, read back from Kafka."""

    def __init__(
        self, bundle: Path, broker: str, tmp_path: Path, name: str, events: list[bytes]
    ) -> None:
        self.settings, topics = topic_settings(name)
        ensure_topics(self.settings, broker)
        env = worker_env(tmp_path, topics, name)
        self.worker = WorkerProcess(bundle, broker, tmp_path / f"{name}.log", env)
        self.broker, self.topics, self.events = broker, topics, events

    def run(self, assignments: int, letters: int) -> tuple[list[dict], list[dict]]:
        self.worker.start().wait_ready()
        messages = [
            (str(i).encode(), event, TRACEPARENT.format(i + 1))
            for i, event in enumerate(self.events)
        ]
        publish(self.settings, self.broker, messages)
        found = read_topic(self.settings, self.broker, self.topics["categories"], assignments, 300)
        dead = read_topic(self.settings, self.broker, self.topics["dlq"], letters, 60)
        time.sleep(2)  # the worker counts an outcome just after its produce is acknowledged
        return [a["value"] for a in found], [d["value"] for d in dead]

    def stop(self) -> None:
        code = self.worker.stop(signal.SIGTERM)
        assert code == 0, self.worker.tail()


def test_every_assignment_says_which_path_decided_it(
    data_dir: Path, embedded_broker: str, tmp_path: Path
) -> None:
    photos = photo_events(data_dir, PHOTOS)
    without = text_products(data_dir, WITHOUT, skip=200)
    broken = dict(photos[0], product_id="broken-photo")
    jpeg = base64.b64decode(photos[0]["image"]["data"])
    broken["image"] = {
        **photos[0]["image"],
        "data": base64.b64encode(jpeg[: len(jpeg) // 3]).decode(),
    }
    events = [orjson.dumps(e) for e in [*photos, *without, broken]]
    served = Served(photo_bundle(data_dir), embedded_broker, tmp_path, "cascade", events)
    try:
        assignments, letters = served.run(PHOTOS + WITHOUT, 1)
        worker = served.worker
        decided = {a["product_id"]: a["decided_by"] for a in assignments}
        assert len(assignments) == len(decided) == PHOTOS + WITHOUT, worker.tail()
        assert [d["stage"] for d in letters] == ["image.decode"]  # the title never hides it
        photo_ids = {str(e["product_id"]) for e in photos}
        by_photo = Counter(path for pid, path in decided.items() if pid in photo_ids)
        assert by_photo["text"] > 0 and by_photo["full"] > 0, by_photo
        assert {path for pid, path in decided.items() if pid not in photo_ids} == {"full"}
        counts = Counter(decided.values())
        for path in ("text", "full"):
            assert worker.metric("prodcat_decisions_total", {"decided_by": path}) == counts[path]
        # the photo's graph ran for exactly the photos the title did not decide
        image_rows = worker.metric("prodcat_batch_size_sum", {"graph": IMAGE})
        assert image_rows == by_photo["full"]
    finally:
        served.stop()


def test_a_format_1_bundle_is_still_served(
    data_dir: Path, embedded_broker: str, tmp_path: Path
) -> None:
    photos = photo_events(data_dir, 20)
    events = [orjson.dumps(e) for e in photos]
    served = Served(
        photo_bundle(data_dir, bundle_format=1), embedded_broker, tmp_path, "format1", events
    )
    try:
        assignments, _ = served.run(len(photos), 0)
        assert len(assignments) == len(photos)
        assert {a["decided_by"] for a in assignments} == {"full"}
        assert served.worker.metric("prodcat_batch_size_sum", {"graph": "model"}) == len(photos)
    finally:
        served.stop()
