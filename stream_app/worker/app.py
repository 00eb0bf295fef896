"""The Faust app: topics, the classifying agent, web views and the worker's lifecycle.

Topics carry raw bytes (``value_serializer='raw'``): decoding and validation are ours, so a
malformed message becomes a dead letter instead of a Faust deserialisation crash. The web
server binds 127.0.0.1 unless ``[worker] web_host`` says otherwise, and serves
``/metrics`` (Prometheus), ``/health`` (503 when the batcher died: restart the process) and
``/ready`` (503 until the model is loaded and the group is joined, and whenever the broker
probe fails or produces fail). Background tasks: the broker probe
(prodcat/worker/broker_probe.py) and, with a model directory, the hot-reload watcher
(prodcat/worker/model_reload.py, also woken by SIGHUP), and the check that rewinds a position
past the end of a log that a broker lost (prodcat/worker/offsets.py). The dispatcher's memory budget
(prodcat/worker/memory.py) enforces ``[worker] memory_limit_mb`` at admission. Outcomes are
published at least once (prodcat/worker/publishing.py) or, with ``[worker]
processing_guarantee = "exactly_once"``, in Kafka transactions (prodcat/worker/exactly_once.py);
record batches the consumer cannot read become dead letters (prodcat/worker/unreadable.py).

Shutdown (SIGTERM): Faust stops fetching, waits until every consumed event is acked
(``stream_wait_empty``) and commits; our events are acked only after their outcome was
acknowledged by the broker, so that wait *is* the drain of in-flight batches. Then the
runtime closes the batcher and the image fetcher (``on_before_shutdown``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from prodcat.core.settings import Settings
from prodcat.kafka.clients import compression_type, faust_options
from prodcat.worker.broker_probe import BrokerProbe
from prodcat.worker.commits import never_past_in_flight
from prodcat.worker.dispatcher import Dispatcher
from prodcat.worker.exactly_once import EXACTLY_ONCE, CommitGate, ExactlyOncePublisher
from prodcat.worker.fetch_wait import cap_fetch_wait
from prodcat.worker.lag import committed_lag
from prodcat.worker.memory import MemoryBudget
from prodcat.worker.model_reload import ModelReloader
from prodcat.worker.offsets import rewind_past_end
from prodcat.worker.publishing import AtLeastOncePublisher
from prodcat.worker.runtime import Runtime, load_model
from prodcat.worker.unreadable import UnreadableBatch, guard_record_batches

log = logging.getLogger(__name__)


def faust_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """``faust.App`` keyword arguments from the settings."""
    w = settings.worker
    return {
        **faust_options(settings, bootstrap),
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_partitions": settings.topics.partitions,
        "topic_replication_factor": settings.topics.replication_factor,
        "broker_session_timeout": w.session_timeout_s,
        "broker_heartbeat_interval": max(w.session_timeout_s / 4, 0.5),
        "broker_client_id": settings.kafka.client_id,
        "broker_request_timeout": settings.kafka.request_timeout_ms / 1000,
        # A crash re-delivers what was done since the last commit: commit often (Faust: 2.8 s).
        "broker_commit_interval": w.commit_interval_s,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_compression_type": compression_type(settings),
        "processing_guarantee": w.processing_guarantee,
        "producer_max_request_size": settings.kafka.max_message_bytes,
        "consumer_max_fetch_size": settings.kafka.max_message_bytes,
        "stream_wait_empty": True,
        # Prefetch no more than we keep in flight: memory stays ~2 x queue_size events.
        "stream_buffer_maxsize": w.queue_size,
        "web_enabled": True,
        "web_bind": w.web_host,
        "web_host": w.web_host,
        "web_port": w.web_port,
        "datadir": str(Path(settings.cache_dir) / "faust"),
        "table_cleanup_interval": 3600.0,
    }


@dataclass
class WorkerApp:
    """The Faust app and the parts tests and the CLI reach into."""

    app: faust.App
    agent: Any
    dispatcher: Dispatcher
    runtime: Runtime


def create_app(
    settings: Settings, bootstrap: str, runtime: Runtime, model_dir: str | Path | None = None
) -> WorkerApp:
    """The worker's Faust app, wired to ``runtime``; not started.

    With ``model_dir`` the app watches it for a new bundle and reloads on SIGHUP
    (prodcat/worker/model_reload.py).
    """
    config = faust_config(settings, bootstrap)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    cap_fetch_wait()
    app = faust.App(settings.worker.group_id, **config)
    products_name = settings.topics.products
    products = app.topic(products_name)
    categories = app.topic(settings.topics.categories)
    dlq = app.topic(settings.topics.dlq)
    exactly_once = settings.worker.processing_guarantee == EXACTLY_ONCE
    gate = CommitGate()  # installed on the consumer once Faust's worker created it
    if exactly_once:
        publisher: Any = ExactlyOncePublisher(app, runtime, settings, gate)
    else:
        publisher = AtLeastOncePublisher(runtime, categories, dlq)
    memory = MemoryBudget(
        settings.worker.memory_limit_mb * 2**20, on_wait=runtime.metrics.admission_waited
    )
    dispatcher = Dispatcher(
        runtime, publisher, settings.worker.queue_size, memory, per_partition=exactly_once
    )
    probe = BrokerProbe(settings, bootstrap, on_change=runtime.set_broker_up)
    runtime.metrics.broker_up.set_function(lambda: float(probe.up))
    runtime.metrics.watch_lag(lambda: committed_lag(app.consumer, products_name))
    unreadable: dict[str, Any] = {"batches": 0, "last": None}  # shown by /health

    def cannot_read(batch: UnreadableBatch) -> None:  # called from the consumer thread
        unreadable.update(batches=unreadable["batches"] + 1, last=batch.describe())
        runtime.metrics.unreadable.labels(batch.topic).inc()
        log.error("cannot read %s; each record becomes a dead letter", batch.describe())

    guard_record_batches(cannot_read)

    @app.agent(products, name="classify")
    async def classify(stream: faust.StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            await dispatcher.admit(event, manual.ack)

    @app.task
    async def start_runtime() -> None:
        await runtime.start()  # the agent also starts it on its first event, whichever is first

    @app.task
    async def probe_broker() -> None:
        await probe.run()  # cancelled at shutdown

    @app.timer(settings.worker.broker_probe_s)
    async def rewind_lost_positions() -> None:
        if runtime.assigned_partitions and probe.up:
            try:
                await rewind_past_end(app.consumer, products_name)
            except Exception as exc:  # noqa: BLE001 - a rebalance moved the partitions: next time
                log.debug("position check skipped: %s", exc)

    if model_dir is not None:
        reloader = ModelReloader(
            model_dir,
            lambda path: load_model(path, settings, runtime.classifier.plugin_manager),
            runtime,
            settings.worker.model_poll_s,
        )

        @app.task
        async def watch_model() -> None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
            await reloader.run()  # cancelled at shutdown

    @app.on_before_shutdown.connect
    async def stop_runtime(_app: Any, **_: Any) -> None:
        # Sent after Faust waited for every consumed event to be acked and committed.
        await dispatcher.drain()
        await runtime.stop()

    @app.on_partitions_assigned.connect
    async def joined(_app: Any, assigned: Any, **_: Any) -> None:
        # Installed before any commit (nothing was acked yet), once the consumer exists.
        never_past_in_flight(app.consumer, dispatcher.lowest_in_flight)
        if exactly_once:
            gate.install(app.consumer)
        runtime.assigned_partitions = True
        runtime.partitions = sorted(tp.partition for tp in assigned if tp.topic == products_name)
        log.info("assigned %s partitions: %s", products_name, runtime.partitions or "none")

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(runtime.metrics.render(), content_type=runtime.metrics.content_type)

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        healthy = runtime.healthy
        body: dict[str, Any] = {
            "status": "ok" if healthy else "batcher stopped",
            "in_flight": dispatcher.in_flight,
        }
        if unreadable["batches"]:  # still healthy: a restart would not read them either
            body["unreadable"] = dict(unreadable)
        return web.json(body, status=200 if healthy else 503)

    @app.page("/ready")
    async def ready_view(web: Any, request: Any) -> Any:
        body = {
            "ready": runtime.ready,
            "model_loaded": runtime.started,
            "partitions_assigned": runtime.assigned_partitions,
            "partitions": runtime.partitions,
            "publishing_ok": runtime.publishing_ok,
            "broker_up": runtime.broker_up,
        }
        return web.json(body, status=200 if runtime.ready else 503)

    return WorkerApp(app, classify, dispatcher, runtime)
