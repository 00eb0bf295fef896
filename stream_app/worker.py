"""The worker's runtime: the loaded model, its batcher and fetcher, and the in-flight events.

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
from pathlib import Path
from typing import Any, Protocol

from stream_app.batcher import MicroBatcher
from stream_app.bundle import ModelBundle
from stream_app.classifier import (
    ASSIGNED,
    BundleModel,
    Classifier,
    Outcome,
    Source,
    batcher_config,
)
from stream_app.config import Settings
from stream_app.image_fetch import ImageFetcher
from stream_app.inference import create_session
from stream_app.memory import MemoryBudget
from stream_app.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, outcome: Outcome) -> None:
        """Send the outcome and return once the broker has acknowledged it."""


def load_model(model_dir: str | Path, settings: Settings, plugin_manager: Any) -> BundleModel:
    """Bundle + ONNX session; raises BundleError / InferenceSetupError with clear messages."""
    bundle = ModelBundle.load(model_dir, plugin_manager)
    session = create_session(
        bundle.model_path, settings.worker.providers, settings.worker.ort_threads
    )
    return BundleModel(bundle, session)


class Runtime:
    """Everything that lives as long as the worker: model, batcher, fetcher, metrics."""

    def __init__(
        self,
        settings: Settings,
        model: BundleModel,
        plugin_manager: Any,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.batcher: MicroBatcher = MicroBatcher(model, batcher_config(settings), self.metrics)
        self.fetcher = ImageFetcher(settings.images)
        self.classifier = Classifier(
            settings, self.batcher, self.fetcher, plugin_manager, self.metrics
        )
        self.started = False
        self._stopped = False
        self._start_lock = asyncio.Lock()
        self.publishing_ok = True
        self.broker_up = True  # set by the app's BrokerProbe (stream_app/broker_probe.py)
        self.assigned_partitions = False
        self.partitions: list[int] = []  # partitions of the products topic this worker owns
        self.use_model(model)
        for result in ("loaded", "rejected", "unchanged"):
            self.metrics.model_reloads.labels(result)
        self.metrics.watch_queue(lambda: self.batcher.depth)
        self.metrics.ready.set_function(lambda: float(self.ready))

    def model_identity(self) -> dict[str, str]:
        return self.batcher.model.identity()

    def use_model(self, model: BundleModel) -> None:
        """Hot reload: later batches run ``model``; batches already formed finish as they are."""
        self.batcher.use_model(model)
        identity = model.identity()
        self.metrics.set_model(
            identity["name"], identity["version"], identity["fingerprint"], model.session.providers
        )

    def set_broker_up(self, up: bool) -> None:
        self.broker_up = up

    def model_reloaded(self, result: str) -> str:
        self.metrics.model_reloads.labels(result).inc()
        return result

    @property
    def healthy(self) -> bool:
        """Alive: not started yet, or started with a running batcher (False = restart me)."""
        return not self.started or self.batcher.running

    @property
    def ready(self) -> bool:
        """Serving: model loaded, batcher running, group joined, broker up, produces succeed."""
        return (
            self.healthy
            and self.started
            and self.assigned_partitions
            and self.broker_up
            and self.publishing_ok
        )

    async def start(self) -> None:
        """Start the fetcher and batcher once, whoever asks first (app start or first event)."""
        async with self._start_lock:
            if self.started or self._stopped:
                return
            await self.fetcher.__aenter__()
            await self.batcher.start()
            self.started = True

    async def stop(self) -> None:
        """Called after every in-flight event was acked: close the batcher, then the fetcher."""
        if self._stopped:
            return
        self._stopped = True
        if self.started:
            self.started = False
            await self.batcher.close()
            await self.fetcher.__aexit__(None, None, None)


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
            metrics.assigned()
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
