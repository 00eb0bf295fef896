"""Runs the selected sections in order and assembles the results (see bench/__init__).

Order matters: the model-only points give the full-batch inference time (the p99 bound)
and the ceiling; the end-to-end burst gives the capacity the latency loads are fractions
of, and the batch sizes the worker formed, at which the ceiling is read for the ratio.
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

from bench import accuracy, guarantees, model_only, stream
from bench.data import as_messages, cycle, photo_products
from bench.environment import describe
from prodcat.core.settings import Settings
from prodcat.kafka.clients import wait_for_broker
from prodcat.kafka.embedded import EmbeddedBroker
from prodcat.model.bundle import ModelBundle

SECTIONS = ("model", "e2e", "naive", "latency", "accuracy", "guarantees")
LOADS = (0.25, 0.5, 0.75)
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
    products = photo_products(plan.data, max(plan.products, max(plan.batch_sizes)))
    with _progress(console) as progress:
        if "model" in plan.sections:
            results["model_only"] = _model_only(bundle, products, plan, settings, progress)
        streaming = {"e2e", "naive", "latency"} & set(plan.sections)
        if streaming:
            results |= _streaming(settings, plan, products, streaming, progress)
        if "accuracy" in plan.sections:
            own = results.get("model_only")
            results["accuracy"] = accuracy.table(
                [plan.model, *plan.compare], own, settings, products, plan, progress
            )
        if "guarantees" in plan.sections:
            results["guarantees"] = _guarantees(settings, plan, products, progress)
    return summarise(results, settings) | results


def _model_only(
    bundle: ModelBundle, products: list[Any], plan: Plan, settings: Settings, progress: Progress
) -> list[dict[str, Any]]:
    total = len(plan.precisions) * 2 * len(plan.batch_sizes)
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
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    measured = cycle(products, plan.products)
    with (
        tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp,
        EmbeddedBroker() as broker,
    ):
        wait_for_broker(broker.bootstrap, 30, settings)
        workdir = Path(tmp)
        if sections & {"e2e", "latency"}:
            with (
                stream.worker_target(
                    settings, broker.bootstrap, plan.model, workdir, plan.providers
                ) as target,
                stream.Runner(target, plan.timeout_s) as runner,
            ):
                out["e2e"] = _burst(runner, products, measured, plan, progress, "2 end to end")
                if "latency" in sections:
                    out["latency"] = _loads(
                        runner, products, out["e2e"]["items_per_s"], plan, progress
                    )
        if "naive" in sections:
            with (
                stream.naive_target(
                    settings, broker.bootstrap, plan.model, workdir, plan.providers
                ) as target,
                stream.Runner(target, plan.timeout_s) as runner,
            ):
                out["naive"] = _burst(
                    runner, products, measured, plan, progress, "3 naive baseline"
                )
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


def _burst(
    runner: stream.Runner,
    products: list[Any],
    measured: list[Any],
    plan: Plan,
    progress: Progress,
    title: str,
) -> dict[str, Any]:
    task = progress.add_task(title, total=len(measured))
    warmup = as_messages(cycle(products, plan.warmup, len(measured)))
    return stream.throughput(
        runner, warmup, as_messages(measured), lambda n: progress.advance(task, n)
    )


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


def summarise(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The headline figures and the three goals, from whatever sections ran (None: not run)."""
    points = [model_only.Point(**p) for p in results.get("model_only", [])]
    served = results["model"]["precision"]  # the ratios compare the graph the worker runs
    e2e = results.get("e2e") or {}
    naive = results.get("naive") or {}
    batch_mean = (e2e.get("batch_size") or {}).get("mean")
    model_rate = (
        model_only.rate_at(points, served, model_only.FEATURISED, batch_mean)
        if points and batch_mean
        else None
    )
    model_cpu = (
        model_only.cpu_at(points, served, model_only.FEATURISED, batch_mean)
        if points and batch_mean
        else None
    )
    full_batch = settings.worker.max_batch_size
    full_batch_ms = model_only.batch_ms(points, full_batch, served) if points else None
    bound = settings.worker.max_delay_ms + 3 * full_batch_ms if full_batch_ms else None
    at_half = next((r for r in results.get("latency", []) if r["load"] == 0.5), None)
    p99 = at_half["p99_ms"] if at_half else None
    e2e_rate, naive_rate = e2e.get("items_per_s"), naive.get("items_per_s")
    ceiling = max((p.items_per_s for p in points if p.precision == served), default=None)
    summary = {
        "model_only_items_per_s": model_rate,
        "model_only_ceiling_items_per_s": ceiling,
        "e2e_items_per_s": e2e_rate,
        "naive_items_per_s": naive_rate,
        "e2e_over_model_only": _ratio(e2e_rate, model_rate),
        "batched_over_naive": _ratio(e2e_rate, naive_rate),
        "p99_ms_at_50pct": p99,
        "p99_bound_ms": bound,
        "full_batch_inference_ms": full_batch_ms,
        "batch_size_mean": batch_mean,
        # CPU per item moves far less with the machine's load than items/s: the pipeline's
        # own cost (Kafka clients, Faust, JSON, validation) is e2e CPU over model-only CPU.
        "model_only_cpu_ms_per_item": model_cpu,
        "e2e_cpu_ms_per_item": e2e.get("cpu_ms_per_item"),
        "naive_cpu_ms_per_item": naive.get("cpu_ms_per_item"),
        "e2e_cpu_over_model_only_cpu": _ratio(e2e.get("cpu_ms_per_item"), model_cpu),
    }
    summary["goals"] = {
        "e2e_over_model_only >= 0.8": _met(summary["e2e_over_model_only"], 0.8),
        "batched_over_naive >= 1.5": _met(summary["batched_over_naive"], 1.5),
        "p99_at_50pct <= bound": None if p99 is None or bound is None else p99 <= bound,
    }
    return summary


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _met(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal


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
