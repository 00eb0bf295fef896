"""One consumed message in, exactly one outcome out: an assignment or a dead letter.

This is the worker's per-event logic without Kafka, so it is tested on its own and the Faust
agent (prodcat/worker/app.py) only moves bytes and offsets. The steps, each a dead-letter stage
when it refuses the event: ``decode``/``schema`` (prodcat/core/events.py), ``image_fetch``,
the name of the preprocessor or encoder plugin that raised, ``deadline``, ``inference``,
the postprocess plugin's stage (or ``postprocess`` when its result breaks the schema).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prodcat.contract.components import IMAGE_BYTES_KEY, ComponentError, Product
from prodcat.core import events
from prodcat.core.settings import Settings
from prodcat.model.bundle import DEFAULT_REVIEW_THRESHOLD
from prodcat.worker.batcher import BatcherConfig, BatcherError
from prodcat.worker.image_fetch import ImageFetcher, ImageFetchError
from prodcat.worker.monitoring import WorkerMetrics

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACEPARENT_RE = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
ASSIGNED = "assigned"
DEAD_LETTER = "dead_letter"
LETTER_OVERHEAD = 64 * 1024  # a dead letter's fields besides the original (error <= 2000 chars)


@dataclass(frozen=True)
class Source:
    """Where a consumed message came from, for dead letters and assignment provenance."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp: float | None = None  # Kafka timestamp, seconds since the epoch
    headers: Mapping[str, bytes] = field(default_factory=dict)
    consumed_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Outcome:
    """What to publish for one consumed message."""

    kind: str  # ASSIGNED or DEAD_LETTER
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    stage: str = ""  # the dead letter's stage


def original_cap(settings: Settings) -> int:
    """How much of an original message a dead letter keeps: ``dlq_max_original_bytes``, but
    never more than fits in ``max_message_bytes`` once base64 (4/3) and the letter's other
    fields (``LETTER_OVERHEAD``) are added, so a dead letter can always be produced."""
    fits = (settings.kafka.max_message_bytes - LETTER_OVERHEAD) * 3 // 4
    return max(1, min(settings.worker.dlq_max_original_bytes, fits))


def batcher_config(settings: Settings) -> BatcherConfig:
    w = settings.worker
    return BatcherConfig(
        max_batch_size=w.max_batch_size,
        max_delay_ms=w.max_delay_ms,
        queue_size=w.queue_size,
        deadline_ms=w.deadline_ms,
        featurize_threads=w.featurize_threads,
    )


class Classifier:
    """Turns a message into an :class:`Outcome`; never raises for a bad event."""

    def __init__(
        self,
        settings: Settings,
        serve: Callable[[Product, float], Awaitable[dict[str, Any]]],
        fetcher: ImageFetcher,
        plugin_manager: Any,
        metrics: WorkerMetrics,
    ) -> None:
        """``serve(product, deadline)``: the model's decoded answer (prodcat.worker.serving)."""
        self.settings = settings
        self.serve = serve
        self.fetcher = fetcher
        self.plugin_manager = plugin_manager
        self.metrics = metrics
        self.original_cap = original_cap(settings)

    async def classify(self, raw: bytes | None, source: Source) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.worker.deadline_ms / 1000
        try:
            product = events.decode_product(raw, self.settings.worker.max_event_bytes)
        except events.EventError as exc:
            return self._dead(raw, source, exc.stage, "EventError", str(exc))
        try:
            return await self._classify(product, raw, source, deadline)
        except ImageFetchError as exc:
            return self._dead(raw, source, exc.stage, "ImageFetchError", str(exc))
        except ComponentError as exc:
            return self._dead(raw, source, exc.stage, "ComponentError", str(exc))
        except BatcherError as exc:
            return self._dead(raw, source, exc.stage, type(exc).__name__, str(exc))
        except events.EventError as exc:
            return self._dead(raw, source, "postprocess", "EventError", str(exc))
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop the worker
            log.exception("unexpected error classifying %s", _where(source))
            return self._dead(raw, source, "internal", type(exc).__name__, str(exc))

    async def _classify(
        self, product: Product, raw: bytes | None, source: Source, deadline: float
    ) -> Outcome:
        url = (product.get("image") or {}).get("url")
        if url:
            product[IMAGE_BYTES_KEY] = await self.fetcher.fetch(url)
        result = await self.serve(product, deadline)
        traceparent = _traceparent(source.headers)
        assignment = assignment_from(
            product,
            result,
            review_threshold=self.settings.worker.review_threshold,
            traceparent=traceparent,
            latency_ms=_latency_ms(source),
            source=(source.topic, source.partition, source.offset),
        )
        assignment = self.plugin_manager.postprocess(assignment, product)
        events.validate("assignment", assignment)
        headers = [("content-type", events.CONTENT_TYPE.encode())]
        if traceparent is not None:
            headers.append((TRACEPARENT, traceparent.encode()))
        key = str(product["product_id"]).encode()
        return Outcome(ASSIGNED, key, events.encode(assignment), headers)

    def unreadable(self, source: Source, error_type: str, message: str) -> Outcome:
        """The dead letter of a record the consumer could not read (its batch failed to
        decompress or its CRC; prodcat/worker/unreadable.py logged the batch once)."""
        return self._dead(None, source, "unreadable", error_type, message, logged=True)

    def _dead(
        self,
        raw: bytes | None,
        source: Source,
        stage: str,
        error_type: str,
        message: str,
        logged: bool = False,
    ) -> Outcome:
        letter = events.make_dead_letter(
            raw,
            source.key,
            source.topic,
            source.partition,
            source.offset,
            stage,
            error_type,
            message,
            self.original_cap,
        )
        if not logged:
            log.info("dead letter %s stage=%s: %s", _where(source), letter["stage"], message[:200])
        headers = [("content-type", events.CONTENT_TYPE.encode())]
        traceparent = _traceparent(source.headers)
        if traceparent is not None:
            headers.append((TRACEPARENT, traceparent.encode()))
        return Outcome(DEAD_LETTER, source.key, events.encode(letter), headers, letter["stage"])


def assignment_from(
    product: Product, result: Mapping[str, Any], *, review_threshold: float | None, **extra: Any
) -> dict[str, Any]:
    """The validated assignment for a product from a decoded model result (``serving``).

    ``needs_review`` is set when any level's score is under ``review_threshold`` (None: the
    model's own, fitted on its validation split); ``extra`` goes to
    :func:`prodcat.core.events.make_assignment` (traceparent, latency_ms, source).
    """
    if review_threshold is None:
        review_threshold = result.get("review_threshold", DEFAULT_REVIEW_THRESHOLD)
    path = result["category_path"]
    return events.make_assignment(
        product,
        category_path=[(c["level"], c["label"], c["score"]) for c in path],
        top_k={
            level: [(c["label"], c["score"]) for c in candidates]
            for level, candidates in result["top_k"].items()
        },
        model=result["model"],
        needs_review=any(level["score"] < review_threshold for level in path),
        decided_by=result.get("decided_by"),
        **extra,
    )


def _traceparent(headers: Mapping[str, bytes]) -> str | None:
    """The event's W3C traceparent, or None when absent or malformed (W3C: then ignore it)."""
    value = headers.get(TRACEPARENT)
    if value is None:
        return None
    text = value.decode("latin-1")
    return text if TRACEPARENT_RE.fullmatch(text) else None


def _latency_ms(source: Source) -> float:
    return (time.monotonic() - source.consumed_at) * 1000


def _where(source: Source) -> str:
    return f"{source.topic}[{source.partition}]@{source.offset}"
