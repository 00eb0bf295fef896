"""The dispatcher: each consumed event to its acknowledged outcome, then the ack.

At-least-once, concretely. Faust acks (marks safe to commit) a stream's event when the
*next* one is taken, which would commit an event while its classification is still in the
batcher. So the agent iterates a ``noack()`` stream and hands each event to the
:class:`Dispatcher`, which classifies it, publishes the outcome, waits for the broker's
acknowledgement of that produce, and only then acks the event. Events finish out of order
(a text-only product overtakes one whose photo is being fetched); that is safe because
Faust commits, per partition, only up to the first offset not yet acked. A crash can
therefore replay events whose outcome was already published (duplicates, each carrying the
same ``source_event_id``), never skip one. The number of events in flight is bounded, so a
slow model slows consumption down instead of filling memory. Outcomes of events with the
same key (the same product) are published in the order the events were consumed, even when
a later one is classified first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from prodcat.worker.classifier import ASSIGNED, Outcome, Source
from prodcat.worker.memory import MemoryBudget
from prodcat.worker.runtime import Runtime

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, outcome: Outcome) -> None:
        """Send the outcome and return once the broker has acknowledged it."""


class Dispatcher:
    """Runs each consumed event to its acknowledged outcome, then acks it (see module doc)."""

    def __init__(
        self, runtime: Runtime, publisher: Publisher, limit: int, memory: MemoryBudget
    ) -> None:
        self.runtime = runtime
        self.publisher = publisher
        self.memory = memory
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task] = set()
        self._last_of_key: dict[Any, asyncio.Task] = {}  # per message key: newest task
        self.next_offset: dict[tuple[str, int], int] = {}  # per partition: next to consume
        runtime.metrics.watch_memory(lambda: memory.held, memory.limit)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def admit(self, event: Any, ack: Callable[[Any], Awaitable[Any]]) -> None:
        """Start handling ``event``; waits while ``limit`` events are already in flight
        or the memory budget says no (both are back-pressure on the consumer)."""
        await self.runtime.start()
        await self._slots.acquire()
        size = len(event.value or b"")
        await self.memory.acquire(size)
        self.runtime.metrics.in_flight.inc()
        message = event.message
        self.next_offset[(message.topic, message.partition)] = message.offset + 1
        key = (message.topic, message.partition, message.key)
        task = asyncio.create_task(self._handle(event, ack, self._last_of_key.get(key)))
        self._last_of_key[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, key, size))

    def forget_partitions(self) -> None:
        """After a rebalance the positions of partitions we no longer own are meaningless."""
        self.next_offset.clear()

    def backlog(self, highwater: Callable[[str, int], int | None]) -> int:
        """Events published but not yet consumed on the partitions this worker consumed from.

        ``highwater(topic, partition)`` is the high watermark the consumer last saw in a
        fetch response; partitions not fetched yet (no position or no watermark) count 0.
        """
        total = 0
        for (topic, partition), position in self.next_offset.items():
            end = highwater(topic, partition)
            if end is not None:
                total += max(0, end - position)
        return total

    def _done(self, task: asyncio.Task, key: Any, size: int) -> None:
        if self._last_of_key.get(key) is task:
            del self._last_of_key[key]
        self._tasks.discard(task)
        self._slots.release()
        self.memory.release(size)
        self.runtime.metrics.in_flight.dec()
        if not task.cancelled() and task.exception() is not None:
            # Not acked: the offset stays uncommitted and the event is redelivered later.
            log.error("event handling failed; left unacked", exc_info=task.exception())

    async def _handle(
        self, event: Any, ack: Callable[[Any], Awaitable[Any]], before: asyncio.Task | None
    ) -> None:
        source = source_of(event)
        outcome = await self.runtime.classifier.classify(event.value, source)
        if before is not None:
            # Same product key: publish in consumption order, so downstream keeps the newest.
            await asyncio.wait([before])
        await self.publisher.publish(outcome)
        metrics = self.runtime.metrics
        if outcome.kind == ASSIGNED:
            metrics.assigned(outcome.value)
        else:
            metrics.dead_letter(outcome.stage)
        if source.timestamp is not None:
            metrics.latency.observe(max(0.0, time.time() - source.timestamp))
        await ack(event)

    async def drain(self) -> None:
        """Wait until every admitted event has been published and acked."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def source_of(event: Any) -> Source:
    message = event.message
    return Source(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key if isinstance(message.key, bytes | None) else None,
        timestamp=message.timestamp or None,
        headers=_headers(message.headers),
    )


def _headers(headers: Any) -> Mapping[str, bytes]:
    """Faust gives headers as a mapping or a list of pairs, depending on the path."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {str(name).lower(): bytes(value or b"") for name, value in pairs}
