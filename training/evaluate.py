"""Evaluate a model bundle with ONNX Runtime alone (no torch), as the worker would run it.

Predictions are the served answers: the best category path seen in training
(``prodcat.model.bundle``), not independent per-level argmaxes. The ablation feeds the same
rows with every non-text (``text_only``) or non-image (``image_only``) encoder's inputs
replaced by its "missing" inputs, which is exactly what a product without a photo or
without a title looks like to the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from prodcat.model.bundle import ModelBundle
from prodcat.model.decoding import best_paths, path_index
from prodcat.model.inference import create_session
from prodcat.sources import detect_format, read_source
from prodcat.training.datasets import OTHER, split_groups
from prodcat.training.scoring import all_levels, expected_calibration_error

SPLIT_CHOICES = ("auto", "all", "train", "val", "test")
ABLATIONS = {"text_only": "text", "image_only": "image"}


@dataclass
class EvalData:
    products: list[dict[str, Any]]
    labels: np.ndarray  # (rows, levels) class indices, -1 = a class the model never saw
    description: dict[str, Any]


def load_eval_data(
    bundle: ModelBundle,
    path: Path,
    split: str = "auto",
    with_images_only: bool | None = None,
    limit: int | None = None,
    corrections: Mapping[str, Mapping[str, str]] | None = None,
) -> EvalData:
    """Rows of ``path`` labelled in the bundle's label space, restricted to ``split``.

    ``auto``: the bundle's test split (with its training filters) when ``path`` is the file
    the bundle was trained on, else every row. Splits are recomputed from the manifest's
    seed and grouping, which is possible because group assignment depends only on the group.
    ``corrections`` (product id -> reviewer's labels) win over the file's labels.
    """
    from prodcat.training.corrections import corrected_rows

    data = bundle.manifest["dataset"]
    same_file = Path(path).resolve() == Path(data["path"]).resolve()
    if split == "auto":
        split = "test" if same_file else "all"
    if with_images_only is None:
        with_images_only = bool(data.get("with_images_only")) and same_file
    fmt = detect_format(path)
    levels = bundle.levels
    classes = [bundle.manifest["labels"][lv] for lv in levels]
    lookup = [{label: i for i, label in enumerate(c)} for c in classes]
    rows = [
        row
        for row in corrected_rows(read_source(path, fmt), corrections or {})
        if row.event is not None
        and not row.error
        and not (with_images_only and not row.event.get("image"))
        and all(row.labels.get(lv) for lv in levels)
    ]
    if same_file and data.get("limit"):
        rows = rows[: data["limit"]]  # the rows training saw, before its rare-class handling
    dropped = _dropped_classes(data) if same_file else {}
    rows = [r for r in rows if not any(r.labels[lv] in dropped.get(lv, ()) for lv in levels)]
    products = [row.event for row in rows]
    labels = [[_index(lookup[i], row.labels[lv]) for i, lv in enumerate(levels)] for row in rows]
    groups = [row.group or str(row.event.get("product_id") or row.line) for row in rows]
    if split != "all":
        s = data["split"]
        keep = split_groups(groups, s["seed"], tuple(s["fractions"]))[split]
        products = [products[i] for i in keep]
        labels = [labels[i] for i in keep]
    if limit:
        products, labels = products[:limit], labels[:limit]
    if not products:
        raise ValueError(f"{path}: no labelled rows for levels {', '.join(levels)} ({split})")
    description = {
        "path": str(Path(path).resolve()),
        "format": fmt,
        "split": split,
        "with_images_only": with_images_only,
        "rows": len(products),
    }
    return EvalData(products, np.asarray(labels, dtype=np.int64), description)


def _dropped_classes(data: dict[str, Any]) -> dict[str, set[str]]:
    rare = data.get("rare_classes", {})
    if rare.get("action") != "drop":
        return {}
    return {level: set(found) for level, found in rare.get("classes", {}).items()}


def _index(lookup: dict[str, int], label: str) -> int:
    if label in lookup:
        return lookup[label]
    return lookup.get(OTHER, -1)


def evaluate_bundle(
    bundle: ModelBundle,
    data: EvalData,
    out: Path | None = None,
    batch_size: int = 32,
    threads: int = 2,
) -> dict[str, Any]:
    """Metrics of the bundle on ``data``; with ``out``, also metrics.json and the plots."""
    session = create_session(bundle.model_path, "cpu", threads)
    pipeline = bundle.pipeline
    variants: dict[str, list[str]] = {"fused": pipeline.slugs}
    modality = {e["slug"]: e["modality"] for e in bundle.manifest["encoders"]}
    for ablation, kind in ABLATIONS.items():
        variants[ablation] = [s for s in pipeline.slugs if modality[s] == kind]
    probs: dict[str, list[list[np.ndarray]]] = {v: [] for v in variants}
    timing = {"featurize": 0.0, "model": 0.0}
    n = len(data.products)
    with ThreadPoolExecutor(threads) as pool, tqdm(total=n, desc="evaluate", unit="item") as bar:
        for start in range(0, n, batch_size):
            chunk = data.products[start : start + batch_size]
            began = time.perf_counter()
            items, _ = pipeline.featurize_many(chunk, pool)
            batch = pipeline.collate(items)
            timing["featurize"] += time.perf_counter() - began
            for variant, kept in variants.items():
                feeds = _mask_all_but(pipeline, batch, kept)
                began = time.perf_counter()
                outputs = session.run(feeds)
                if variant == "fused":
                    timing["model"] += time.perf_counter() - began
                probs[variant].append([outputs[name] for name in bundle.output_names])
            bar.update(len(chunk))
    merged = {
        v: [np.concatenate(level) for level in zip(*parts, strict=True)]
        for v, parts in probs.items()
    }
    metrics = _metrics(bundle, data, merged)
    metrics.update(
        {
            "items_per_s": n / timing["model"] if timing["model"] else None,
            "featurize_items_per_s": n / timing["featurize"] if timing["featurize"] else None,
            "throughput": {"batch_size": batch_size, "threads": threads, "provider": "cpu"},
            "ablation_encoders": {v: kept for v, kept in variants.items() if v != "fused"},
            "model": {"path": str(bundle.path), "fingerprint": bundle.fingerprint},
            "data": data.description,
        }
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics["plots"] = confusion_plots(bundle, data.labels, merged["fused"], out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _mask_all_but(
    pipeline: Any, batch: dict[str, np.ndarray], kept: Sequence[str]
) -> dict[str, np.ndarray]:
    feeds = dict(batch)
    size = len(next(iter(batch.values())))
    for slug in pipeline.slugs:
        if slug not in kept:
            for name, blank in pipeline.missing(slug).items():
                feeds[name] = np.broadcast_to(blank, (size, *blank.shape)).copy()
    return feeds


def predicted_indices(bundle: ModelBundle, probs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-level class indices of the served (taxonomy-consistent) path."""
    classes = [bundle.manifest["labels"][lv] for lv in bundle.levels]
    paths = path_index(bundle.manifest["taxonomy"]["paths"], classes)
    chosen = paths[best_paths(probs, paths)]
    return [chosen[:, i] for i in range(len(classes))]


def _metrics(
    bundle: ModelBundle, data: EvalData, probs: dict[str, list[np.ndarray]]
) -> dict[str, Any]:
    levels = bundle.levels
    truth = [data.labels[:, i] for i in range(len(levels))]

    def per_level(variant: str) -> dict[str, Any]:
        predicted = predicted_indices(bundle, probs[variant])
        one_hot = [
            np.eye(p.shape[1], dtype=np.float32)[i]
            for p, i in zip(probs[variant], predicted, strict=True)
        ]
        return all_levels(levels, truth, one_hot)

    ece = {
        level: expected_calibration_error(truth[i], probs["fused"][i])
        for i, level in enumerate(levels)
    }
    return {
        "levels": per_level("fused"),
        "ablation": {v: {"levels": per_level(v)} for v in ABLATIONS},
        "ece": ece[levels[-1]],
        "ece_per_level": ece,
        "n": len(data.products),
    }


def confusion_plots(
    bundle: ModelBundle, labels: np.ndarray, probs: Sequence[np.ndarray], out: Path
) -> list[str]:
    """One row-normalised confusion-matrix PNG per level; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    files = []
    predicted = predicted_indices(bundle, probs)
    for i, level in enumerate(bundle.levels):
        classes = bundle.manifest["labels"][level]
        known = labels[:, i] >= 0
        matrix = confusion_matrix(
            labels[known, i], predicted[i][known], labels=np.arange(len(classes))
        ).astype(np.float64)
        matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        side = min(4 + 0.18 * len(classes), 24)
        fig, ax = plt.subplots(figsize=(side, side))
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=90, fontsize=6)
        ax.set_yticks(ticks, classes, fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{level}: confusion (row-normalised), n={int(known.sum())}")
        fig.tight_layout()
        name = f"confusion_{_file_part(level)}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def _file_part(level: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in level)
