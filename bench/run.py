"""Runs the selected sections in order and assembles the results (see bench/__init__).

Order matters: the model-only points give the full-batch inference time (the p99 bound)
and the ceiling; the end-to-end burst gives the capacity the latency loads are fractions
of, and the batch sizes the worker formed, at which the ceiling is read for the ratio.
With a bundle that has a cascade, the end-to-end section runs the worker twice on the same
products: as configured (``cascade = "auto"``, the default) and with ``cascade = "off"``
(always fusing), one after the other in the same run.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import accuracy, guarantees, image_path, model_only, stream
from bench.data import as_messages, cycle, photo_products
from bench.environment import describe
from bench.summary import summarise
from bench.worker_metrics import merged
from prodcat.core.settings import Settings
from prodcat.kafka.clients import wait_for_broker
from prodcat.kafka.embedded import EmbeddedBroker
from prodcat.model.bundle import ModelBundle

SECTIONS = ("model", "e2e", "naive", "latency", "accuracy", "image", "guarantees")
LOADS = (0.25, 0.5, 0.75)
ROUNDS = 3  # bursts per pipeline in the end-to-end section, the pipelines taking turns
FULL_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Plan:
    """What to run; :func:`full` and :func:`quick` give the two presets."""

    model: Path
    data: Path
    sections: tuple[str, ...] = SECTIONS
    batch_sizes: tuple[int, ...] = FULL_BATCH_SIZES
    products: int = 1500
    warmup: int = 64
    latency_seconds: float = 20.0
    budget: model_only.Budget = field(default_factory=model_only.Budget)
    precisions: tuple[str, ...] = ("fp32", "int8")
    providers: str = "cpu"
    compare: tuple[Path, ...] = ()
    timeout_s: float = 900.0

    @classmethod
    def quick(cls, model: Path, data: Path, **overrides: Any) -> Plan:
        """A small run for tests and smoke checks: seconds, not minutes."""
        return cls(
            model=model,
            data=data,
            batch_sizes=(1, 4, 16),
            products=48,
            warmup=8,
            latency_seconds=2.0,
            budget=model_only.Budget(min_seconds=0.05, min_runs=2),
            timeout_s=300.0,
        ).with_overrides(**overrides)

    @classmethod
    def full(cls, model: Path, data: Path, **overrides: Any) -> Plan:
        return cls(model=model, data=data).with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> Plan:
        for name, value in overrides.items():
            if value is not None:
                setattr(self, name, value)
        return self


def run(settings: Settings, plan: Plan, console: Console) -> dict[str, Any]:
    """Run ``plan``; returns the results dict that bench.report writes."""
    bundle = ModelBundle.load(plan.model)
    batcher = {"max_batch_size": settings.worker.max_batch_size}
    batcher["max_delay_ms"] = settings.worker.max_delay_ms
    results: dict[str, Any] = describe(plan.providers) | {
        "model": {
            "path": str(plan.model),
            "fingerprint": bundle.fingerprint,
            "precision": model_only.served_precision(bundle),
        },
        "batcher": batcher,
        "plan": {
            "sections": list(plan.sections),
            "products": plan.products,
            "batch_sizes": list(plan.batch_sizes),
            "precisions": list(plan.precisions),
            "latency_seconds": plan.latency_seconds,
            "providers": plan.providers,
        },
    }
    products = photo_products(plan.data, max(plan.products, max(plan.batch_sizes)), bundle)
    results["plan"]["distinct_products"] = len(products)
    with _progress(console) as progress:
        if "model" in plan.sections:
            results["model_only"] = _model_only(bundle, products, plan, settings, progress)
        streaming = {"e2e", "naive", "latency"} & set(plan.sections)
        if streaming:
            cascade = model_only.CASCADE in model_only.paths_of(bundle)
            results |= _streaming(settings, plan, products, streaming, progress, cascade)
        if "accuracy" in plan.sections:
            own = results.get("model_only")
            results["accuracy"] = accuracy.table(
                [plan.model, *plan.compare], own, settings, products, plan, progress
            )
        if "image" in plan.sections and bundle.split:
            results["image_path"] = image_path.measure(bundle, products, settings, plan, progress)
        if "guarantees" in plan.sections:
            results["guarantees"] = _guarantees(settings, plan, products, progress)
    return summarise(results, settings, bundle) | results


def _model_only(
    bundle: ModelBundle, products: list[Any], plan: Plan, settings: Settings, progress: Progress
) -> list[dict[str, Any]]:
    kinds = 1 if bundle.split else len(plan.precisions)
    total = kinds * len(model_only.paths_of(bundle)) * 2 * len(plan.batch_sizes)
    task = progress.add_task("1 model-only ceiling", total=total)
    points = model_only.measure(
        bundle,
        products,
        plan.batch_sizes,
        precisions=plan.precisions,
        providers=plan.providers,
        threads=settings.worker.ort_threads,
        featurize_threads=settings.worker.featurize_threads,
        budget=plan.budget,
        tick=lambda: progress.advance(task),
    )
    progress.update(task, completed=total)
    return model_only.as_rows(points)


def _streaming(
    settings: Settings,
    plan: Plan,
    products: list[Any],
    sections: set[str],
    progress: Progress,
    cascade: bool,
) -> dict[str, Any]:
    """Sections 2-4. The pipelines measured against each other (the worker as configured,
    the worker always fusing, the naive loop) run at the same time on their own topics and
    take turns: ``ROUNDS`` bursts each, one pipeline after the other, so a change in the
    shared machine's load falls on all of them alike instead of on whichever ran last."""
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp,
        EmbeddedBroker() as broker,
        contextlib.ExitStack() as stack,
    ):
        wait_for_broker(broker.bootstrap, 30, settings)
        workdir = Path(tmp)
        bootstrap = broker.bootstrap
        targets: dict[str, tuple[str, Any]] = {}
        if sections & {"e2e", "latency"}:
            target = stream.worker_target(settings, bootstrap, plan.model, workdir, plan.providers)
            targets["e2e"] = ("2 end to end", target)
        if "e2e" in sections and cascade:
            off = {"PRODCAT_WORKER__CASCADE": "off"}
            target = stream.worker_target(
                settings, bootstrap, plan.model, workdir, plan.providers, "fused", off
            )
            targets["e2e_fused"] = ("2 end to end, fusing", target)
        if "naive" in sections:
            target = stream.naive_target(settings, bootstrap, plan.model, workdir, plan.providers)
            targets["naive"] = ("3 naive baseline", target)
        runners = {
            key: stack.enter_context(stream.Runner(stack.enter_context(target), plan.timeout_s))
            for key, (_, target) in targets.items()
        }
        titles = {key: title for key, (title, _) in targets.items()}
        out |= _take_turns(runners, titles, products, plan, progress)
        if "latency" in sections:
            capacity = out["e2e"]["items_per_s"]
            out["latency"] = _loads(runners["e2e"], products, capacity, plan, progress)
    return out


