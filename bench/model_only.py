"""Item 1, the model-only ceiling: ONNX Runtime items/s per batch size and path.

Two modes per batch size: ``precomputed`` (features made once, pure inference: the model's
ceiling) and ``featurised`` (featurise + collate + inference per batch, the featurising in a
thread pool of the worker's size, as the worker does it). The same session code the worker
uses (``prodcat.model.inference``) runs it, so a GPU run takes the CUDA provider with I/O
binding.

A split bundle (format 2) is measured by path: ``fused`` (every encoder the product has, then
the head: what the worker does with ``cascade = "off"``), ``cascade`` (the first stage for
every item, the photo's graph and the head again only for those it does not decide) and
``text`` (the first stage alone, as if no product had a photo); its graphs are measured in
the precision they ship (compare a ``--quantize`` bundle with ``--compare``). A format-1
bundle has one path, ``fused``, in fp32 and in int8: its graph quantised dynamically, per
channel, into a temporary folder, unless the bundle already ships an int8 graph.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import Product, cycle
from prodcat.model.bundle import ModelBundle
from prodcat.model.cascade import Cascade
from prodcat.model.decoding import path_index
from prodcat.model.graphs import SplitGraphs, WholeGraph, open_graphs

PRECOMPUTED = "precomputed"
FEATURISED = "featurised"
FUSED, CASCADE, TEXT = "fused", "cascade", "text"
Tick = Callable[[], None]


@dataclass
class Point:
    precision: str  # fp32 | int8 | fp16 | mixed
    mode: str  # precomputed | featurised
    batch_size: int
    items_per_s: float
    ms_per_batch: float
    runs: int
    cpu_ms_per_item: float  # this process's CPU time (all threads) per item
    path: str = FUSED  # fused | cascade | text


@dataclass
class Budget:
    """How long each point runs: at least ``min_runs`` timed batches and ``min_seconds``."""

    min_seconds: float = 1.0
    min_runs: int = 2
    max_runs: int = 2000


def served_precision(bundle: ModelBundle) -> str:
    """The precision of the graphs the worker serves: the bundle's own."""
    return bundle.precision


def paths_of(bundle: ModelBundle) -> tuple[str, ...]:
    """The paths worth measuring: a cascade's three, else the one."""
    return (FUSED, CASCADE, TEXT) if Cascade.from_manifest(bundle.manifest) else (FUSED,)


@contextmanager
def runners(
    bundle: ModelBundle, precisions: Sequence[str], providers: str, threads: int
) -> Iterator[dict[str, WholeGraph | SplitGraphs]]:
    """precision -> graphs to run: the bundle's own; for a format-1 fp32 graph, int8 made
    on the fly when asked for (a split bundle is measured as it ships)."""
    shipped = served_precision(bundle)
    found = {shipped: open_graphs(bundle, providers, threads)}
    with tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp:
        if "int8" in precisions and shipped == "fp32" and not bundle.split:
            from prodcat.training.export import quantize
            from prodcat.training.graph_precision import quiet_root_logger

            int8 = Path(tmp) / "model.int8.onnx"
            with quiet_root_logger():  # ORT lists every tensor it leaves in float
                quantize(bundle.graph_path("model"), int8)
            found["int8"] = WholeGraph(bundle, providers, threads, graph=int8)
        yield {p: found[p] for p in precisions if p in found} or {shipped: found[shipped]}


def measure(
    bundle: ModelBundle,
    products: list[Product],
    batch_sizes: Sequence[int],
    *,
    precisions: Sequence[str] = ("fp32", "int8"),
    modes: Sequence[str] = (PRECOMPUTED, FEATURISED),
    paths: Sequence[str] | None = None,
    providers: str = "cpu",
    threads: int = 2,
    featurize_threads: int = 2,
    budget: Budget | None = None,
    tick: Tick | None = None,
) -> list[Point]:
    """Every (precision, path, mode, batch size) point; ``tick()`` after each (progress)."""
    budget = budget or Budget()
    points = []
    with (
        runners(bundle, precisions, providers, threads) as found,
        ThreadPoolExecutor(featurize_threads, "bench-featurize") as pool,
    ):
        cached = [bundle.featurize(p) for p in cycle(products, max(batch_sizes))]
        for precision, graphs in found.items():
            for path in paths or paths_of(bundle):
                run = path_runner(bundle, graphs, path)
                for mode in modes:
                    for size in batch_sizes:
                        step = _stepper(bundle, run, mode, size, products, cached, pool)
                        runs, seconds, cpu = _time(step, budget)
                        points.append(
                            Point(
                                precision,
                                mode,
                                size,
                                items_per_s=size * runs / seconds,
                                ms_per_batch=seconds / runs * 1000,
                                runs=runs,
                                cpu_ms_per_item=cpu / (size * runs) * 1000,
                                path=path,
                            )
                        )
                        if tick:
                            tick()
    return points


