"""The worker's runtime: the loaded model and how it is served, the fetcher, metrics, readiness.

One :class:`Runtime` lives as long as the worker process; the Faust app
(``prodcat.worker.app``) builds it, and the :class:`~prodcat.worker.dispatcher.Dispatcher`
runs each consumed event through it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from prodcat.contract.components import Product
from prodcat.core.settings import Settings, SettingsError
from prodcat.model.bundle import ModelBundle
from prodcat.model.graphs import SplitGraphs
from prodcat.model.inference import create_session
from prodcat.worker.classifier import Classifier, batcher_config
from prodcat.worker.image_fetch import ImageFetcher
from prodcat.worker.models import BundleModel, Model, SplitModel
from prodcat.worker.monitoring import WorkerMetrics
from prodcat.worker.serving import SplitServing, WholeServing, serving_for

log = logging.getLogger(__name__)
CASCADE_CHOICES = ("auto", "off")


def load_model(model_dir: str | Path, settings: Settings, plugin_manager: Any) -> Model:
    """Bundle + ONNX sessions; raises BundleError / InferenceSetupError / SettingsError."""
    if settings.worker.cascade not in CASCADE_CHOICES:
        raise SettingsError(
            f"[worker] cascade must be one of {', '.join(CASCADE_CHOICES)}, "
            f"got {settings.worker.cascade!r}"
        )
    bundle = ModelBundle.load(model_dir, plugin_manager)
    providers, threads = settings.worker.providers, settings.worker.ort_threads
    if bundle.split:
        return SplitModel(bundle, SplitGraphs(bundle, providers, threads))
    return BundleModel(bundle, create_session(bundle.graph_path("model"), providers, threads))


class Runtime:
    """Everything that lives as long as the worker: model, its serving, fetcher, metrics."""

    def __init__(
        self,
        settings: Settings,
        model: Model,
        plugin_manager: Any,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.model = model
        self.serving = self._serving_for(model)
        self.fetcher = ImageFetcher(settings.images)
        self.classifier = Classifier(
            settings, self.classify_product, self.fetcher, plugin_manager, self.metrics
        )
        self.started = False
        self._stopped = False
        self._start_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self.publishing_ok = True
        self.broker_up = True  # set by the app's BrokerProbe (prodcat/worker/broker_probe.py)
        self.assigned_partitions = False
        self.partitions: list[int] = []  # partitions of the products topic this worker owns
        self._announce(model)
        for result in ("loaded", "rejected", "unchanged"):
            self.metrics.model_reloads.labels(result)
        self.metrics.watch_queue(lambda: self.serving.depth)
        self.metrics.ready.set_function(lambda: float(self.ready))

    def _serving_for(self, model: Model) -> WholeServing | SplitServing:
        w = self.settings.worker
        cascade = w.cascade == "auto"
        return serving_for(
            model, batcher_config(self.settings), self.metrics, cascade, w.image_cache_size
        )

    def model_identity(self) -> dict[str, str]:
        return self.model.identity()

    async def classify_product(self, product: Product, deadline: float) -> dict[str, Any]:
        """The model's answer for one product, from the model current when it arrives."""
        return await self.serving.classify(product, deadline)

    async def use_model(self, model: Model) -> None:
        """Hot reload: new products go to ``model``; those already taken finish on the old."""
        serving = self._serving_for(model)
        if self.started:
            await serving.start()
        old, self.serving, self.model = self.serving, serving, model
        self._announce(model)
        if self.started:
            task = asyncio.create_task(old.close(), name="retire-model")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _announce(self, model: Model) -> None:
        identity = model.identity()
        self.metrics.set_model(
            identity["name"], identity["version"], identity["fingerprint"], model.providers
        )

    def set_broker_up(self, up: bool) -> None:
        self.broker_up = up

    def model_reloaded(self, result: str) -> str:
        self.metrics.model_reloads.labels(result).inc()
        return result

    @property
    def healthy(self) -> bool:
        """Alive: not started yet, or started with running batchers (False = restart me)."""
        return not self.started or self.serving.running

    @property
    def ready(self) -> bool:
        """Serving: model loaded, batchers running, group joined, broker up, produces succeed."""
        return (
            self.healthy
            and self.started
            and self.assigned_partitions
            and self.broker_up
            and self.publishing_ok
        )

    async def start(self) -> None:
        """Start the fetcher and batchers once, whoever asks first (app start or first event)."""
        async with self._start_lock:
            if self.started or self._stopped:
                return
            await self.fetcher.__aenter__()
            await self.serving.start()
            self.started = True

    async def stop(self) -> None:
        """Called after every in-flight event was acked: close the batchers, then the fetcher."""
        if self._stopped:
            return
        self._stopped = True
        if self.started:
            self.started = False
            await asyncio.gather(*self._retiring)
            await self.serving.close()
            await self.fetcher.__aexit__(None, None, None)
