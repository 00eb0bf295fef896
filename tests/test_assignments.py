"""Reading assignments as a downstream service: valid ones, each source event once."""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson
import pytest

from prodcat.core.events import load_schema
from prodcat.core.settings import Settings
from prodcat.kafka.assignments import DuplicateFilter, read_assignments
from prodcat.kafka.clients import ensure_topics, producer


def assignment(product_id: str, event_id: str | None = None) -> dict[str, Any]:
    """A schema-valid assignment (the schema's own example, re-keyed)."""
    example = json.loads(json.dumps(load_schema("assignment")["examples"][0]))
    return example | {"product_id": product_id, "source_event_id": event_id or str(uuid.uuid4())}


def test_duplicate_filter_remembers_a_bounded_number_of_ids() -> None:
    duplicates = DuplicateFilter(memory=3)
    assert [duplicates.seen(i) for i in "abca"] == [False, False, False, True]
    assert duplicates.seen("d") is False  # evicts the least recently seen: b
    assert len(duplicates) == 3 and duplicates.seen("b") is False
    assert duplicates.dropped == 1
    with pytest.raises(ValueError):
        DuplicateFilter(memory=0)


@pytest.mark.integration
def test_read_assignments_drops_duplicates_and_invalid_messages(embedded_broker: str) -> None:
    settings = Settings(broker=embedded_broker)
    settings.topics.categories = "consumer.categories"
    ensure_topics(settings, embedded_broker)
    first = [assignment(f"p{n}") for n in range(5)]
    redelivered = [first[1], first[3]]  # a worker crash replays what it had not committed
    client = producer(settings, embedded_broker)
    for value in [*first[:3], b"not json", {"product_id": "p9"}, *redelivered, *first[3:]]:
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        client.send(settings.topics.categories, key=b"k", value=payload)
    client.flush(30)
    client.close()

    received = list(read_assignments(embedded_broker, settings=settings, idle_timeout_s=5))
    assert [a["product_id"] for a in received] == ["p0", "p1", "p2", "p3", "p4"]
