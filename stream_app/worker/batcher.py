"""The micro-batcher: many concurrent single-item requests in, few model calls out.

Semantics follow Triton's dynamic batcher, so they are familiar to whoever runs it:

* A batch goes as soon as ``max_batch_size`` items are waiting; a partial batch waits at
  most ``max_delay_ms`` counted from its *first* item, then goes with what is there.
* The queue is bounded: when it is full, ``await submit(...)`` blocks, which slows the
  Kafka agent down instead of letting memory grow (back-pressure).
* Every item has a deadline; an item still unanswered when it passes fails with
  :class:`DeadlineExceeded`, it is never dropped silently.
* Each item gets its own future. A featurizer that raises fails that item only. When a
  batch's collate or inference raises, its items are retried one by one, so only the item
  that fails alone gets the error (one poisoned event must not sink its batch-mates); the
  batcher runs on.

Work is split so the event loop (Kafka heartbeats, commits, web views) never blocks:
featurizing runs in a thread pool, inference in ONE dedicated thread (an ONNX session is
driven by one thread at a time). Up to ``pipeline_depth`` batches are in flight, so batch
N+1 is featurized while batch N is in the inference thread. Several batchers (one per
graph of a split bundle) may share the pool and the inference thread (``executors``): on a
CPU the graphs then take turns on the cores instead of fighting over them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatcherError(Exception):
    """Base of the batcher's own failures; ``stage`` names the step for dead letters."""

    stage = "batcher"


class DeadlineExceeded(BatcherError):
    """The item was not answered before its deadline."""

    stage = "deadline"


class InferenceError(BatcherError):
    """Collating or running the model failed for the whole batch the item was in."""

    stage = "inference"


class BatcherClosed(BatcherError):
    """The batcher is draining or stopped and takes no new items."""


class BatchModel(Protocol[Item, Result]):
    """What the batcher drives: per-item featurize, per-batch collate and infer.

    A model may set ``inputs_ready = True`` when its items already are model inputs (a
    split bundle's graph stages): then ``featurize`` is not called and ``collate`` runs in
    the inference thread just before ``infer``, so the items never queue in the featurize
    pool behind other products' photo decoding.
    """

    def featurize(self, item: Item) -> Any:
        """Turn one item into model inputs (runs in the featurize pool; may raise)."""

    def collate(self, features: list[Any]) -> Any:
        """Stack per-item inputs into one batch (runs in the featurize pool)."""

    def infer(self, batch: Any) -> Sequence[Result]:
        """Run the model on a batch and return one result per item (inference thread)."""


class BatchObserver(Protocol):
    """Receives the batcher's measurements (the worker forwards them to Prometheus)."""

    def on_batch(self, size: int, queue_waits: list[float]) -> None:
        """A batch of ``size`` items was formed; each item waited that long in the queue."""

    def on_inference(self, size: int, seconds: float) -> None:
        """The model ran on ``size`` items in ``seconds``."""


class _NoObserver:
    def on_batch(self, size: int, queue_waits: list[float]) -> None:
        pass

    def on_inference(self, size: int, seconds: float) -> None:
        pass


@dataclass
class BatcherConfig:
    max_batch_size: int = 32
    max_delay_ms: float = 10.0
    queue_size: int = 256
    deadline_ms: float = 30000.0
    featurize_threads: int = 2
    pipeline_depth: int = 2

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "queue_size", "featurize_threads", "pipeline_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_delay_ms", "deadline_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    enqueued_at: float


_CLOSE = object()


