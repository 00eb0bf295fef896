"""The worker's runtime: the loaded model, its batcher and fetcher, metrics and readiness.

One :class:`Runtime` lives as long as the worker process; the Faust app
(``prodcat.worker.app``) builds it, and the :class:`~prodcat.worker.dispatcher.Dispatcher`
runs each consumed event through it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from prodcat.core.settings import Settings
from prodcat.model.bundle import ModelBundle
from prodcat.model.inference import create_session
from prodcat.worker.batcher import MicroBatcher
from prodcat.worker.classifier import (
    BundleModel,
    Classifier,
    batcher_config,
)
from prodcat.worker.image_fetch import ImageFetcher
from prodcat.worker.monitoring import WorkerMetrics

log = logging.getLogger(__name__)


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
        self.broker_up = True  # set by the app's BrokerProbe (prodcat/worker/broker_probe.py)
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
