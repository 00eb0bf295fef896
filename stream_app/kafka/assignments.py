"""Reading topics as downstream services do: records with their metadata, assignments deduplicated.

Delivery to ``categories`` is at-least-once: after a worker crash the same product event may
be assigned twice, both assignments carrying the event's ``source_event_id``. A consumer
keeps the first and drops the rest, remembering a bounded number of recent ids (duplicates
arrive close together: within one worker's uncommitted work)::

    from prodcat.kafka.assignments import read_assignments

    for assignment in read_assignments("kafka:9092", group_id="search-indexer"):
        index(assignment["product_id"], assignment["category_path"])

``prodcat tail`` reads through the same code.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from prodcat.core.events import EventError, validate
from prodcat.core.settings import Settings
from prodcat.kafka.clients import consumer

log = logging.getLogger(__name__)
POLL_MS = 500
DEFAULT_MEMORY = 100_000  # source event ids remembered for dropping duplicates


@dataclass(frozen=True)
class Record:
    """One message with everything a consumer may need: where, when, headers, parsed value."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None
    headers: dict[str, str]
    value: Any  # parsed JSON, or the text when the value is not JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key,
            "headers": self.headers,
            "value": self.value,
        }


def as_record(message: Any) -> Record:
    """A kafka-python ``ConsumerRecord`` as a :class:`Record`."""
    timestamp = (
        message.timestamp if message.timestamp is not None and message.timestamp >= 0 else None
    )
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=timestamp,
        key=message.key.decode("utf-8", "replace") if message.key is not None else None,
        headers={
            name: bytes(value or b"").decode("utf-8", "replace")
            for name, value in message.headers or []
        },
        value=_parse(message.value),
    )


def _parse(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


class DuplicateFilter:
    """Remembers the last ``memory`` source event ids; ``seen`` says whether one came before."""

    def __init__(self, memory: int = DEFAULT_MEMORY) -> None:
        if memory < 1:
            raise ValueError("memory must be at least 1")
        self.memory = memory
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.dropped = 0

    def seen(self, source_event_id: str) -> bool:
        """True (and counted as dropped) for an id already seen; else remember it."""
        if source_event_id in self._ids:
            self._ids.move_to_end(source_event_id)
            self.dropped += 1
            return True
        self._ids[source_event_id] = None
        if len(self._ids) > self.memory:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


def poll_records(
    client: Any,
    *,
    max_messages: int | None = None,
    idle_timeout_s: float | None = None,
    skip: Callable[[Any], bool] = lambda _message: False,
) -> Iterator[Record]:
    """Records from a kafka-python consumer until ``max_messages`` or ``idle_timeout_s``
    seconds without a new one (both None: forever). ``skip`` drops raw messages first."""
    count = 0
    last = time.monotonic()
    while max_messages is None or count < max_messages:
        batches = client.poll(timeout_ms=POLL_MS, max_records=max_messages and max_messages - count)
        if not batches:
            if idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                return
            continue
        last = time.monotonic()
        for message in (m for messages in batches.values() for m in messages):
            if skip(message):
                continue
            count += 1
            yield as_record(message)


def unique_assignments(
    records: Iterator[Record], duplicates: DuplicateFilter | None = None
) -> Iterator[Record]:
    """Records whose value is a valid assignment of a source event not seen before.

    Invalid values are logged and skipped (a consumer must not stop on one bad message).
    """
    duplicates = duplicates or DuplicateFilter()
    for record in records:
        try:
            validate("assignment", record.value)
        except EventError as exc:
            log.warning(
                "skipping %s[%d]@%d: not an assignment (%s)",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            continue
        if not duplicates.seen(record.value["source_event_id"]):
            yield record


def read_assignments(
    bootstrap: str,
    *,
    group_id: str | None = None,
    topic: str | None = None,
    from_beginning: bool = True,
    memory: int = DEFAULT_MEMORY,
    idle_timeout_s: float | None = None,
    settings: Settings | None = None,
    consumer_options: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Valid category assignments from ``bootstrap``, each source event once.

    Runs forever, or until ``idle_timeout_s`` seconds pass without a message (batch jobs).

    With a ``group_id`` offsets are committed as kafka-python does by default (auto-commit),
    so a restarted reader resumes where the group stopped; without one every call reads from
    the start (``from_beginning``) or only new assignments. ``settings`` supplies security
    options and topic names (defaults otherwise); ``consumer_options`` go to KafkaConsumer.
    """
    settings = settings or Settings()
    client = consumer(
        settings,
        bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **dict(consumer_options or {}),
    )
    client.subscribe([topic or settings.topics.categories])
    try:
        records = poll_records(client, idle_timeout_s=idle_timeout_s)
        for record in unique_assignments(records, DuplicateFilter(memory)):
            yield record.value
    finally:
        client.close()
