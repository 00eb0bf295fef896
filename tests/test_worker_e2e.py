"""The worker end to end: embedded broker, real worker processes, a real multimodal bundle.

The bundle (hashgram titles + frozen EfficientNet-Lite0 photos, format 2 with its text-first
cascade) is trained by the project's own training code on the first fashion rows with a
photo and cached under the cache dir, so only the first run pays for it. The products
published here are the *last* fashion rows with a photo, which that training never saw;
half carry the photo inline, half by URL from a local server (allow-listed), plus 50 bad
events of ten kinds.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import photo_bundle
from harness import (
    PhotoServer,
    publish,
    read_topic,
    topic_settings,
    wait_for_split,
    worker_env,
)

from prodcat.kafka.clients import ensure_topics
from prodcat.model.bundle import ModelBundle
from prodcat.sources import read_source
from prodcat.worker.child import PRODCAT, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.training]

TRAIN_ROWS = 600
PRODUCTS = 500
BAD_PER_KIND = 5
OUTCOME_TIMEOUT_S = 600.0  # upper bound only
TRACEPARENT = "00-{:032x}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def bundle(data_dir: Path) -> Path:
    """A real bundle trained on the first TRAIN_ROWS fashion rows with a photo (cached)."""
    return photo_bundle(data_dir, TRAIN_ROWS)


@pytest.fixture(scope="module")
def photo_server(data_dir: Path) -> Iterator[PhotoServer]:
    with PhotoServer(data_dir / "fashion" / "images") as server:
        yield server


def unseen_products(data_dir: Path, count: int) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(event without photo, labels) of the last ``count`` fashion rows that have a photo."""
    catalog = data_dir / "fashion" / "catalog.csv"
    with catalog.open(encoding="utf-8-sig", newline="") as handle:
        photos = {row["id"]: row["image"] for row in csv.DictReader(handle) if row["image"]}
    rows = [
        row
        for row in read_source(catalog, "fashion", inline_images=False)
        if row.event is not None and row.event["product_id"] in photos
    ]
    picked = rows[-count:]
    return [({**r.event, "_photo": photos[r.event["product_id"]]}, r.labels) for r in picked]


def with_photo(event: dict[str, Any], index: int, data_dir: Path, server: PhotoServer) -> dict:
    """Even rows get the photo inline, odd rows by URL from the local photo server."""
    event = dict(event)
    photo = event.pop("_photo")
    if index % 2 == 0:
        data = (data_dir / "fashion" / photo).read_bytes()
        event["image"] = {"data": base64.b64encode(data).decode(), "media_type": "image/jpeg"}
    else:
        event["image"] = {"url": server.url(f"/photos/{Path(photo).name}")}
    return event


def bad_events(
    good: dict[str, Any], data_dir: Path, server: PhotoServer
) -> list[tuple[bytes, str]]:
    """(raw value, expected dead-letter stage): ten kinds of broken events."""

    jpeg = next((data_dir / "fashion" / "images").glob("*.jpg")).read_bytes()

    def variant(**fields: Any) -> bytes:
        event = {k: v for k, v in good.items() if k != "_photo"} | fields
        return orjson.dumps({k: v for k, v in event.items() if v is not None})

    def inline(data: bytes) -> dict[str, str]:
        return {"data": base64.b64encode(data).decode(), "media_type": "image/jpeg"}

    return [
        (b"{not json", "decode"),
        (b"\xff\xfe\xfd not utf-8", "decode"),
        (variant(title=None), "schema"),
        (variant(title=42), "schema"),
        (variant(colour="blue"), "schema"),
        (variant(image=inline(b"this is not a photo at all")), "image.decode"),
        (variant(image=inline(jpeg[: len(jpeg) // 3])), "image.decode"),
        (variant(image={"url": "http://169.254.169.254/latest/meta-data/"}), "image_fetch"),
        (variant(image={"url": server.url("/loop")}), "image_fetch"),
        (variant(image={"url": server.url("/page")}), "image_fetch"),
    ]


def test_products_and_bad_events_each_end_as_exactly_one_outcome(
    bundle: Path, photo_server: PhotoServer, data_dir: Path, broker: str, tmp_path: Path
) -> None:
    settings, topics = topic_settings("e2e")
    ensure_topics(settings, broker)
    products = unseen_products(data_dir, PRODUCTS)
    labels = {event["product_id"]: label for event, label in products}

    good = [
        (str(e["product_id"]).encode(), orjson.dumps(with_photo(e, i, data_dir, photo_server)))
        for i, (e, _) in enumerate(products)
    ]
    kinds = bad_events(products[0][0], data_dir, photo_server)
    bad = [(f"bad-{k}-{n}".encode(), raw) for k, (raw, _) in enumerate(kinds) for n in range(5)]
    expected_stage = {f"bad-{k}-{n}": stage for k, (_, stage) in enumerate(kinds) for n in range(5)}
    messages = [
        (key, value, TRACEPARENT.format(i + 1)) for i, (key, value) in enumerate(good + bad)
    ]

    worker = WorkerProcess(
        bundle, broker, tmp_path / "worker.log", worker_env(tmp_path, topics, "e2e")
    ).start()
    try:
        worker.wait_ready()
        publish(settings, broker, messages)
        assignments = read_topic(
            settings, broker, topics["categories"], PRODUCTS, OUTCOME_TIMEOUT_S
        )
        letters = read_topic(settings, broker, topics["dlq"], len(bad), 60)
        time.sleep(2)  # the worker counts an outcome just after its produce is acknowledged
        assert (
            worker.metric("prodcat_events_total", {"outcome": "assigned", "stage": ""}) == PRODUCTS
        )

        ids = Counter(a["value"]["product_id"] for a in assignments)
        assert set(ids) == set(labels) and max(ids.values()) == 1, "missing or duplicated"
        stages = {
            base64.b64decode(d["value"]["original"]["key"]).decode(): d["value"]["stage"]
            for d in letters
        }
        assert len(letters) == len(bad) and stages == expected_stage, worker.tail()

        first = assignments[0]
        traceparent = first["headers"]["traceparent"].decode()
        assert first["value"]["traceparent"] == traceparent
        served = ModelBundle.load(bundle)
        assert first["value"]["model"]["fingerprint"] == served.fingerprint

        # needs_review at the bundle's own threshold (fitted when it was trained; no setting)
        threshold = served.review_threshold
        assert f"needs_review under {threshold:g};" in worker.log_path.read_text()
        for a in assignments:
            scores = [level["score"] for level in a["value"]["category_path"]]
            assert a["value"]["needs_review"] == (min(scores) < threshold)

        hits = sum(
            a["value"]["category_path"][0]["label"]
            == labels[a["value"]["product_id"]]["masterCategory"]
            for a in assignments
        )
        accuracy = hits / PRODUCTS
        print(f"masterCategory accuracy on {PRODUCTS} unseen products: {accuracy:.3f}")
        assert accuracy >= 0.95

        assert worker.get("/health")[0] == 200
        assert worker.ready() is not None
        assert worker.metric("prodcat_batch_size_count", {"graph": "head"}) > 0
    finally:
        code = worker.stop(signal.SIGTERM)
    assert code == 0, worker.tail()
    assert "Traceback" not in worker.log_path.read_text(errors="replace"), worker.tail()


def test_two_workers_share_the_partitions(
    bundle: Path, data_dir: Path, broker: str, tmp_path: Path
) -> None:

    settings, topics = topic_settings("pair")
    ensure_topics(settings, broker)
    products = [event for event, _ in unseen_products(data_dir, 120)]
    for event in products:
        event.pop("_photo")
    env = worker_env(tmp_path, topics, "pair")
    workers = [
        WorkerProcess(bundle, broker, tmp_path / f"worker{i}.log", env).start() for i in range(2)
    ]
    try:
        owned = wait_for_split(workers, settings.topics.partitions)
        assert all(owned), f"a worker got no partition: {owned}"
        publish(
            settings,
            broker,
            [(e["product_id"].encode(), orjson.dumps(e), TRACEPARENT.format(1)) for e in products],
        )
        assignments = read_topic(
            settings, broker, topics["categories"], len(products), OUTCOME_TIMEOUT_S
        )
        assert {a["value"]["product_id"] for a in assignments} == {
            e["product_id"] for e in products
        }
        per_worker = [
            w.metric("prodcat_events_total", {"outcome": "assigned", "stage": ""}) for w in workers
        ]
        assert all(n > 0 for n in per_worker), f"assigned per worker: {per_worker}"
        assert sum(per_worker) >= len(products)
    finally:
        codes = [w.stop(signal.SIGTERM) for w in workers]
    assert codes == [0, 0], "\n".join(w.tail() for w in workers)


def test_demo_prints_its_summary(bundle: Path, tmp_path: Path) -> None:
    """`prodcat demo --json` with a model present: own broker and worker, then the summary."""
    env = {**os.environ, "PRODCAT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PRODCAT_BROKER", None)
    done = subprocess.run(
        [PRODCAT, "demo", "--model", str(bundle), "--products", "40", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=OUTCOME_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["assigned"] == 40 and summary["dead_letters"] == 5
    assert sum(summary["dead_letters_by_reason"].values()) == 5
    assert summary["accuracy"]["masterCategory"] >= 0.9
    assert summary["events_per_s"] > 0
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]


def test_worker_refuses_a_bundle_it_cannot_serve(bundle: Path, tmp_path: Path) -> None:
    """Missing plugin or edited manifest: one line, exit 1, before touching Kafka."""
    from click.testing import CliRunner

    from prodcat.cli.main import cli
    from prodcat.model.bundle import MANIFEST_FILE, bundle_fingerprint

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    original = json.loads((copy / MANIFEST_FILE).read_text())
    runner = CliRunner()

    def serve(manifest: dict[str, Any]) -> Any:
        (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
        return runner.invoke(cli, ["worker", "--model", str(copy), "--broker", "127.0.0.1:9"])

    relabelled = json.loads(json.dumps(original))
    level = relabelled["levels"][0]
    relabelled["labels"][level][0] = "Renamed"
    edited = serve(relabelled)
    assert edited.exit_code == 1 and "fingerprint" in edited.output

    renamed = json.loads(json.dumps(original))
    renamed["encoders"][0]["name"] = "text.not_installed"
    renamed["fingerprint"] = bundle_fingerprint(renamed)
    missing = serve(renamed)
    assert missing.exit_code == 1 and "text.not_installed" in missing.output
    assert "Traceback" not in missing.output


def test_sigterm_mid_stream_drains_and_commits(
    bundle: Path, data_dir: Path, photo_server: PhotoServer, embedded_broker: str, tmp_path: Path
) -> None:
    """Stopped while events are in flight, then replaced: every product once, no duplicate."""
    settings, topics = topic_settings("drain")
    ensure_topics(settings, embedded_broker)
    products = [
        with_photo(event, i, data_dir, photo_server)
        for i, (event, _) in enumerate(unseen_products(data_dir, 300))
    ]
    env = worker_env(tmp_path, topics, "drain")
    # Few events in flight at a time, so most are still unconsumed when SIGTERM comes.
    slow = env | {"PRODCAT_WORKER__QUEUE_SIZE": "16", "PRODCAT_WORKER__MAX_BATCH_SIZE": "4"}
    first = WorkerProcess(bundle, embedded_broker, tmp_path / "first.log", slow).start()
    first.wait_ready()
    publish(
        settings,
        embedded_broker,
        [(e["product_id"].encode(), orjson.dumps(e), TRACEPARENT.format(1)) for e in products],
    )
    read_topic(settings, embedded_broker, topics["categories"], 30, OUTCOME_TIMEOUT_S)
    assert first.stop(signal.SIGTERM) == 0, first.tail()
    assert "Traceback" not in first.log_path.read_text(errors="replace"), first.tail()
    done_by_first = len(
        read_topic(settings, embedded_broker, topics["categories"], len(products), 5)
    )
    assert 30 <= done_by_first < len(products), "stop earlier: nothing was left in flight"

    second = WorkerProcess(bundle, embedded_broker, tmp_path / "second.log", env).start()
    try:
        second.wait_ready()
        assignments = read_topic(
            settings, embedded_broker, topics["categories"], len(products), OUTCOME_TIMEOUT_S
        )
        time.sleep(3)
        assignments = read_topic(
            settings, embedded_broker, topics["categories"], len(products) + 1, 5
        )
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.tail()
    ids = Counter(a["value"]["product_id"] for a in assignments)
    assert set(ids) == {e["product_id"] for e in products}
    duplicates = sum(ids.values()) - len(ids)
    print(f"first worker: {done_by_first} outcomes before SIGTERM; duplicates: {duplicates}")
    assert duplicates == 0
