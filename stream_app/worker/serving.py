"""Classifying one product with a loaded bundle: micro-batched graphs and the cascade.

A format-1 bundle is served as before: one :class:`MicroBatcher` over its one graph. A
format-2 bundle gets a micro-batcher per graph (each encoder, and the head), all sharing
one featurize pool and one inference thread, so every graph keeps the batcher's semantics
(max size, first-item delay, deadlines, per-item failure isolation) while the graphs take
turns on the cores. Per product:

1. preprocess (the whole chain, in the pool, exactly as in training) and ask each encoder
   whether the product has its modality; a product a preprocessor refuses (a corrupt
   photo) fails here, whichever path would decide it;
2. an encoder is featurized and its graph run only when its answer is needed and the
   product has its modality: a product without a photo never reaches the image graph, and
   one the title decides never has its photo resized and normalised;
3. with the cascade on (``[worker] cascade = "auto"``, and a bundle that has one), a
   product with a title and a photo is first answered by the head from the first stage's
   embeddings; when its path scores pass the thresholds the answer stands
   (``decided_by: text``) and the photo's graph never runs;
4. otherwise the remaining encoders run and the head answers with everything
   (``decided_by: full``).

Optionally image embeddings are cached by the photo's bytes (``[worker] image_cache_size``),
for products republished with the same photo. A serving object belongs to one model: a
hot reload starts a new one and retires the old once its products are answered, so no
product mixes two models' graphs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

from prodcat.contract.components import MASK_INPUT, Product
from prodcat.contract.pipeline import input_name
from prodcat.model.bundle import embedding_name
from prodcat.model.cascade import FULL, TEXT
from prodcat.worker.batcher import BatcherConfig, DeadlineExceeded, MicroBatcher
from prodcat.worker.embedding_cache import EmbeddingCache, photo_key
from prodcat.worker.models import BundleModel, Model, SplitModel

Result = dict[str, Any]
T = TypeVar("T")


class Observers(Protocol):
    """Per-graph batch observers and the decision counter (``WorkerMetrics``)."""

    def graph(self, name: str) -> Any: ...

    def decided(self, path: str) -> None: ...


class InFlight:
    """Counts the products being answered, so a retired model closes only once they are."""

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def tracked(self) -> AsyncIterator[None]:
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


class WholeServing:
    """A format-1 bundle: one batcher over the whole graph; every answer is ``full``."""

    def __init__(self, model: BundleModel, config: BatcherConfig, metrics: Observers) -> None:
        self.model = model
        self.metrics = metrics
        self.batcher: MicroBatcher = MicroBatcher(model, config, metrics.graph("model"))
        self.in_flight = InFlight()

    @property
    def running(self) -> bool:
        return self.batcher.running

    @property
    def depth(self) -> int:
        return self.batcher.depth

    async def start(self) -> None:
        await self.batcher.start()

    async def close(self) -> None:
        await self.in_flight.idle()
        await self.batcher.close()

    async def classify(self, product: Product, deadline: float) -> Result:
        async with self.in_flight.tracked():
            result = await self.batcher.run(product, deadline)
        self.metrics.decided(FULL)
        return {**result, "decided_by": FULL}


class Stage:
    """A graph as a batch model: items are its inputs, already featurized."""

    inputs_ready = True  # the batcher stacks and runs them in the inference thread

    def featurize(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {name: np.stack([item[name] for item in items]) for name in items[0]}


class EncoderStage(Stage):
    """One encoder graph: its inputs (cut to the batch's longest sequence) -> embeddings."""

    def __init__(self, model: SplitModel, slug: str) -> None:
        self.graphs = model.graphs
        self.slug = slug

    def infer(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.graphs.embed(self.slug, batch))


class HeadStage(Stage):
    """The head graph: embeddings and masks -> decoded answers."""

    def __init__(self, model: SplitModel) -> None:
        self.model = model

    def infer(self, batch: dict[str, np.ndarray]) -> list[Result]:
        return self.model.decode(self.model.graphs.head.run(batch))


class SplitServing:
    """A format-2 bundle: a batcher per graph, the cascade, the optional embedding cache."""

    def __init__(
        self,
        model: SplitModel,
        config: BatcherConfig,
        metrics: Observers,
        cascade: bool = True,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.cascade = model.cascade if cascade else None
        self.cache = cache
        self.deadline_s = config.deadline_ms / 1000
        self.pool = ThreadPoolExecutor(config.featurize_threads, "prodcat-featurize")
        self.infer_thread = ThreadPoolExecutor(1, "prodcat-infer")
        shared = (self.pool, self.infer_thread)
        graphs = model.graphs
        self.encoders = {
            slug: MicroBatcher(EncoderStage(model, slug), config, metrics.graph(slug), shared)
            for slug in graphs.encoders
        }
        self.head: MicroBatcher = MicroBatcher(
            HeadStage(model), config, metrics.graph("head"), shared
        )
        self.in_flight = InFlight()

    def _batchers(self) -> list[MicroBatcher]:
        return [*self.encoders.values(), self.head]

    @property
    def running(self) -> bool:
        return all(b.running for b in self._batchers())

    @property
    def depth(self) -> int:
        return sum(b.depth for b in self._batchers())

    async def start(self) -> None:
        for batcher in self._batchers():
            await batcher.start()

    async def close(self) -> None:
        """Answer every product already taken, then stop the batchers and threads."""
        await self.in_flight.idle()
        for batcher in self._batchers():
            await batcher.close()
        for pool in (self.pool, self.infer_thread):
            pool.shutdown(wait=True)

    async def classify(self, product: Product, deadline: float) -> Result:
        async with self.in_flight.tracked():
            key = photo_key(product) if self.cache is not None else None
            pre, present = await self._in_pool(deadline, self._prepare, product)
            embeddings = self._cached(present, key)
            todo = [s for s in present if s not in embeddings]
            cascade = self.cascade
            if cascade is not None and not embeddings:
                first = [s for s in todo if s in cascade.first]
                later = [s for s in todo if s not in cascade.first]
                if first and later:
                    embeddings |= await self._encode(pre, first, deadline, key)
                    if embeddings:  # else a featurizer found nothing after all: fuse
                        result = await self._head(embeddings, deadline)
                        if cascade.stops_at(result["category_path"]):
                            self.metrics.decided(TEXT)
                            return {**result, "decided_by": TEXT}
                    todo = later
            embeddings |= await self._encode(pre, todo, deadline, key)
            result = await self._head(embeddings, deadline)
            self.metrics.decided(FULL)
            return {**result, "decided_by": FULL}

    def _prepare(self, product: Product) -> tuple[Product, list[str]]:
        """The preprocessed product and the encoders whose modality it has (pool thread)."""
        pipeline = self.model.bundle.pipeline
        pre = pipeline.preprocess(product)
        return pre, [slug for slug in pipeline.slugs if pipeline.has_modality(pre, slug)]

    async def _in_pool(self, deadline: float, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in the featurize pool, failing with the item's deadline."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                return await loop.run_in_executor(self.pool, work, *args)
        except TimeoutError:
            raise DeadlineExceeded("no result before the item's deadline") from None

    async def _encode(
        self, product: Product, slugs: list[str], deadline: float, key: str | None
    ) -> dict[str, np.ndarray]:
        """The embeddings of ``slugs``: featurized now, each graph batched on its own."""
        if not slugs:
            return {}
        pipeline = self.model.bundle.pipeline
        features = await self._in_pool(deadline, pipeline.featurize_encoders, product, slugs)
        slugs = [s for s in slugs if features[input_name(s, MASK_INPUT)] > 0]
        inputs = self.model.graphs.encoders
        runs = [
            self.encoders[slug].run(
                {name: features[name] for name in inputs[slug].input_names}, deadline
            )
            for slug in slugs
        ]
        found = dict(zip(slugs, await asyncio.gather(*runs), strict=True))
        if self.cache is not None and key is not None:
            for slug, vector in found.items():
                if self.model.modality[slug] == "image":
                    self.cache.put((slug, key), vector)
        return found

    def _cached(self, present: list[str], key: str | None) -> dict[str, np.ndarray]:
        """Image embeddings found in the cache: all of this photo's, or none."""
        if self.cache is None or key is None:
            return {}
        images = [s for s in present if self.model.modality[s] == "image"]
        found = {slug: self.cache.get((slug, key)) for slug in images}
        if images and all(v is not None for v in found.values()):
            return found  # type: ignore[return-value]
        return {}

    async def _head(self, embeddings: dict[str, np.ndarray], deadline: float) -> Result:
        """The head's answer from ``embeddings`` (encoders without one count as missing)."""
        feeds: dict[str, np.ndarray] = {}
        for slug, dim in self.model.graphs.dims.items():
            found = embeddings.get(slug)
            feeds[embedding_name(slug)] = found if found is not None else np.zeros(dim, np.float32)
            feeds[input_name(slug, MASK_INPUT)] = np.float32(found is not None)
        return await self.head.run(feeds, deadline)


def serving_for(
    model: Model,
    config: BatcherConfig,
    metrics: Observers,
    cascade: bool,
    cache_size: int,
) -> WholeServing | SplitServing:
    """How to serve ``model``: split bundles graph by graph, others whole."""
    if isinstance(model, SplitModel):
        cache = EmbeddingCache(cache_size, metrics) if cache_size > 0 else None
        return SplitServing(model, config, metrics, cascade, cache)
    return WholeServing(model, config, metrics)