def _guarantees(
    settings: Settings, plan: Plan, products: list[Any], progress: Progress
) -> dict[str, Any]:
    def task(title: str, total: int) -> Callable[[int], None]:
        added = progress.add_task(title, total=total)
        return lambda n: progress.advance(added, n)

    with (
        tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp,
        guarantees.kafka(settings) as bootstrap,
    ):
        return guarantees.measure(settings, bootstrap, plan, products, Path(tmp), task)


def _take_turns(
    runners: dict[str, stream.Runner],
    titles: dict[str, str],
    products: list[Any],
    plan: Plan,
    progress: Progress,
) -> dict[str, Any]:
    """Each pipeline's throughput over ``ROUNDS`` bursts, the pipelines taking turns."""
    measured = cycle(products, plan.products)
    size = math.ceil(len(measured) / ROUNDS)
    tasks = {key: progress.add_task(titles[key], total=len(measured)) for key in runners}
    parts: dict[str, list[dict[str, Any]]] = {key: [] for key in runners}
    for start in range(0, len(measured), size):
        burst = measured[start : start + size]
        for key, runner in runners.items():
            warmup = as_messages(cycle(products, 0 if start else plan.warmup, len(measured)))
            parts[key].append(
                stream.throughput(
                    runner,
                    warmup,
                    as_messages(burst),
                    lambda n, task=tasks[key]: progress.advance(task, n),
                )
            )
    return {key: merged(results) for key, results in parts.items()}


def _loads(
    runner: stream.Runner, products: list[Any], capacity: float, plan: Plan, progress: Progress
) -> list[dict[str, Any]]:
    found = []
    for load in LOADS:
        rate = capacity * load
        count = max(10, math.ceil(rate * plan.latency_seconds))
        task = progress.add_task(f"4 latency at {load:.0%} load", total=count)
        messages = as_messages(cycle(products, count))
        found.append(
            {"load": load}
            | stream.latency(runner, messages, rate, lambda n, t=task: progress.advance(t, n))
        )
    return found


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    columns = [
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress
