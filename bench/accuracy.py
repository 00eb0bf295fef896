"""Item 5, accuracy per millisecond: each bundle's test accuracy beside its speed.

Accuracy is what ``prodcat train`` / ``prodcat evaluate`` recorded in the bundle
(``metrics.json``, else the manifest's ``metrics``); speed is item 1's measurement at the
batcher's ``max_batch_size``, in the precision the bundle ships, with and without
featurising. A bundle with a cascade has a row per path: fused, cascade, and text (its
first stage alone), each with its own test accuracy. To add a bundle to the
table, train it (``prodcat train --encoder ... --out DIR``) and pass ``--compare DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench import model_only
from bench.data import Product
from prodcat.core.settings import Settings
from prodcat.model.bundle import BundleError, ModelBundle


def table(
    bundles: list[Path],
    own_points: list[dict[str, Any]] | None,
    settings: Settings,
    products: list[Product],
    plan: Any,
    progress: Progress,
) -> list[dict[str, Any]]:
    """One row per bundle; the first bundle reuses ``own_points`` when item 1 ran."""
    size = settings.worker.max_batch_size
    task = progress.add_task("5 accuracy per ms", total=len(bundles))
    rows = []
    for index, path in enumerate(bundles):
        try:
            bundle = ModelBundle.load(path)
        except BundleError as exc:
            rows.append({"bundle": str(path), "error": str(exc)})
            progress.advance(task)
            continue
        if index == 0 and own_points:
            points = [model_only.Point(**p) for p in own_points]
        else:
            points = model_only.measure(
                bundle,
                products,
                [size],
                precisions=(model_only.served_precision(bundle),),
                providers=plan.providers,
                threads=settings.worker.ort_threads,
                featurize_threads=settings.worker.featurize_threads,
                budget=plan.budget,
            )
        rows += [row(bundle, points, size, path) for path in model_only.paths_of(bundle)]
        progress.advance(task)
    return rows


def row(
    bundle: ModelBundle, points: list[model_only.Point], size: int, path: str = model_only.FUSED
) -> dict[str, Any]:
    manifest = bundle.manifest
    precision = model_only.served_precision(bundle)
    featurised = model_only.rate_at(points, precision, model_only.FEATURISED, size, path)
    return {
        "bundle": str(bundle.path),
        "path": path,
        "encoders": [e["name"] for e in manifest["encoders"]],
        "head": manifest["head"]["name"],
        "precision": precision,
        "accuracy": accuracy_of(bundle, path),
        "batch_size": size,
        "items_per_s": model_only.rate_at(points, precision, model_only.PRECOMPUTED, size, path),
        "featurised_items_per_s": featurised,
        "ms_per_item": 1000 / featurised if featurised else None,
    }


def accuracy_of(bundle: ModelBundle, path: str = model_only.FUSED) -> dict[str, float] | None:
    """Test accuracy per level of ``path`` as recorded with the bundle (None: not evaluated)."""
    metrics = recorded_metrics(bundle)
    cascade = metrics.get("cascade") or {}
    levels = {
        model_only.FUSED: metrics.get("levels"),
        model_only.CASCADE: cascade.get("levels"),
        model_only.TEXT: cascade.get("first_stage_levels"),
    }[path] or {}
    return {level: float(m["accuracy"]) for level, m in levels.items()} or None


def recorded_metrics(bundle: ModelBundle) -> dict[str, Any]:
    """The bundle's test metrics: metrics.json, else the manifest's (empty: never evaluated)."""
    file = bundle.path / "metrics.json"
    if file.is_file():
        return json.loads(file.read_text(encoding="utf-8"))
    return bundle.manifest.get("metrics") or {}
