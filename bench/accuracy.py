"""Item 5, accuracy per millisecond: each bundle's test accuracy beside its speed.

Accuracy is what ``prodcat train`` / ``prodcat evaluate`` recorded in the bundle
(``metrics.json``, else the manifest's ``metrics``); speed is item 1's measurement at the
batcher's ``max_batch_size``, in the precision the bundle ships, with and without
featurising. To add a bundle to the
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
        rows.append(row(bundle, points, size))
        progress.advance(task)
    return rows


def row(bundle: ModelBundle, points: list[model_only.Point], size: int) -> dict[str, Any]:
    manifest = bundle.manifest
    precision = model_only.served_precision(bundle)
    featurised = model_only.rate_at(points, precision, model_only.FEATURISED, size)
    return {
        "bundle": str(bundle.path),
        "encoders": [e["name"] for e in manifest["encoders"]],
        "head": manifest["head"]["name"],
        "precision": precision,
        "accuracy": accuracy_of(bundle),
        "batch_size": size,
        "items_per_s": model_only.rate_at(points, precision, model_only.PRECOMPUTED, size),
        "featurised_items_per_s": featurised,
        "ms_per_item": 1000 / featurised if featurised else None,
    }


def accuracy_of(bundle: ModelBundle) -> dict[str, float] | None:
    """Test accuracy per level as recorded with the bundle, or None when never evaluated."""
    file = bundle.path / "metrics.json"
    metrics = None
    if file.is_file():
        metrics = json.loads(file.read_text(encoding="utf-8"))
    metrics = metrics or bundle.manifest.get("metrics") or {}
    levels = metrics.get("levels") or {}
    return {level: float(m["accuracy"]) for level, m in levels.items()} or None
