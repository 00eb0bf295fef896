"""The dashboard's memory: the live feed, the review queue, drift and reviewed accuracy.

Every record read from the topics lands here; every window is bounded (``[dashboard]``
``feed_size``, ``queue_size``, ``pending_products``/``pending_mb``, ``drift_window``), so
memory stays flat however long the dashboard runs. Changes are pushed to the open pages
through :class:`Hub` (server-sent events).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prodcat.core import events
from prodcat.core.settings import DashboardSettings
from prodcat.dashboard.accuracy import ReviewedAccuracy
from prodcat.dashboard.drift import DriftWindow
from prodcat.dashboard.metrics import DashboardMetrics
from prodcat.dashboard.review import AUDIT, FEED, NEEDS_REVIEW, Item, ReviewQueue, Taxonomy
from prodcat.dashboard.store import ProductStore, product_view
from prodcat.dashboard.thumbnails import shrink
from prodcat.kafka.assignments import DuplicateFilter

log = logging.getLogger(__name__)
MAX_PHOTO_BYTES = 1024 * 1024  # an inline photo larger than this is not kept for display
KEEP_PHOTO_BYTES = 16 * 1024  # a shown product keeps at most this much photo until asked
SUBSCRIBER_BACKLOG = 256  # events queued for one page; a slower page is disconnected
Publish = Callable[[dict[str, Any]], Awaitable[None]]


class ReviewError(ValueError):
    """A decision that cannot be taken; the message says why (shown to the reviewer)."""


class Hub:
    """Fan-out of live events to the open pages, each with a bounded queue."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue[tuple[str, Any] | None]] = set()

    def subscribe(self) -> asyncio.Queue[tuple[str, Any] | None]:
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(SUBSCRIBER_BACKLOG + 1)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, Any] | None]) -> None:
        self.subscribers.discard(queue)

    def publish(self, kind: str, data: Any) -> None:
        for queue in list(self.subscribers):
            if queue.qsize() >= SUBSCRIBER_BACKLOG:
                self.subscribers.discard(queue)  # too slow: end its stream, it reconnects
                queue.put_nowait(None)
            else:
                queue.put_nowait((kind, data))


class Dashboard:
    """Joins products with assignments, queues reviews, tracks drift and decisions."""

    def __init__(self, settings: DashboardSettings, manifest: Mapping[str, Any]) -> None:
        self.settings = settings
        self.taxonomy = Taxonomy(manifest)
        self.model = {k: manifest.get(k) for k in ("fingerprint", "created")}
        self.store = ProductStore(settings.pending_products, settings.pending_mb * 1024 * 1024)
        self.feed: OrderedDict[str, Item] = OrderedDict()  # source event id -> item
        self.queue = ReviewQueue(settings.queue_size, settings.audit_rate)
        self.drift = DriftWindow(self.taxonomy.levels, settings.drift_window)
        self.accuracy = ReviewedAccuracy()
        self.metrics = DashboardMetrics()
        self.hub = Hub()
        self._assignments = DuplicateFilter()
        self._corrections = DuplicateFilter()
        self.publish: Publish | None = None  # set when the corrections producer runs
        self.counts = {"products": 0, "assignments": 0, "duplicates": 0, "invalid": 0}

    async def on_product(self, value: Any) -> None:
        try:
            events.validate("product", value)
        except events.EventError:
            return  # the worker dead-letters it; nothing to show
        self.counts["products"] += 1
        view = product_view(value, MAX_PHOTO_BYTES)
        item = self.item(view.event_id)
        if item is not None and item.view is None:  # its assignment was read first
            await shrink(view, KEEP_PHOTO_BYTES)
            item.view = view
            self.hub.publish("update", item.event_id)
            return
        self.store.add(view)

    async def on_assignment(self, value: Any) -> None:
        try:
            events.validate("assignment", value)
        except events.EventError as exc:
            self.counts["invalid"] += 1
            log.warning("skipping an invalid assignment: %s", exc)
            return
        if self._assignments.seen(value["source_event_id"]):
            self.counts["duplicates"] += 1
            return
        self.counts["assignments"] += 1
        view = self.store.take(value["source_event_id"])
        if view is not None:
            await shrink(view, KEEP_PHOTO_BYTES)
        item = Item(value, view)
        self.feed[item.event_id] = item
        while len(self.feed) > self.settings.feed_size:
            self.feed.popitem(last=False)
        overflowed = self.queue.overflowed
        if self.queue.offer(item):
            self.metrics.overflowed.inc(self.queue.overflowed - overflowed)
        self.drift.add(value)
        self.hub.publish("assignment", item.event_id)

    def on_correction(self, value: Any) -> None:
        try:
            events.validate("correction", value)
        except events.EventError as exc:
            log.warning("skipping an invalid correction: %s", exc)
            return
        if self._corrections.seen(value["correction_id"]):
            return
        self.accuracy.add(value)
        self.metrics.decisions.labels(value["decision"], value["queue"]).inc()
        item = self.queue.resolve(value)
        self.hub.publish("decision", {"event_id": value["source_event_id"], "queued": bool(item)})

    def item(self, event_id: str) -> Item | None:
        """The feed's or the queue's item for a source event id."""
        return self.feed.get(event_id) or self.queue.get(event_id)

    async def decide(
        self, event_id: str, labels: list[str], reviewer: str, comment: str | None = None
    ) -> dict[str, Any]:
        """Publish a reviewer's decision on the corrections topic; returns the correction."""
        if self.publish is None:
            raise ReviewError("the dashboard is read-only: no corrections producer")
        item = self.item(event_id)
        if item is None:
            raise ReviewError("this assignment is no longer in the dashboard's memory")
        levels = [step["level"] for step in item.assignment["category_path"]]
        problem = self.taxonomy.check(levels, labels)
        if problem:
            raise ReviewError(problem)
        correction = events.make_correction(
            item.assignment,
            new_labels=labels,
            reviewer=reviewer,
            queue=item.queue or FEED,
            comment=comment,
        )
        await self.publish(correction)
        self.on_correction(correction)  # at once; the topic's copy is dropped as a duplicate
        return correction

    def refresh_gauges(self) -> None:
        """Set the gauges read at scrape time: drift, backlog, accuracy."""
        for level, score in self.drift.scores().items():
            if score is not None:
                self.metrics.drift.labels(level).set(score)
        self.metrics.drift_window.set(len(self.drift))
        for queue, count in self.queue.backlog().items():
            self.metrics.backlog.labels(queue).set(count)
        for queue in (NEEDS_REVIEW, AUDIT):
            path = self.accuracy.accuracy(queue)["path"]
            if path is not None:
                self.metrics.reviewed_accuracy.labels(queue).set(path)
