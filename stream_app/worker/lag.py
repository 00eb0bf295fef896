"""Consumer lag as Kafka defines it: end offset minus the group's committed offset.

Per partition the worker owns: the end is the high watermark of the consumer's last fetch
response (the last stable offset under exactly-once, where the consumer reads committed
data only), the committed offset is the one Faust last committed or found on assignment.
Both are what Kafka's admin API reports for the group (tests/test_kafka_semantics.py checks
they agree), but read locally: no request per scrape, and the fetch watermark is right on the
embedded broker too, whose ListOffsets answers are not. Consumed but uncommitted events
(in flight) count as lag, as they do for Kafka. A partition not fetched yet is left out;
one without a committed offset counts from offset 0.
"""

from __future__ import annotations

from typing import Any


def committed_lag(consumer: Any, topic: str) -> dict[tuple[str, int], int]:
    """``{(topic, partition): end - committed}`` for the assigned partitions of ``topic``."""
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
    except Exception:  # noqa: BLE001 - consumer not started yet
        return {}
    lag = {}
    for tp in assigned:
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - revoked meanwhile
            continue
        if end is None or end < 0:
            continue
        committed = consumer._committed_offset.get(tp) or 0  # Faust keeps no public view
        lag[(tp.topic, tp.partition)] = max(0, end - committed)
    return lag
