"""One training run end to end: data, features, training, export, bundle, evaluation.

``prodcat train`` and the tests call :func:`run_training`; every step's choices end up in
the bundle's manifest, so a bundle says exactly how it was made.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.contract.components import Encoder
from prodcat.contract.pipeline import Pipeline
from prodcat.model.bundle import ModelBundle
from prodcat.model.decoding import path_index
from prodcat.training.augment import Augmentation
from prodcat.training.build import DEFAULT_TOLERANCE, Validation
from prodcat.training.bundle_writer import record_metrics, write_bundle
from prodcat.training.datasets import Dataset, DatasetOptions, load_dataset
from prodcat.training.evaluate import evaluate_bundle, load_eval_data
from prodcat.training.feature_cache import FeatureSet, build_features
from prodcat.training.fusion import FusionModel
from prodcat.training.model_card import write_card
from prodcat.training.predict import predict_split
from prodcat.training.review import REVIEW_CATCH, fit_review
from prodcat.training.title_dropout import build_title_dropout
from prodcat.training.trainer import TrainConfig, pick_device, seed_everything, train

log = logging.getLogger(__name__)
ComponentSpec = tuple[str, dict[str, Any]]
DEFAULT_PREPROCESSORS: list[ComponentSpec] = [("text.normalize", {}), ("image.decode", {})]
DEFAULT_ENCODERS: list[ComponentSpec] = [("text.minilm", {}), ("image.efficientnet_lite0", {})]
DEFAULT_HEAD: ComponentSpec = ("head.mlp", {})
PARITY_ROWS = 32


@dataclass
class TrainSpec:
    data: Path
    out: Path
    fmt: str | None = None
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    preprocessors: list[ComponentSpec] = field(default_factory=lambda: list(DEFAULT_PREPROCESSORS))
    encoders: list[ComponentSpec] = field(default_factory=lambda: list(DEFAULT_ENCODERS))
    head: ComponentSpec = DEFAULT_HEAD
    train: TrainConfig = field(default_factory=TrainConfig)
    quantize: bool = False
    bundle_format: int = 2
    cascade_tolerance: float = DEFAULT_TOLERANCE
    review_catch: float = REVIEW_CATCH  # share of wrong validation answers needs_review flags
    cache_dir: Path | None = None
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    evaluate: bool = True
    overwrite: bool = False
    # reviewers' labels by product id (prodcat.kafka.corrections): they win over the file's
    corrections: dict[str, dict[str, str]] = field(default_factory=dict)
    # the data set's recipe (prodcat.training.dataset_recipes) when one was applied
    recipe: dict[str, Any] | None = None


def run_training(spec: TrainSpec, plugin_manager: Any = None) -> dict[str, Any]:
    """Train, export and (optionally) evaluate; returns a summary for the CLI's --json."""
    from prodcat.contract.manager import get_plugin_manager

    pm = plugin_manager or get_plugin_manager()
    spec.dataset.seed = spec.train.seed
    data = load_dataset(spec.data, spec.fmt, spec.dataset, spec.corrections)
    for split in ("train", "val"):
        if not data.splits[split]:
            raise ValueError(
                f"the {split} split is empty ({len(data.records)} rows): use more data"
            )
    encoders = [pm.encoder(n, c) for n, c in spec.encoders]
    pipeline = Pipeline(
        [pm.preprocessor(n, c) for n, c in fit_image_decoding(spec.preprocessors, encoders)],
        encoders,
    )
    head = pm.head(*spec.head)
    seed_everything(spec.train.seed)
    model = FusionModel(
        pipeline.encoders,
        head,
        data.label_space.sizes(),
        spec.train.modality_dropout,
        pipeline.slugs,
        spec.train.view_weights,
    )
    device = pick_device(spec.train.device)
    model.to(device)
    products = [r.product for r in data.records]
    features = build_features(
        pipeline,
        model,
        products,
        data.identity(),
        spec.cache_dir,
        device,
        spec.threads,
        augmentation=(Augmentation(), spec.train.augment_copies),
    )
    titles = build_title_dropout(
        pipeline,
        model,
        products,
        data.label_space.classes,
        data.identity(),
        spec.cache_dir,
        (spec.train.category_word_dropout, spec.train.title_dropout),
        device,
        spec.threads,
    )
    labels = np.asarray([r.labels for r in data.records], dtype=np.int64)
    result = train(
        model,
        head,
        features,
        labels,
        data.splits["train"],
        data.splits["val"],
        data.label_space.levels,
        spec.train,
        titles,
    )
    levels, val_rows = data.label_space.levels, np.asarray(data.splits["val"])
    review = fit_review(
        predict_split(model, features, val_rows, device),
        labels[val_rows],
        path_index(data.label_space.paths, [data.label_space.classes[lv] for lv in levels]),
        spec.review_catch,
    )
    model.cpu()
    training = {
        "config": spec.train.to_json(),
        "device": result.device,
        "best_epoch": result.best_epoch,
        "best_val_score": result.best_score,
        "selection": "mean over levels of validation macro-F1",
        "val_metrics": result.val_metrics,
        "history": result.history,
        "featurize_failures": features.failures,
        "temperatures": dict(
            zip(data.label_space.levels, model.temperatures.tolist(), strict=True)
        ),
        "view_weights": dict(zip(model.view_names, model.view_weights, strict=True)),
        "title_only_classes": title_only_classes(data, features),
    }
    if spec.recipe:
        training["recipe"] = spec.recipe
    val_products = [products[i] for i in data.splits["val"]]
    with ThreadPoolExecutor(spec.threads) as pool:
        items, _ = pipeline.featurize_many(val_products[:PARITY_ROWS], pool)
    manifest = write_bundle(
        spec.out,
        model=model,
        pipeline=pipeline,
        head=head,
        label_space=data.label_space,
        dataset=data.describe(),
        training=training,
        parity_batch=pipeline.collate(items),
        plugin_manager=pm,
        review=review,
        validation=Validation(val_products, labels[data.splits["val"]]),
        calibration_products=[products[i] for i in data.splits["train"]],
        quantize=spec.quantize,
        bundle_format=spec.bundle_format,
        cascade_tolerance=spec.cascade_tolerance,
        threads=spec.threads,
        overwrite=spec.overwrite,
    )
    summary: dict[str, Any] = {
        "bundle": str(spec.out),
        "dataset": _short(data),
        "fingerprint": manifest["fingerprint"],
        "best_epoch": result.best_epoch,
        "val": result.val_metrics,
    }
    if spec.evaluate and data.splits["test"]:
        bundle = ModelBundle.load(spec.out, pm)
        test = load_eval_data(bundle, spec.data, "test", corrections=spec.corrections)
        metrics = evaluate_bundle(bundle, test, spec.out, threads=spec.threads)
        record_metrics(spec.out, metrics)
        write_card(spec.out, metrics)
        keys = ("levels", "variants", "cascade", "ece_per_level", "review", "items_per_s")
        summary["test"] = {k: metrics[k] for k in keys if k in metrics}
    return summary


def title_only_classes(data: Dataset, features: FeatureSet) -> dict[str, list[str]] | None:
    """Per level, the classes no training row with a photo carries: the model learned them
    from titles alone (None: the model reads no photo)."""
    pipeline = features.pipeline
    image = [
        s for s, e in zip(pipeline.slugs, pipeline.encoders, strict=True) if e.modality != "text"
    ]
    if not image:
        return None
    train = np.asarray(data.splits["train"])
    photo = np.any([features.masks[s][train] > 0 for s in image], axis=0)
    space = data.label_space
    seen = [{data.records[i].labels[j] for i in train[photo]} for j in range(len(space.levels))]
    return {
        level: [c for k, c in enumerate(space.classes[level]) if k not in seen[j]]
        for j, level in enumerate(space.levels)
    }


def fit_image_decoding(
    preprocessors: list[ComponentSpec], encoders: list[Encoder]
) -> list[ComponentSpec]:
    """``image.decode`` without a ``draft_size`` decodes at the size the image encoders need.

    The side is the largest ``resize`` among the image encoders (else their largest input
    side); it is recorded in the manifest like any config, so serving decodes the same way.
    An explicit ``draft_size`` (``null``: always decode in full) is kept.
    """
    sides = [
        int(e.config.get("resize") or max(s.shape[-1] for s in e.input_spec() if s.shape))
        for e in encoders
        if e.modality == "image"
    ]
    if not sides:
        return preprocessors
    return [
        (name, {**config, "draft_size": max(sides)})
        if name == "image.decode" and "draft_size" not in config
        else (name, config)
        for name, config in preprocessors
    ]


def _short(data: Dataset) -> dict[str, Any]:
    return {
        "path": str(data.path),
        "format": data.fmt,
        "rows": len(data.records),
        "splits": {k: len(v) for k, v in data.splits.items()},
        "classes": dict(zip(data.label_space.levels, data.label_space.sizes(), strict=True)),
        "corrections": data.report.get("corrections"),
        "options": asdict(data.options),
    }
