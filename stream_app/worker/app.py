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
(prodcat/worker/memory.py) enforces ``[worker] memory_limit_mb`` at admission.

Shutdown (SIGTERM): Faust stops fetching, waits until every consumed event is acked
(``stream_wait_empty``) and commits; our events are acked only after their outcome was
acknowledged by the broker, so that wait *is* the drain of in-flight batches. Then the
runtime closes the batcher and the image fetcher (``on_before_shutdown``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from prodcat.core.settings import Settings
from prodcat.kafka.clients import faust_options
from prodcat.worker.broker_probe import BrokerProbe
from prodcat.worker.classifier import ASSIGNED, Outcome
from prodcat.worker.dispatcher import Dispatcher
from prodcat.worker.fetch_wait import cap_fetch_wait
from prodcat.worker.memory import MemoryBudget
from prodcat.worker.model_reload import ModelReloader
from prodcat.worker.offsets import rewind_past_end
from prodcat.worker.runtime import Runtime, load_model

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0


class FaustPublisher:
    """Produces outcomes with the app's producer, retrying until the broker acknowledges."""

    def __init__(self, runtime: Runtime, categories: Any, dlq: Any) -> None:
        self.runtime = runtime
        self.categories = categories
        self.dlq = dlq

    async def publish(self, outcome: Outcome) -> None:
        topic = self.categories if outcome.kind == ASSIGNED else self.dlq
        delay = RETRY_MIN_S
        while True:
            try:
                pending = await topic.send(
                    key=outcome.key, value=outcome.value, headers=outcome.headers
                )
                await pending
                self.runtime.publishing_ok = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any producer failure: retry, never drop
                self.runtime.publishing_ok = False
                log.warning("publish to %s failed (%s); retrying in %.1f s", topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)


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
    publisher = FaustPublisher(runtime, categories, dlq)
    memory = MemoryBudget(
        settings.worker.memory_limit_mb * 2**20, on_wait=runtime.metrics.admission_waited
    )
    dispatcher = Dispatcher(runtime, publisher, settings.worker.queue_size, memory)
    probe = BrokerProbe(settings, bootstrap, on_change=runtime.set_broker_up)
    runtime.metrics.broker_up.set_function(lambda: float(probe.up))
    runtime.metrics.backlog.set_function(lambda: dispatcher.backlog(_highwater(app)))

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
        runtime.assigned_partitions = True
        dispatcher.forget_partitions()
        runtime.partitions = sorted(tp.partition for tp in assigned if tp.topic == products_name)
        log.info("assigned %s partitions: %s", products_name, runtime.partitions or "none")

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(runtime.metrics.render(), content_type=runtime.metrics.content_type)

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        healthy = runtime.healthy
        body = {"status": "ok" if healthy else "batcher stopped", "in_flight": dispatcher.in_flight}
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


def _highwater(app: faust.App) -> Callable[[str, int], int | None]:
    """The consumer's last-seen high watermark of a partition (None before any fetch)."""

    def highwater(topic: str, partition: int) -> int | None:
        try:
            return app.consumer.highwater(TP(topic, partition))
        except Exception:  # noqa: BLE001 - consumer not started or partition not assigned
            return None

    return highwater
