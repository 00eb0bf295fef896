"""The headline figures and the goals, from whatever sections ran (None: not run).

A bundle with a text-first cascade is served by it by default, so the worker's own figures
(``e2e_*``, the latency loads, the ratio to the model-only ceiling) are the cascade's, read
against the model-only ``cascade`` path; ``fused_e2e_items_per_s`` is the same worker with
``cascade = "off"``, on the same products, in the same run. The accuracy figures are the
bundle's test-split evaluation (``prodcat evaluate``, recorded in ``metrics.json``).
"""

from __future__ import annotations

from typing import Any

from bench import model_only
from bench.accuracy import recorded_metrics
from prodcat.core.settings import Settings
from prodcat.model.bundle import ModelBundle
from prodcat.model.cascade import Cascade


def summarise(results: dict[str, Any], settings: Settings, bundle: ModelBundle) -> dict[str, Any]:
    points = [model_only.Point(**p) for p in results.get("model_only", [])]
    served = results["model"]["precision"]  # the ratios compare the graphs the worker runs
    cascade = Cascade.from_manifest(bundle.manifest)
    path = model_only.CASCADE if cascade else model_only.FUSED
    e2e = results.get("e2e") or {}
    fused = results.get("e2e_fused") or (e2e if not cascade else {})
    naive = results.get("naive") or {}
    batches = (e2e.get("graphs") or {}).get(primary_graph(bundle), {}).get("batch_size") or {}
    batch_mean = batches.get("mean")
    model_rate = model_cpu = None
    if points and batch_mean:
        model_rate = model_only.rate_at(points, served, model_only.FEATURISED, batch_mean, path)
        model_cpu = model_only.cpu_at(points, served, model_only.FEATURISED, batch_mean, path)
    full_batch = settings.worker.max_batch_size
    full_batch_ms = model_only.batch_ms(points, full_batch, served, path) if points else None
    bound = settings.worker.max_delay_ms + 3 * full_batch_ms if full_batch_ms else None
    at_half = next((r for r in results.get("latency", []) if r["load"] == 0.5), None)
    p99 = at_half["p99_ms"] if at_half else None
    e2e_rate, naive_rate = e2e.get("items_per_s"), naive.get("items_per_s")
    ceiling = max(
        (p.items_per_s for p in points if (p.precision, p.path) == (served, path)), default=None
    )
    decided = e2e.get("decided_by") or {}
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
        "cascade_e2e_items_per_s": e2e_rate if cascade else None,
        "fused_e2e_items_per_s": fused.get("items_per_s"),
        "cascade_over_fused_e2e": _ratio(e2e_rate, fused.get("items_per_s")) if cascade else None,
        "fused_over_naive": _ratio(fused.get("items_per_s"), naive_rate),
        "cascade_e2e_cpu_ms_per_item": e2e.get("cpu_ms_per_item") if cascade else None,
        "fused_e2e_cpu_ms_per_item": fused.get("cpu_ms_per_item"),
        "cascade_text_share": _share(decided) if cascade else None,
        "cascade_accuracy_drop": accuracy_drop(bundle) if cascade else None,
    }
    drop = summary["cascade_accuracy_drop"]
    summary["goals"] = {
        "e2e_over_model_only >= 0.8": _met(summary["e2e_over_model_only"], 0.8),
        "batched_over_naive >= 1.5": _met(summary["batched_over_naive"], 1.5),
        "p99_at_50pct <= bound": None if p99 is None or bound is None else p99 <= bound,
        "cascade_over_fused_e2e >= 3": _met(summary["cascade_over_fused_e2e"], 3.0),
        "cascade_accuracy_drop <= 0.003": None if drop is None else drop <= 0.003,
    }
    return summary


def primary_graph(bundle: ModelBundle) -> str:
    """The graph every product passes once: ``model`` (format 1), else the first stage's
    first encoder (the title's), whose batches the model-only ratio is read at."""
    if not bundle.split:
        return "model"
    cascade = Cascade.from_manifest(bundle.manifest)
    return cascade.first[0] if cascade else bundle.pipeline.slugs[0]


def accuracy_drop(bundle: ModelBundle) -> float | None:
    """Finest level's test accuracy, always fusing minus the cascade (0.003 = 0.3 points)."""
    metrics = recorded_metrics(bundle)
    cascade = (metrics.get("cascade") or {}).get("levels")
    if not cascade or not metrics.get("levels"):
        return None
    finest = bundle.levels[-1]
    return metrics["levels"][finest]["accuracy"] - cascade[finest]["accuracy"]


def _share(decided: dict[str, float]) -> float | None:
    total = sum(decided.values())
    return decided.get("text", 0.0) / total if total else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _met(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal
