"""Test harness around real worker processes: a photo server and a topic reader.

Shared by the worker end-to-end tests and the reliability tests built on them (crash
recovery, overload...). Everything binds 127.0.0.1 on free ports and is stopped by PID.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import orjson

from prodcat.core.settings import Settings
from prodcat.kafka.clients import consumer as kafka_consumer
from prodcat.kafka.clients import producer as kafka_producer
from prodcat.worker.child import WorkerProcess


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Request handler base for the tests' servers: helpers for replies, no access log."""

    def redirect(self, target: str) -> None:
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class LocalServer:
    """A threading HTTP server on 127.0.0.1 (free port) for a ``with`` block."""

    def __init__(self, handler: type[QuietHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class PhotoServer(LocalServer):
    """Serves ``<root>/<name>`` as image/jpeg, plus hostile routes, on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        photos = root

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/loop":
                    self.redirect("/loop")
                elif self.path == "/page":
                    self.reply(200, "text/html", b"<html>not a photo</html>")
                elif self.path.startswith("/photos/"):
                    file = photos / Path(self.path).name
                    if file.is_file():
                        self.reply(200, "image/jpeg", file.read_bytes())
                    else:
                        self.reply(404, "text/plain", b"no such photo")
                else:
                    self.reply(404, "text/plain", b"not found")

        super().__init__(Handler)


def read_topic(
    settings: Settings,
    bootstrap: str,
    topic: str,
    expect: int,
    timeout_s: float,
    isolation_level: str = "read_uncommitted",
) -> list[dict[str, Any]]:
    """Read ``topic`` from the start until ``expect`` messages arrived or the time is up."""
    return read_until(
        settings, bootstrap, topic, lambda found: len(found) >= expect, timeout_s, isolation_level
    )


def read_until(
    settings: Settings,
    bootstrap: str,
    topic: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float,
    isolation_level: str = "read_uncommitted",
    linger_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Read ``topic`` from the start, with one consumer, until ``done(messages)`` (then
    ``linger_s`` more, for late arrivals such as duplicates) or the time is up.

    For topics that may hold duplicates, where a count of messages proves nothing.
    """
    from kafka import TopicPartition

    consumer = kafka_consumer(
        settings,
        bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    partitions = sorted(consumer.partitions_for_topic(topic) or [])
    assert partitions, f"topic {topic} does not exist"
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if done(messages):
                deadline = min(deadline, time.monotonic() + linger_s)
                if not linger_s:
                    break
            for records in consumer.poll(timeout_ms=200).values():
                messages += [_message(record) for record in records]
    finally:
        consumer.close()
    return messages


def _message(record: Any) -> dict[str, Any]:
    return {
        "key": record.key,
        "value": orjson.loads(record.value),
        "headers": dict(record.headers or []),
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp / 1000,
    }


def worker_env(tmp_path: Path, topics: dict[str, str], group: str) -> dict[str, str]:
    return {
        "PRODCAT_IMAGES__ALLOW_HOSTS": "127.0.0.1",
        "PRODCAT_CACHE_DIR": str(tmp_path / "cache"),
        "PRODCAT_WORKER__GROUP_ID": group,
        "PRODCAT_TOPICS__PRODUCTS": topics["products"],
        "PRODCAT_TOPICS__CATEGORIES": topics["categories"],
        "PRODCAT_TOPICS__DLQ": topics["dlq"],
    }


def topic_settings(prefix: str) -> tuple[Settings, dict[str, str]]:
    settings = Settings()
    names = {"products": f"{prefix}-products", "categories": f"{prefix}-categories"}
    names["dlq"] = f"{prefix}-products.dlq"
    settings.topics.products = names["products"]
    settings.topics.categories = names["categories"]
    settings.topics.dlq = names["dlq"]
    return settings, names


def publish(settings: Settings, bootstrap: str, messages: list[tuple[bytes, bytes, str]]) -> None:
    """(key, value, traceparent) each to the products topic, acknowledged."""
    producer = kafka_producer(settings, bootstrap)
    try:
        for key, value, traceparent in messages:
            producer.send(
                settings.topics.products,
                key=key,
                value=value,
                headers=[("traceparent", traceparent.encode())],
            )
        producer.flush(60)
    finally:
        producer.close()


def librdkafka_publish(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], codec: str
) -> None:
    """(key, value) pairs through a librdkafka producer (confluent-kafka) compressing its
    batches with ``codec``, as shops configure theirs; every one acknowledged."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "linger.ms": 50,
            "enable.idempotence": False,  # the embedded broker has no idempotent producers
            "acks": "all",
        }
    )
    failed: list[Any] = []
    for key, value in messages:
        producer.produce(topic, value, key, on_delivery=lambda err, _: failed.append(err))
    assert producer.flush(60) == 0, "librdkafka could not deliver everything in 60 s"
    assert not [error for error in failed if error is not None], failed


def text_products(data_dir: Path, count: int, skip: int = 0) -> list[dict[str, Any]]:
    """``count`` real fashion product events (title and description, no photo)."""
    from itertools import islice

    from prodcat.sources import read_source

    catalog = data_dir / "fashion" / "catalog.csv"
    rows = read_source(catalog, "fashion", inline_images=False)
    events = (row.event for row in rows if row.event is not None)
    picked = [dict(event) for event in islice(events, skip, skip + count)]
    for event in picked:
        event.pop("image", None)
    return picked


TRACE = "00-{:032x}-00f067aa0ba902b7-01"
PACED_WAIT_S = 240.0


def messages(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes, str]]:
    return [
        (str(e["product_id"]).encode(), orjson.dumps(e), TRACE.format(i + 1))
        for i, e in enumerate(events)
    ]


class PacedPublisher:
    """Publishes events in small chunks from a thread, so products keep flowing for a while."""

    def __init__(
        self, settings: Settings, bootstrap: str, events: list[dict[str, Any]], chunks: int
    ) -> None:
        size = max(1, len(events) // chunks)
        self._chunks = [events[i : i + size] for i in range(0, len(events), size)]
        self._args = (settings, bootstrap)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                publish(*self._args, messages(chunk))
                time.sleep(0.3)
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def __enter__(self) -> PacedPublisher:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.join()

    def join(self) -> None:
        self.thread.join(PACED_WAIT_S)
        if self.error is not None:
            raise self.error


def ids_covered(expected: set[str]) -> Any:
    return lambda found: expected <= {m["value"]["product_id"] for m in found}


def wait_for_split(workers: list[WorkerProcess], partitions: int) -> list[list[int]]:
    """Wait until every worker owns partitions, together all of them once each (a worker
    that joins late gets its share only at the next rebalance)."""
    deadline = time.monotonic() + 180
    owned: list[list[int]] = []
    while time.monotonic() < deadline:
        owned = [(w.ready() or {}).get("partitions", []) for w in workers]
        flat = [p for parts in owned for p in parts]
        if sorted(flat) == list(range(partitions)) and all(owned):
            return owned
        time.sleep(1)
    raise AssertionError(f"partitions never split across workers: {owned}")