def path_runner(
    bundle: ModelBundle, graphs: WholeGraph | SplitGraphs, path: str
) -> Callable[[dict[str, np.ndarray]], Any]:
    """One batch of featurizer inputs through ``path`` (fused, cascade or text)."""
    if path == FUSED:
        return graphs.probs
    assert isinstance(graphs, SplitGraphs)
    cascade = Cascade.from_manifest(bundle.manifest)
    assert cascade is not None
    if path == TEXT:
        return lambda batch: graphs.first_stage_probs(batch, cascade)
    labels = [bundle.manifest["labels"][lv] for lv in bundle.levels]
    taxonomy = path_index(bundle.manifest["taxonomy"]["paths"], labels)
    return lambda batch: graphs.cascade_probs(batch, cascade, taxonomy)


def _stepper(
    bundle: ModelBundle,
    run: Callable[[dict[str, np.ndarray]], Any],
    mode: str,
    size: int,
    products: list[Product],
    cached: list[dict[str, np.ndarray]],
    pool: ThreadPoolExecutor,
) -> Callable[[int], None]:
    """One timed unit of work: run ``n`` of a batch of ``size`` in ``mode``."""
    if mode == PRECOMPUTED:
        feeds = bundle.collate(cycle(cached, size))
        return lambda _n: run(feeds)

    def featurised(n: int) -> None:
        chunk = cycle(products, size, n * size)  # fresh products each run: no warm caches
        run(bundle.collate(list(pool.map(bundle.featurize, chunk))))

    return featurised


def _time(step: Callable[[int], None], budget: Budget) -> tuple[int, float, float]:
    """Warm up once, then run until the budget is spent; (timed runs, seconds, CPU seconds).

    A warm-up that alone outlasts the budget (int8 convolutions at batch 256 take tens of
    seconds here) is taken as the measurement: a new shape's first-run cost is small
    next to it, and a second run would double the section's time.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    step(0)
    first = time.perf_counter() - wall
    if first >= budget.min_seconds:
        return 1, first, time.process_time() - cpu
    runs, wall, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        step(runs + 1)
        runs += 1
        elapsed = time.perf_counter() - wall
        done = runs >= budget.min_runs and elapsed >= budget.min_seconds
        if done or runs >= budget.max_runs:
            return runs, elapsed, time.process_time() - cpu


def rate_at(
    points: Sequence[Point], precision: str, mode: str, batch: float, path: str = FUSED
) -> float | None:
    """items/s at ``batch`` (log-linear between measured sizes; the ends are clamped)."""
    series = sorted(
        (p.batch_size, p.items_per_s)
        for p in points
        if (p.precision, p.mode, p.path) == (precision, mode, path)
    )
    if not series:
        return None
    sizes, rates = zip(*series, strict=True)
    return float(np.interp(math.log2(max(batch, 1)), [math.log2(s) for s in sizes], rates))


def cpu_at(
    points: Sequence[Point], precision: str, mode: str, batch: float, path: str = FUSED
) -> float | None:
    """CPU ms per item at ``batch`` (log-linear between measured sizes, like :func:`rate_at`)."""
    series = sorted(
        (p.batch_size, p.cpu_ms_per_item)
        for p in points
        if (p.precision, p.mode, p.path) == (precision, mode, path)
    )
    if not series:
        return None
    sizes, cpu = zip(*series, strict=True)
    return float(np.interp(math.log2(max(batch, 1)), [math.log2(s) for s in sizes], cpu))


def batch_ms(
    points: Sequence[Point], batch: int, precision: str = "fp32", path: str = FUSED
) -> float | None:
    """Inference time of one batch of ``batch`` items of ``path`` (precomputed features)."""
    rate = rate_at(points, precision, PRECOMPUTED, batch, path)
    return batch / rate * 1000 if rate else None


def as_rows(points: Sequence[Point]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]
