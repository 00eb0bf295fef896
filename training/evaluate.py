"""Evaluate a model bundle with ONNX Runtime alone (no torch), as the worker would run it.

Predictions are the served answers: the best category path seen in training
(``prodcat.model.bundle``), not independent per-level argmaxes. Beside the full input, the
same rows are answered as shops really send them (``variants``): ``poor_titles`` (every word
that names a category removed from the title, ``prodcat.training.title_variants``),
``no_title`` (the photo alone) and ``no_photo`` (the title alone); each on all rows and on
the rows with a photo, with ECE per level and the share of wrong answers ``needs_review``
flags (a level's score under the bundle's fitted ``review_threshold``). A missing modality is
fed exactly as the worker feeds a product without it. A bundle with a calibrated cascade
(format 2) is also measured as the worker serves it by default: the ``cascade`` block has
its accuracy, the share of rows the first stage decided, and its graph speed, run batch by
batch as the worker runs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.model.bundle import ModelBundle
from prodcat.model.cascade import Cascade, chosen_scores
from prodcat.model.decoding import best_paths, path_index
from prodcat.model.graphs import open_graphs
from prodcat.sources import detect_format, read_source
from prodcat.training.cascade import FIRST_STAGE
from prodcat.training.datasets import OTHER, split_groups
from prodcat.training.paths import CASCADE, FULL, PathProbs, run_paths
from prodcat.training.scoring import all_levels, expected_calibration_error, review_catch
from prodcat.training.title_variants import CategoryWords, poor_title

SPLIT_CHOICES = ("auto", "all", "train", "val", "test")
# Variants answered from the full input's run with a modality masked: name -> kept modality.
MASKED_VARIANTS = {"no_photo": "text", "no_title": "image"}
POOR_TITLES = "poor_titles"
VARIANTS = ("full", POOR_TITLES, "no_title", "no_photo")


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
    review_threshold: float | None = None,
) -> dict[str, Any]:
    """Metrics of the bundle on ``data``; with ``out``, also metrics.json and the plots.

    ``review_threshold``: what ``needs_review`` is measured at (None: the bundle's own, as the
    worker uses it unless ``[worker] review_threshold`` is set)."""
    if review_threshold is None:
        review_threshold = bundle.review_threshold
    graphs = open_graphs(bundle, "cpu", threads)
    modality = {e["slug"]: e["modality"] for e in bundle.manifest["encoders"]}
    kinds = set(modality.values())
    paths = {
        variant: [s for s in bundle.pipeline.slugs if modality[s] == kind]
        for variant, kind in MASKED_VARIANTS.items()
        if kinds - {kind}
    }
    cascade = Cascade.from_manifest(bundle.manifest)
    if cascade is not None:
        paths[FIRST_STAGE] = list(cascade.first)
    answers = run_paths(bundle, graphs, data.products, paths, batch_size, threads, cascade=cascade)
    probs = {"full": answers[FULL], **{v: answers[v] for v in MASKED_VARIANTS if v in paths}}
    poor_answers = None
    if "text" in kinds:
        words = CategoryWords.from_classes(bundle.manifest["labels"])
        poor = [poor_title(p, words) for p in data.products]
        poor_answers = run_paths(
            bundle, graphs, poor, {}, batch_size, threads, POOR_TITLES, cascade=cascade
        )
        probs[POOR_TITLES] = poor_answers[FULL]
    n = len(data.products)
    model_seconds = sum(v for k, v in answers.seconds.items() if k in (*modality, "head:fused"))
    model_seconds += answers.seconds.get("model:fused", 0.0)
    photo = _with_photo(answers, modality)
    metrics = _metrics(bundle, data, probs, photo, review_threshold)
    if answers.decided is not None:
        metrics["cascade"] = cascade_metrics(bundle, data, answers)
    if poor_answers is not None and poor_answers.decided is not None:
        metrics["variants"][POOR_TITLES]["cascade"] = _served_by_cascade(bundle, data, poor_answers)
    featurize = answers.seconds["featurize"]
    metrics.update(
        {
            "items_per_s": n / model_seconds if model_seconds else None,
            "featurize_items_per_s": n / featurize if featurize else None,
            "throughput": {"batch_size": batch_size, "threads": threads, "provider": "cpu"},
            "variant_encoders": {k: v for k, v in paths.items() if k in MASKED_VARIANTS},
            "model": {"path": str(bundle.path), "fingerprint": bundle.fingerprint},
            "data": data.description,
        }
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics["plots"] = confusion_plots(bundle, data.labels, answers[FULL], out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _with_photo(answers: PathProbs, modality: Mapping[str, str]) -> np.ndarray | None:
    """Rows that have a photo (None: the bundle reads no photo)."""
    image = [answers.present[s] for s, kind in modality.items() if kind == "image"]
    return np.any(image, axis=0) if image else None


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
        **_served_by_cascade(bundle, data, answers),
        "first_stage_levels": all_levels(
            bundle.levels, truth, _one_hot(bundle.manifest, answers[FIRST_STAGE])
        ),
        "decided_by_text_of_applicable": float(decided.sum() / max(1, applicable.sum())),
        "first": list(cascade.first),
        "thresholds": dict(zip(bundle.levels, cascade.thresholds, strict=True)),
        "items_per_s": len(decided) / seconds if seconds else None,
    }


def _served_by_cascade(bundle: ModelBundle, data: EvalData, answers: PathProbs) -> dict[str, Any]:
    """A variant as the cascade serves it: does a poor title stop at the title, unread photo?"""
    assert answers.decided is not None
    truth = [data.labels[:, i] for i in range(len(bundle.levels))]
    return {
        "levels": all_levels(bundle.levels, truth, _one_hot(bundle.manifest, answers[CASCADE])),
        "decided_by_text": float(answers.decided.mean()),
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
    bundle: ModelBundle,
    data: EvalData,
    probs: Mapping[str, list[np.ndarray]],
    photo: np.ndarray | None,
    review_threshold: float,
) -> dict[str, Any]:
    """Full-input metrics at the top level (as before variants existed), every variant's
    under ``variants``."""
    variants = {
        name: _variant(bundle, data.labels, probs[name], photo, review_threshold)
        for name in VARIANTS
        if name in probs
    }
    full = variants["full"]
    return {
        "levels": full["levels"],
        "variants": variants,
        "ece": full["ece_per_level"][bundle.levels[-1]],
        "ece_per_level": full["ece_per_level"],
        "review": full["review"],
        "n": len(data.products),
        "n_with_photo": None if photo is None else int(photo.sum()),
    }


def _variant(
    bundle: ModelBundle,
    labels: np.ndarray,
    probs: Sequence[np.ndarray],
    photo: np.ndarray | None,
    review_threshold: float,
) -> dict[str, Any]:
    """One variant: per level on every row and on the rows with a photo, ECE, review."""
    levels = bundle.levels
    paths = _paths(bundle.manifest)
    best = best_paths(probs, paths)

    def per_level(rows: np.ndarray) -> dict[str, Any]:
        truth = [labels[rows, i] for i in range(len(levels))]
        return all_levels(levels, truth, _one_hot(bundle.manifest, [p[rows] for p in probs]))

    result: dict[str, Any] = {
        "levels": per_level(np.arange(len(labels))),
        "ece_per_level": {
            level: expected_calibration_error(labels[:, i], probs[i])
            for i, level in enumerate(levels)
        },
        "review": review_catch(
            levels, labels, paths[best], chosen_scores(probs, paths, best), review_threshold
        ),
    }
    if photo is not None and photo.any():
        result["with_photo"] = {"levels": per_level(np.flatnonzero(photo))}
    return result


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
