"""Micro-batcher behaviour: batch forming, back-pressure, deadlines, failure isolation, overlap.

Assertions are about what happened (batch contents, which thread ran what, which error an
item got), never about how fast; the only clocks are generous upper bounds that stop a
broken batcher from hanging the suite.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from prodcat.worker.batcher import (
    BatcherClosed,
    BatcherConfig,
    DeadlineExceeded,
    InferenceError,
    MicroBatcher,
)

GUARD_S = 10.0  # upper bound only: a correct batcher finishes far sooner


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


class Recorder:
    """A model that doubles numbers and records every batch and thread it saw."""

    def __init__(
        self,
        infer_hook: Callable[[list[int]], None] | None = None,
        featurize_hook: Callable[[int], None] | None = None,
    ) -> None:
        self.batches: list[list[int]] = []
        self.infer_threads: set[int] = set()
        self.featurize_threads: set[int] = set()
        self._infer_hook = infer_hook
        self._featurize_hook = featurize_hook

    def featurize(self, item: int) -> int:
        self.featurize_threads.add(threading.get_ident())
        if self._featurize_hook:
            self._featurize_hook(item)
        return item

    def collate(self, features: list[int]) -> list[int]:
        return list(features)

    def infer(self, batch: list[int]) -> list[int]:
        self.infer_threads.add(threading.get_ident())
        self.batches.append(batch)
        if self._infer_hook:
            self._infer_hook(batch)
        return [x * 2 for x in batch]


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []
        self.inferred: list[int] = []

    def on_batch(self, size: int, queue_waits: list[float]) -> None:
        self.sizes.append(size)
        self.waits.extend(queue_waits)

    def on_inference(self, size: int, seconds: float) -> None:
        self.inferred.append(size)


def test_full_batch_goes_at_once_and_partial_waits_for_it() -> None:
    async def scenario() -> None:
        model = Recorder()
        cfg = BatcherConfig(max_batch_size=8, max_delay_ms=600_000)
        async with MicroBatcher(model, cfg) as batcher:
            first = [await batcher.submit(i) for i in range(3)]
            await asyncio.sleep(0.05)
            assert model.batches == [], "a partial batch must wait while a full one can form"
            rest = [await batcher.submit(i) for i in range(3, 8)]
            results = await asyncio.wait_for(asyncio.gather(*first, *rest), GUARD_S)
            assert results == [i * 2 for i in range(8)]
            assert model.batches == [list(range(8))]

    run(scenario())


def test_never_more_than_max_batch_size() -> None:
    async def scenario() -> None:
        model = Recorder()
        cfg = BatcherConfig(max_batch_size=4, max_delay_ms=5, queue_size=64)
        async with MicroBatcher(model, cfg) as batcher:
            futures = [await batcher.submit(i) for i in range(30)]
            assert await asyncio.gather(*futures) == [i * 2 for i in range(30)]
        assert max(len(b) for b in model.batches) == 4
        assert sorted(x for b in model.batches for x in b) == list(range(30))

    run(scenario())


def test_partial_batch_delay_counts_from_first_item() -> None:
    """Items keep arriving; a timer restarted per item would never fire, ours must."""

    async def scenario() -> None:
        model = Recorder()
        cfg = BatcherConfig(max_batch_size=10_000, max_delay_ms=200, queue_size=10_000)
        async with MicroBatcher(model, cfg) as batcher:
            first = await batcher.submit(0)
            sent = 1
            loop = asyncio.get_running_loop()
            give_up = loop.time() + GUARD_S
            while not first.done() and loop.time() < give_up:
                await batcher.submit(sent)
                sent += 1
                await asyncio.sleep(0.01)
            assert first.done(), "the first item's batch never went while items kept coming"

    run(scenario())


def test_zero_delay_sends_what_is_there() -> None:
    async def scenario() -> None:
        model = Recorder()
        async with MicroBatcher(model, BatcherConfig(max_batch_size=8, max_delay_ms=0)) as b:
            assert await b.run(21) == 42

    run(scenario())


def test_full_queue_blocks_the_submitter() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Recorder(infer_hook=lambda _: gate.wait(GUARD_S))
        cfg = BatcherConfig(max_batch_size=1, max_delay_ms=0, queue_size=2, pipeline_depth=1)
        async with MicroBatcher(model, cfg) as batcher:
            running = await batcher.submit(0)
            while not model.batches:  # item 0 is in the (blocked) inference thread
                await asyncio.sleep(0.01)
            queued = [await batcher.submit(1), await batcher.submit(2)]
            blocked = asyncio.create_task(batcher.submit(3))
            await asyncio.sleep(0.1)
            assert not blocked.done(), "submit must wait while the queue is full"
            assert batcher.depth == 2
            gate.set()
            last = await asyncio.wait_for(blocked, GUARD_S)
            results = await asyncio.gather(running, *queued, last)
            assert results == [0, 2, 4, 6]

    run(scenario())


def test_item_past_its_deadline_fails_and_batcher_goes_on() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Recorder(infer_hook=lambda b: gate.wait(GUARD_S) if b == [1] else None)
        cfg = BatcherConfig(max_batch_size=1, max_delay_ms=0, deadline_ms=100)
        async with MicroBatcher(model, cfg) as batcher:
            with pytest.raises(DeadlineExceeded):
                await batcher.run(1)
            gate.set()
            assert await batcher.run(5) == 10

    run(scenario())


def test_deadline_already_past_fails_without_running() -> None:
    async def scenario() -> None:
        model = Recorder()
        cfg = BatcherConfig(max_batch_size=4, max_delay_ms=50)
        async with MicroBatcher(model, cfg) as batcher:
            loop = asyncio.get_running_loop()
            with pytest.raises(DeadlineExceeded):
                await batcher.run(7, deadline=loop.time() - 1)
            assert await batcher.run(8) == 16
        assert all(7 not in b for b in model.batches)

    run(scenario())


def test_poisoned_item_fails_alone_and_its_batch_mates_succeed() -> None:
    def explode(batch: list[int]) -> None:
        if 13 in batch:
            raise RuntimeError("model exploded")

    async def scenario() -> Recorder:
        model = Recorder(infer_hook=explode)
        cfg = BatcherConfig(max_batch_size=3, max_delay_ms=600_000)
        async with MicroBatcher(model, cfg) as batcher:
            futures = [await batcher.submit(i) for i in (12, 13, 14)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            again = await asyncio.gather(*[batcher.run(i) for i in (1, 2, 3)])
            assert again == [2, 4, 6], "the batcher must keep running"
        assert outcomes[0] == 24 and outcomes[2] == 28
        assert isinstance(outcomes[1], InferenceError)
        assert "model exploded" in str(outcomes[1])
        return model

    model = run(scenario())
    assert [12, 13, 14] in model.batches and [13] in model.batches


def test_broken_model_fails_every_item_but_not_the_batcher() -> None:
    class Broken(Recorder):
        broken = True

        def infer(self, batch: list[int]) -> list[int]:
            if self.broken:
                raise RuntimeError("no GPU memory")
            return super().infer(batch)

    async def scenario() -> None:
        cfg = BatcherConfig(max_batch_size=4, max_delay_ms=600_000)
        model = Broken()
        async with MicroBatcher(model, cfg) as batcher:
            futures = [await batcher.submit(i) for i in range(4)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            assert all(isinstance(o, InferenceError) for o in outcomes)
            model.broken = False
            assert await asyncio.gather(*[batcher.run(i) for i in range(4)]) == [0, 2, 4, 6]

    run(scenario())


def test_featurize_error_fails_only_that_item_with_its_own_error() -> None:
    class PluginBroke(Exception):
        pass

    def refuse(item: int) -> None:
        if item == 3:
            raise PluginBroke("cannot featurize 3")

    async def scenario() -> None:
        model = Recorder(featurize_hook=refuse)
        cfg = BatcherConfig(max_batch_size=3, max_delay_ms=600_000)
        async with MicroBatcher(model, cfg) as batcher:
            futures = [await batcher.submit(i) for i in (2, 3, 4)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert outcomes[0] == 4 and outcomes[2] == 8
        assert isinstance(outcomes[1], PluginBroke)
        assert model.batches == [[2, 4]]

    run(scenario())


def test_wrong_number_of_results_is_an_inference_error() -> None:
    class Short(Recorder):
        def infer(self, batch: list[int]) -> list[int]:
            return super().infer(batch)[:-1]

    async def scenario() -> None:
        async with MicroBatcher(Short(), BatcherConfig(max_batch_size=1)) as batcher:
            with pytest.raises(InferenceError, match="0 results for 1 items"):
                await batcher.run(1)

    run(scenario())


def test_next_batch_is_featurized_while_previous_one_infers() -> None:
    second_featurized = threading.Event()
    overlapped: list[bool] = []

    def infer_hook(batch: list[int]) -> None:
        if batch == [1]:
            overlapped.append(second_featurized.wait(GUARD_S))

    def featurize_hook(item: int) -> None:
        if item == 2:
            second_featurized.set()

    async def scenario() -> None:
        model = Recorder(infer_hook=infer_hook, featurize_hook=featurize_hook)
        cfg = BatcherConfig(max_batch_size=1, max_delay_ms=0, featurize_threads=2)
        async with MicroBatcher(model, cfg) as batcher:
            futures = [await batcher.submit(1), await batcher.submit(2)]
            assert await asyncio.gather(*futures) == [2, 4]

    run(scenario())
    assert overlapped == [True], "batch 2 was not featurized while batch 1 was inferring"


def test_inference_runs_in_one_dedicated_thread() -> None:
    async def scenario() -> Recorder:
        model = Recorder()
        cfg = BatcherConfig(max_batch_size=2, max_delay_ms=1, featurize_threads=3)
        async with MicroBatcher(model, cfg) as batcher:
            await asyncio.gather(*[batcher.run(i) for i in range(20)])
        return model

    model = run(scenario())
    assert len(model.infer_threads) == 1
    assert threading.get_ident() not in model.infer_threads | model.featurize_threads


def test_close_answers_everything_submitted_then_refuses() -> None:
    async def scenario() -> None:
        model = Recorder()
        batcher = MicroBatcher(model, BatcherConfig(max_batch_size=4, max_delay_ms=600_000))
        await batcher.start()
        futures = [await batcher.submit(i) for i in range(6)]
        await batcher.close()
        assert [f.result() for f in futures] == [i * 2 for i in range(6)]
        with pytest.raises(BatcherClosed):
            await batcher.submit(1)

    run(scenario())


def test_observer_sees_every_item_once() -> None:
    async def scenario() -> Observer:
        observer = Observer()
        cfg = BatcherConfig(max_batch_size=3, max_delay_ms=2)
        async with MicroBatcher(Recorder(), cfg, observer) as batcher:
            await asyncio.gather(*[batcher.run(i) for i in range(10)])
        return observer

    observer = run(scenario())
    assert sum(observer.sizes) == 10 == sum(observer.inferred)
    assert len(observer.waits) == 10 and all(w >= 0 for w in observer.waits)


def test_batchers_can_share_one_inference_thread() -> None:
    """Split bundles run a batcher per graph; sharing the executors, graphs take turns."""

    async def scenario() -> tuple[Recorder, Recorder]:
        pool = ThreadPoolExecutor(2)
        infer = ThreadPoolExecutor(1)
        first, second = Recorder(), Recorder()
        cfg = BatcherConfig(max_batch_size=4, max_delay_ms=1)
        async with (
            MicroBatcher(first, cfg, executors=(pool, infer)) as a,
            MicroBatcher(second, cfg, executors=(pool, infer)) as b,
        ):
            results = await asyncio.gather(*[a.run(i) for i in range(6)], b.run(10))
            assert results == [0, 2, 4, 6, 8, 10, 20]
        infer.submit(lambda: None).result()  # still open: the caller owns and shuts them
        pool.shutdown()
        infer.shutdown()
        return first, second

    first, second = run(scenario())
    assert first.infer_threads == second.infer_threads and len(first.infer_threads) == 1


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatcherConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        BatcherConfig(max_delay_ms=-1)


def test_running_reflects_the_lifecycle() -> None:
    async def scenario() -> None:
        batcher = MicroBatcher(Recorder())
        assert not batcher.running
        await batcher.start()
        assert batcher.running
        await batcher.close()
        assert not batcher.running

    run(scenario())


def test_ready_inputs_skip_the_featurize_pool() -> None:
    """A graph stage's items are model inputs already: no featurize call, and the stacking
    happens in the inference thread, not behind other work queued in the pool."""

    class Ready(Recorder):
        inputs_ready = True

        def __init__(self) -> None:
            super().__init__()
            self.collate_threads: set[int] = set()

        def featurize(self, item: int) -> int:
            raise AssertionError("featurize must not be called for ready inputs")

        def collate(self, features: list[int]) -> list[int]:
            self.collate_threads.add(threading.get_ident())
            if 13 in features:
                raise ValueError("cannot stack 13")
            return list(features)

    async def scenario() -> tuple[Ready, list[Any]]:
        model = Ready()
        cfg = BatcherConfig(max_batch_size=3, max_delay_ms=600_000)
        async with MicroBatcher(model, cfg) as batcher:
            futures = [await batcher.submit(i) for i in (12, 13, 14)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        return model, outcomes

    model, outcomes = run(scenario())
    assert outcomes[0] == 24 and outcomes[2] == 28 and isinstance(outcomes[1], InferenceError)
    assert model.collate_threads == model.infer_threads and len(model.infer_threads) == 1
