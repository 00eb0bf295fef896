"""Evaluate a model bundle with ONNX Runtime alone (no torch), as the worker would run it.

Predictions are the served answers: the best category path seen in training
(``prodcat.model.bundle``), not independent per-level argmaxes. The ablation answers the
same rows with every non-text (``text_only``) or non-image (``image_only``) modality
missing, which is exactly what a product without a photo or without a title looks like to
the model. A bundle with a calibrated cascade (format 2) is also measured as the worker
serves it by default: the ``cascade`` block has its accuracy, the share of rows the first
stage decided, and its graph speed, run batch by batch as the worker runs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.model.bundle import ModelBundle
from prodcat.model.cascade import Cascade
from prodcat.model.decoding import best_paths, path_index
from prodcat.model.graphs import open_graphs
from prodcat.sources import detect_format, read_source
from prodcat.training.cascade import FIRST_STAGE
from prodcat.training.datasets import OTHER, split_groups
from prodcat.training.paths import CASCADE, FULL, PathProbs, run_paths
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
    graphs = open_graphs(bundle, "cpu", threads)
    modality = {e["slug"]: e["modality"] for e in bundle.manifest["encoders"]}
    paths = {
        ablation: [s for s in bundle.pipeline.slugs if modality[s] == kind]
        for ablation, kind in ABLATIONS.items()
    }
    cascade = Cascade.from_manifest(bundle.manifest)
    if cascade is not None:
        paths[FIRST_STAGE] = list(cascade.first)
    answers = run_paths(bundle, graphs, data.products, paths, batch_size, threads, cascade=cascade)
    n = len(data.products)
    model_seconds = sum(v for k, v in answers.seconds.items() if k in (*modality, "head:fused"))
    model_seconds += answers.seconds.get("model:fused", 0.0)
    metrics = _metrics(bundle, data, answers.probs)
    if answers.decided is not None:
        metrics["cascade"] = cascade_metrics(bundle, data, answers)
    featurize = answers.seconds["featurize"]
    metrics.update(
        {
            "items_per_s": n / model_seconds if model_seconds else None,
            "featurize_items_per_s": n / featurize if featurize else None,
            "throughput": {"batch_size": batch_size, "threads": threads, "provider": "cpu"},
            "ablation_encoders": {k: v for k, v in paths.items() if k in ABLATIONS},
            "model": {"path": str(bundle.path), "fingerprint": bundle.fingerprint},
            "data": data.description,
        }
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics["plots"] = confusion_plots(bundle, data.labels, answers[FULL], out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def cascade_metrics(bundle: ModelBundle, data: EvalData, answers: PathProbs) -> dict[str, Any]:
    """The cascade as the worker serves it, run batch by batch: accuracy, the share of rows
    its first stage decided, and its graph speed (featurizing excluded)."""
    assert answers.decided is not None
    cascade = Cascade.from_manifest(bundle.manifest)
    assert cascade is not None
    decided = answers.decided
    applicable = cascade.applies(answers.present)
    truth = [data.labels[:, i] for i in range(len(bundle.levels))]
    seconds = answers.seconds[CASCADE]
    return {
        "levels": all_levels(bundle.levels, truth, _one_hot(bundle.manifest, answers[CASCADE])),
        "first_stage_levels": all_levels(
            bundle.levels, truth, _one_hot(bundle.manifest, answers[FIRST_STAGE])
        ),
        "decided_by_text": float(decided.mean()),
        "decided_by_text_of_applicable": float(decided.sum() / max(1, applicable.sum())),
        "first": list(cascade.first),
        "thresholds": dict(zip(bundle.levels, cascade.thresholds, strict=True)),
        "items_per_s": len(decided) / seconds if seconds else None,
    }


def served_accuracy(
    manifest: dict[str, Any], probs: Sequence[np.ndarray], labels: np.ndarray
) -> list[float]:
    """Per level, the accuracy of the served (taxonomy-consistent) path."""
    predicted = predicted_indices(manifest, probs)
    return [float(np.mean(p == labels[:, i])) for i, p in enumerate(predicted)]


def predicted_indices(manifest: dict[str, Any], probs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-level class indices of the served (taxonomy-consistent) path."""
    paths = _paths(manifest)
    chosen = paths[best_paths(probs, paths)]
    return [chosen[:, i] for i in range(paths.shape[1])]


def _paths(manifest: dict[str, Any]) -> np.ndarray:
    classes = [manifest["labels"][lv] for lv in manifest["levels"]]
    return path_index(manifest["taxonomy"]["paths"], classes)


def _one_hot(manifest: dict[str, Any], probs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The served path as one-hot rows per level, for the metrics that take probabilities."""
    return [
        np.eye(p.shape[1], dtype=np.float32)[i]
        for p, i in zip(probs, predicted_indices(manifest, probs), strict=True)
    ]


def _metrics(
    bundle: ModelBundle, data: EvalData, probs: dict[str, list[np.ndarray]]
) -> dict[str, Any]:
    levels = bundle.levels
    truth = [data.labels[:, i] for i in range(len(levels))]

    def per_level(variant: str) -> dict[str, Any]:
        return all_levels(levels, truth, _one_hot(bundle.manifest, probs[variant]))

    ece = {
        level: expected_calibration_error(truth[i], probs[FULL][i])
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
    predicted = predicted_indices(bundle.manifest, probs)
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