class MicroBatcher(Generic[Item, Result]):
    """Batches items for a :class:`BatchModel`; use as ``async with`` or start()/close()."""

    def __init__(
        self,
        model: BatchModel[Item, Result],
        config: BatcherConfig | None = None,
        observer: BatchObserver | None = None,
        executors: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None,
    ) -> None:
        """``executors``: (featurize pool, inference thread) owned by the caller, who shuts
        them down; by default the batcher makes its own."""
        self.config = config or BatcherConfig()
        self._model = model
        self._observer = observer or _NoObserver()
        self._queue: asyncio.Queue[Any] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._collector: asyncio.Task | None = None
        self._batches: set[asyncio.Task] = set()
        self._closing = False
        self._shared = executors
        self._pool: ThreadPoolExecutor | None = None
        self._infer_thread: ThreadPoolExecutor | None = None

    @property
    def model(self) -> BatchModel[Item, Result]:
        return self._model

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not yet in a batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def running(self) -> bool:
        """True while the batcher forms batches (started, not closed, collector alive)."""
        return self._collector is not None and not self._collector.done() and not self._closing

    @property
    def in_flight(self) -> int:
        """Batches being featurized or inferred right now."""
        return len(self._batches)

    async def start(self) -> None:
        if self._collector is not None:
            raise RuntimeError("batcher already started")
        self._queue = asyncio.Queue(self.config.queue_size)
        self._slots = asyncio.Semaphore(self.config.pipeline_depth)
        if self._shared is not None:
            self._pool, self._infer_thread = self._shared
        else:
            self._pool = ThreadPoolExecutor(self.config.featurize_threads, "prodcat-featurize")
            self._infer_thread = ThreadPoolExecutor(1, "prodcat-infer")
        self._collector = asyncio.create_task(self._collect(), name="microbatcher")

    async def close(self) -> None:
        """Stop taking items, answer every item already submitted, then stop the threads."""
        if self._collector is None or self._closing:
            return
        self._closing = True
        assert self._queue is not None
        await self._queue.put(_CLOSE)
        await self._collector
        while not self._queue.empty():  # submitters that were blocked when close() began
            left = self._queue.get_nowait()
            if isinstance(left, _Pending):
                _settle(left.future, exc=BatcherClosed("the batcher closed before this item ran"))
        while self._batches:
            await asyncio.gather(*list(self._batches), return_exceptions=True)
        if self._shared is None:
            for pool in (self._pool, self._infer_thread):
                if pool is not None:
                    pool.shutdown(wait=True)

    async def __aenter__(self) -> MicroBatcher[Item, Result]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit(self, item: Item, deadline: float | None = None) -> asyncio.Future:
        """Queue one item and return its future; blocks while the queue is full.

        ``deadline`` is an absolute ``loop.time()``; by default ``deadline_ms`` from now.
        The wait for queue space counts against the deadline too.
        """
        if self._queue is None or self._closing:
            raise BatcherClosed("the batcher is not running")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline is None:
            deadline = now + self.config.deadline_ms / 1000
        future: asyncio.Future = loop.create_future()
        pending = _Pending(item, future, now)
        try:
            async with asyncio.timeout_at(deadline):
                await self._queue.put(pending)
        except TimeoutError:
            raise DeadlineExceeded("deadline passed while waiting for queue space") from None
        # No await since the put returned, so the collector has not seen the item yet.
        pending.enqueued_at = loop.time()
        timer = loop.call_at(deadline, _expire, future)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    async def run(self, item: Item, deadline: float | None = None) -> Result:
        """Submit one item and wait for its result (or its error)."""
        return await (await self.submit(item, deadline))

    async def _collect(self) -> None:
        assert self._queue is not None and self._slots is not None
        queue, loop, cfg = self._queue, asyncio.get_running_loop(), self.config
        stop = False
        while not stop:
            await self._slots.acquire()
            first = await queue.get()
            if first is _CLOSE:
                self._slots.release()
                return
            batch = [first]
            flush_at = loop.time() + cfg.max_delay_ms / 1000
            while len(batch) < cfg.max_batch_size:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = flush_at - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is _CLOSE:
                    stop = True
                    break
                batch.append(item)
            live = [p for p in batch if not p.future.done()]
            if not live:
                self._slots.release()
                continue
            now = loop.time()
            self._observer.on_batch(len(live), [now - p.enqueued_at for p in live])
            task = asyncio.create_task(self._run(live, self._model))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run(self, batch: list[_Pending], model: BatchModel[Item, Result]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        try:
            if getattr(model, "inputs_ready", False):
                features: list[Any] = [p.item for p in batch]
            else:
                features = await asyncio.gather(
                    *(loop.run_in_executor(self._pool, model.featurize, p.item) for p in batch),
                    return_exceptions=True,
                )
            ready: list[tuple[_Pending, Any]] = []
            for pending, feature in zip(batch, features, strict=True):
                if isinstance(feature, BaseException):
                    _settle(pending.future, exc=feature)
                elif not pending.future.done():
                    ready.append((pending, feature))
            if not ready:
                return
            try:
                outputs = await self._infer(model, [f for _, f in ready])
            except InferenceError as error:
                if len(ready) == 1:
                    _settle(ready[0][0].future, exc=error)
                    return
                # One poisoned item must not sink its batch-mates: run each alone.
                for pending, feature in ready:
                    try:
                        (output,) = await self._infer(model, [feature])
                    except InferenceError as alone:
                        _settle(pending.future, exc=alone)
                    else:
                        _settle(pending.future, result=output)
                return
            for (pending, _), output in zip(ready, outputs, strict=True):
                _settle(pending.future, result=output)
        finally:
            self._slots.release()

    async def _infer(
        self, model: BatchModel[Item, Result], features: list[Any]
    ) -> Sequence[Result]:
        """Collate (pool) and run (inference thread) one batch; any failure -> InferenceError."""
        loop = asyncio.get_running_loop()
        try:
            if getattr(model, "inputs_ready", False):
                outputs, seconds = await loop.run_in_executor(
                    self._infer_thread, _timed, _collated(model), features
                )
            else:
                inputs = await loop.run_in_executor(self._pool, model.collate, features)
                outputs, seconds = await loop.run_in_executor(
                    self._infer_thread, _timed, model.infer, inputs
                )
            self._observer.on_inference(len(features), seconds)
        except Exception as exc:  # noqa: BLE001 - a bad batch fails its items, not the batcher
            raise InferenceError(_reason(exc)) from exc
        if len(outputs) != len(features):
            raise InferenceError(f"model returned {len(outputs)} results for {len(features)} items")
        return outputs


def _collated(model: Any) -> Any:
    """``infer`` of the collated batch, as one call (for ``inputs_ready`` models)."""
    return lambda features: model.infer(model.collate(features))


def _timed(infer: Any, inputs: Any) -> tuple[Any, float]:
    """Run ``infer`` and time it inside the inference thread (not the wait for the thread)."""
    started = time.perf_counter()
    outputs = infer(inputs)
    return outputs, time.perf_counter() - started


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _expire(future: asyncio.Future) -> None:
    _settle(future, exc=DeadlineExceeded("no result before the item's deadline"))


def _settle(
    future: asyncio.Future, *, result: Any = None, exc: BaseException | None = None
) -> None:
    """Resolve a future unless it is already done (expired or cancelled by its waiter)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
