"""End to end against a real embedded broker: publish 1,000 fashion products with photos."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest

from prodcat.core.events import decode_product
from prodcat.core.settings import Settings
from prodcat.kafka.clients import (
    BrokerUnreachable,
    consumer,
    ensure_topics,
    probe_metadata,
    producer,
)
from prodcat.kafka.embedded import BrokerError, EmbeddedBroker, embedded_broker
from prodcat.kafka.publisher import publish_rows
from prodcat.sources import SourceRow, read_source

pytestmark = pytest.mark.integration
COUNT = 1000
TRACEPARENT = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$"


def rows_with_photos(catalog: Path) -> Iterator[SourceRow]:
    return islice((r for r in read_source(catalog) if r.event and "image" in r.event), COUNT)


def test_thousand_fashion_products_with_photos_round_trip(broker: str, data_dir: Path) -> None:
    settings = Settings(broker=broker)
    settings.topics.products = "roundtrip.products"
    assert ensure_topics(settings, broker)["roundtrip.products"] == 4
    catalog = data_dir / "fashion" / "catalog.csv"
    client = producer(settings, broker)
    try:
        summary = publish_rows(client, rows_with_photos(catalog), settings.topics.products)
    finally:
        client.close()
    assert (summary.sent, summary.rejected, summary.failed) == (COUNT, 0, 0)

    reader = consumer(settings, broker, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    reader.subscribe([settings.topics.products])
    received = list(islice(reader, COUNT))
    reader.close()

    assert len(received) == COUNT
    ids, traces = set(), set()
    for message in received:
        event = decode_product(message.value)
        headers = {name: value.decode() for name, value in message.headers}
        assert message.key == event["product_id"].encode()
        assert headers["event_id"] == event["event_id"]
        assert headers["content-type"] == "application/json"
        assert re.fullmatch(TRACEPARENT, headers["traceparent"])
        photo = catalog.parent / "images" / f"{event['product_id']}.jpg"
        assert base64.b64decode(event["image"]["data"]) == photo.read_bytes()
        ids.add(event["event_id"])
        traces.add(headers["traceparent"][3:35])
    assert len(ids) == len(traces) == COUNT  # a fresh trace per event
    assert len({m.partition for m in received}) == 4  # keys spread over the partitions


def test_port_in_use_is_a_clear_error(embedded_broker: str) -> None:
    port = int(embedded_broker.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
        EmbeddedBroker(port=port).start()


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-tansu"))
    with pytest.raises(BrokerError, match="binary not found"):
        EmbeddedBroker().start()


def test_stop_ends_the_broker_process() -> None:
    with EmbeddedBroker() as broker:
        assert broker.running() and broker.pid is not None
        pid = broker.pid
    assert not broker.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_embedded_broker_lives_for_the_block() -> None:
    with embedded_broker() as bootstrap:
        assert probe_metadata(bootstrap) == []  # a fresh, empty embedded broker
        assert bootstrap.startswith("127.0.0.1:")
    with pytest.raises(BrokerUnreachable):
        probe_metadata(bootstrap, timeout_s=1)  # stopped with the block
