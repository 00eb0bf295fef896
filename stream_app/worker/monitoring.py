"""The worker's Prometheus metrics, in a registry of its own.

A registry per worker (not prometheus-client's global one) so tests and the demo can run
several workers in one process without name clashes; the standard process (CPU, memory,
file descriptors), platform and Python GC collectors are registered in it too, as in any
Python exporter. ``WorkerMetrics.graph(name)`` is a micro-batcher's observer, so batch
sizes, queue waits and inference times arrive, labelled by graph (``model`` for a format-1
bundle, each encoder's slug and ``head`` for format 2), without the batcher knowing about
Prometheus. docs/operations.md lists which of these to alert on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    Metric,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from prodcat.worker.memory import rss_bytes

ASSIGNED = "assigned"
DEAD_LETTER = "dead_letter"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    """Every metric the worker exports; ``render()`` gives the /metrics body."""

    # aiohttp takes the charset separately; the exposition format is UTF-8 anyway.
    content_type = CONTENT_TYPE_LATEST.split(";")[0]

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.events = Counter(
            "prodcat_events",
            "Consumed product events by outcome; dead letters by the stage that refused them.",
            ["outcome", "stage"],
            registry=r,
        )
        self.batch_size = Histogram(
            "prodcat_batch_size",
            "Items per batch, by graph (model, an encoder's slug, head).",
            ["graph"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "prodcat_queue_wait_seconds",
            "Time an item waited in a graph's batcher queue before its batch formed.",
            ["graph"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "prodcat_inference_seconds",
            "Run time per batch, by graph.",
            ["graph"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "prodcat_decisions",
            "Products classified, by the path that decided them (text: the cascade stopped "
            "at the title; full: every modality the product has).",
            ["decided_by"],
            registry=r,
        )
        self.image_cache = Counter(
            "prodcat_image_cache_lookups",
            "Image embedding cache lookups by result (hit, miss); hit ratio = hit / all.",
            ["result"],
            registry=r,
        )
        self.latency = Histogram(
            "prodcat_end_to_end_seconds",
            "From the event's Kafka timestamp to the broker acknowledging its outcome.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.assignments = Counter(
            "prodcat_assignments",
            "Published assignments by taxonomy level and the label chosen there (the "
            "category mix; prodcat dashboard compares it with the training split).",
            ["level", "label"],
            registry=r,
        )
        self.confidence = Histogram(
            "prodcat_assignment_confidence",
            "Score of the chosen label per taxonomy level.",
            ["level"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.needs_review = Counter(
            "prodcat_needs_review",
            "Published assignments flagged needs_review (the review queue's inflow).",
            registry=r,
        )
        self.model = Info("prodcat_model", "The model bundle being served.", registry=r)
        self.queue_depth = Gauge(
            "prodcat_queue_depth", "Items waiting in the batcher queue.", registry=r
        )
        self.in_flight = Gauge(
            "prodcat_in_flight_events",
            "Events consumed but not yet acknowledged (their offsets are not committed).",
            registry=r,
        )
        self.ready = Gauge(
            "prodcat_ready", "1 when the worker is consuming and its model is loaded.", registry=r
        )
        self.broker_up = Gauge(
            "prodcat_broker_up",
            "1 when the last metadata probe of the broker answered and listed the products topic.",
            registry=r,
        )
        self.unreadable = Counter(
            "prodcat_unreadable_batches",
            "Record batches the consumer could not read (missing codec, corrupt data); each "
            "of their records became a dead letter with stage 'unreadable'.",
            ["topic"],
            registry=r,
        )
        self.rss = Gauge(
            "prodcat_memory_rss_bytes", "Resident set size of the worker process.", registry=r
        )
        self.memory_limit = Gauge(
            "prodcat_memory_limit_bytes", "The memory ceiling (worker.memory_limit_mb).", registry=r
        )
        self.in_flight_bytes = Gauge(
            "prodcat_in_flight_bytes", "Raw bytes of the events in flight.", registry=r
        )
        self.admission_waits = Counter(
            "prodcat_admission_waits",
            "Events that waited for the memory budget before being admitted, by reason "
            "(bytes: in-flight byte budget; memory: RSS over the limit).",
            ["reason"],
            registry=r,
        )
        self.model_reloads = Counter(
            "prodcat_model_reloads",
            "Hot model reload attempts by result (loaded, rejected).",
            ["result"],
            registry=r,
        )

    def assigned(self, value: bytes | None = None) -> None:
        """Count one acknowledged assignment; with its JSON ``value``, its labels and scores."""
        self.events.labels(ASSIGNED, "").inc()
        if value is None:
            return
        assignment = orjson.loads(value)
        for step in assignment["category_path"]:
            self.assignments.labels(step["level"], step["label"]).inc()
            self.confidence.labels(step["level"]).observe(step["score"])
        if assignment["needs_review"]:
            self.needs_review.inc()

    def dead_letter(self, stage: str) -> None:
        self.events.labels(DEAD_LETTER, stage).inc()

    def count(self, outcome: str, stage: str = "") -> float:
        """Current value of one events counter (0 when never incremented)."""
        value = self.registry.get_sample_value(
            "prodcat_events_total", {"outcome": outcome, "stage": stage}
        )
        return value or 0.0

    def set_model(self, name: str, version: str, fingerprint: str, providers: list[str]) -> None:
        self.model.info(
            {
                "name": name,
                "version": version,
                "fingerprint": fingerprint,
                "providers": ",".join(providers),
            }
        )

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth at scrape time instead of updating it on every item."""
        self.queue_depth.set_function(depth)

    def watch_memory(self, held: Callable[[], float], limit: int) -> None:
        """Memory gauges read at scrape time; ``held`` gives the in-flight raw bytes."""
        self.rss.set_function(lambda: float(rss_bytes()))
        self.memory_limit.set(limit)
        self.in_flight_bytes.set_function(held)

    def watch_lag(self, lag: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        """``prodcat_backlog_events{topic, partition}``, read from ``lag`` at scrape time."""
        self.registry.register(_LagCollector(lag))

    def admission_waited(self, reason: str) -> None:
        self.admission_waits.labels(reason).inc()

    def graph(self, name: str) -> GraphObserver:
        """The batch observer of the micro-batcher of graph ``name``."""
        return GraphObserver(self, name)

    def decided(self, path: str) -> None:
        self.decisions.labels(path).inc()

    def cache_lookup(self, hit: bool) -> None:
        self.image_cache.labels("hit" if hit else "miss").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GraphObserver:
    """A micro-batcher's measurements, recorded under its graph's label."""

    def __init__(self, metrics: WorkerMetrics, graph: str) -> None:
        self.batch_size = metrics.batch_size.labels(graph)
        self.queue_wait = metrics.queue_wait.labels(graph)
        self.inference = metrics.inference.labels(graph)

    def on_batch(self, size: int, queue_waits: list[float]) -> None:
        self.batch_size.observe(size)
        for wait in queue_waits:
            self.queue_wait.observe(wait)

    def on_inference(self, size: int, seconds: float) -> None:
        self.inference.observe(seconds)


class _LagCollector:
    """End offset minus committed offset of each partition the worker owns, at scrape time."""

    def __init__(self, lag: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "prodcat_backlog_events",
            "Events not committed yet per owned partition: end offset (high watermark; last "
            "stable offset under exactly-once) minus the group's committed offset.",
            labels=["topic", "partition"],
        )
        for (topic, partition), events in sorted(self._lag().items()):
            family.add_metric([topic, str(partition)], events)
        yield family
