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
a later one is classified first; with ``per_partition`` ordering (exactly-once,
prodcat/worker/exactly_once.py) every partition's outcomes are published in that order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from prodcat.worker.classifier import ASSIGNED, Outcome, Source
from prodcat.worker.memory import MemoryBudget
from prodcat.worker.runtime import Runtime
from prodcat.worker.unreadable import unreadable_reason

log = logging.getLogger(__name__)


Settle = Callable[[], Awaitable[None]]


class Publisher(Protocol):
    async def publish(self, outcome: Outcome, source: Source, settle: Settle) -> None:
        """Send the outcome; call ``settle`` (acks the event) as soon as its offset may be
        committed; return once the broker has acknowledged the outcome."""


class Dispatcher:
    """Runs each consumed event to its acknowledged outcome, then acks it (see module doc)."""

    def __init__(
        self,
        runtime: Runtime,
        publisher: Publisher,
        limit: int,
        memory: MemoryBudget,
        per_partition: bool = False,
    ) -> None:
        self.runtime = runtime
        self.publisher = publisher
        self.memory = memory
        self.per_partition = per_partition
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task] = set()
        # per ordering key (message key, or partition): the newest event's "settled" future
        self._last_settled: dict[Any, asyncio.Future[None]] = {}
        self._offsets: dict[tuple[str, int], set[int]] = defaultdict(set)  # in flight
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
        pending = self._offsets[(message.topic, message.partition)]
        pending.add(message.offset)
        key = (message.topic, message.partition)
        key += () if self.per_partition else (message.key,)
        before = self._last_settled.get(key)
        settled = self._last_settled[key] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._handle(event, ack, before, settled))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, key, size, settled))
        task.add_done_callback(lambda _: pending.discard(message.offset))

    def lowest_in_flight(self, topic: str, partition: int) -> int | None:
        """The lowest offset of the partition still being handled (prodcat/worker/commits.py)."""
        offsets = self._offsets.get((topic, partition))
        return min(offsets) if offsets else None

    def _done(self, task: asyncio.Task, key: Any, size: int, settled: asyncio.Future[None]) -> None:
        if not settled.done():
            settled.set_result(None)  # failed: the next event of its key must not wait forever
        if self._last_settled.get(key) is settled:
            del self._last_settled[key]
        self._tasks.discard(task)
        self._slots.release()
        self.memory.release(size)
        self.runtime.metrics.in_flight.dec()
        if not task.cancelled() and task.exception() is not None:
            # Not acked: the offset stays uncommitted and the event is redelivered later.
            log.error("event handling failed; left unacked", exc_info=task.exception())

    async def _handle(
        self,
        event: Any,
        ack: Callable[[Any], Awaitable[Any]],
        before: asyncio.Future[None] | None,
        settled: asyncio.Future[None],
    ) -> None:
        source = source_of(event)
        unreadable = unreadable_reason(source.headers, event.value)
        if unreadable is not None:
            outcome = self.runtime.classifier.unreadable(source, *unreadable)
        else:
            outcome = await self.runtime.classifier.classify(event.value, source)
        if before is not None:
            # Same product key (or partition): publish in consumption order, so downstream
            # keeps the newest.
            await asyncio.wait([before])

        async def settle() -> None:
            await ack(event)
            settled.set_result(None)

        await self.publisher.publish(outcome, source, settle)
        metrics = self.runtime.metrics
        if outcome.kind == ASSIGNED:
            metrics.assigned(outcome.value)
        else:
            metrics.dead_letter(outcome.stage)
        if source.timestamp is not None:
            metrics.latency.observe(max(0.0, time.time() - source.timestamp))

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
