"""Cap how long the worker's Kafka fetches wait for data (Faust hard-codes 1.5 s).

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``. Apache Kafka answers a
waiting fetch as soon as data arrives, so the value only matters when idle; the embedded
broker (Tansu) lets a fetch wait out much of that time even when data arrives meanwhile.
Measured against it at 10 messages/s: 353 ms median / 664 ms p90 from produce to consume
with 1,500 ms, 4 / 7 ms with 50 ms (docs/benchmarks.md). With the cap an idle worker sends
one small fetch request per ``FETCH_MAX_WAIT_MS``, which costs nothing worth measuring.
"""

from __future__ import annotations

from typing import Any

FETCH_MAX_WAIT_MS = 100


def cap_fetch_wait(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make Faust's aiokafka driver create consumers that wait at most ``max_wait_ms``.

    Idempotent. aiokafka reads the value when the consumer starts, so setting it on the
    freshly built consumer is enough.
    """
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    original = getattr(thread._create_worker_consumer, "__wrapped__", None)
    original = original or thread._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = min(consumer._fetch_max_wait_ms, max_wait_ms)
        return consumer

    create.__wrapped__ = original  # type: ignore[attr-defined]
    thread._create_worker_consumer = create
