"""Faust must never commit past an event still in flight.

Faust commits, per partition, the run of acked offsets that starts at the lowest acked one,
and refuses when that run does not start right at the committed offset. But it compares
with the committed offset as if it were the last processed offset, while it is the next
one to read: acked 11..15 after a commit of 10 (event 10 still in flight) passes the check,
and 16 is committed. The worker finishes events out of order (a product whose photo is
being fetched is overtaken by text-only ones), so exactly that happens whenever the event
right at the committed offset is the slow one, and a crash then would lose it. The same
check is skipped altogether before a partition's first commit. Found by
tests/test_kafka_broker.py (the lag test holds such an event back and watches Kafka's
committed offset).

``never_past_in_flight`` wraps the consumer's offset calculation: no commit while an event
at or below the lowest acked offset is still in flight. At-least-once then holds however
events finish; exactly-once publishes and acks in offset order anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def never_past_in_flight(consumer: Any, lowest_in_flight: Callable[[str, int], int | None]) -> None:
    """Make Faust's ``consumer`` commit nothing past ``lowest_in_flight(topic, partition)``.

    Idempotent; install it once the consumer exists (on partition assignment).
    """
    original = consumer._new_offset
    if getattr(original, "__wrapped__", None) is not None:
        return

    def new_offset(tp: Any) -> int | None:
        floor = lowest_in_flight(tp.topic, tp.partition)
        acked = consumer._acked.get(tp)
        if floor is not None and acked and min(acked) > floor:
            return None  # the event at ``floor`` is not done: commit nothing yet
        return original(tp)

    new_offset.__wrapped__ = original  # type: ignore[attr-defined]
    consumer._new_offset = new_offset
