"""Assembling a format-2 bundle: split graphs, parity, int8, the calibrated cascade.

The steps, in a temporary folder the caller renames into place only when all passed:

1. export a graph per encoder and the head graph, check parity per graph and end to end
   (``prodcat.training.split_export``);
2. write the manifest and load the folder as the worker would (``ModelBundle.load``: the
   components rebuilt from the manifest, fingerprints and hashes checked);
3. with ``quantize``: answer the validation rows, quantise the encoder graphs
   (``prodcat.training.graph_precision``; the image encoders' static int8 calibrated on
   training photos), answer them again and record the accuracy change;
4. calibrate the cascade's thresholds on the validation answers of the graphs that ship
   (``prodcat.training.cascade``) and write the final manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.contract.components import MASK_INPUT, Product
from prodcat.contract.pipeline import Pipeline, input_name
from prodcat.model.bundle import FORMAT, ModelBundle
from prodcat.model.graphs import SplitGraphs
from prodcat.training.build import BuildInputs, Validation
from prodcat.training.cascade import calibrate_cascade, cascade_paths
from prodcat.training.graph_precision import quantize_split
from prodcat.training.paths import FULL, PathProbs, run_paths
from prodcat.training.split_export import export_split, split_parity

CALIBRATION_PHOTOS = 256  # training photos that calibrate a static int8 image encoder
CALIBRATION_BATCH = 16


def build_split(root: Path, manifest: dict[str, Any], inputs: BuildInputs) -> dict[str, Any]:
    """Write the graphs and the manifest into ``root``; returns the manifest."""
    from prodcat.training.bundle_writer import write_manifest

    model, pipeline, batch = inputs.model, inputs.pipeline, inputs.parity_batch
    validation = inputs.validation
    graphs = export_split(model, pipeline, manifest["levels"], batch, root)
    parity = split_parity(model, pipeline, root, graphs, batch)
    training = {**manifest["training"], "parity": parity}
    manifest = {**manifest, "format": FORMAT, "graphs": graphs, "cascade": None}
    manifest["training"] = training
    write_manifest(root, manifest)
    if inputs.quantize:
        before = _answers(root, validation, inputs.threads) if validation else None
        modalities = {e["slug"]: e["modality"] for e in manifest["encoders"]}
        calibration = {
            slug: _calibration_batches(pipeline, slug, inputs.calibration_products)
            for slug, modality in modalities.items()
            if modality == "image"
        }
        sizes = _sizes(root, graphs)
        methods = quantize_split(root, graphs, modalities, calibration)
        write_manifest(root, manifest)
        training["quantization"] = {"methods": methods, "fp32_size_bytes": sizes}
        training["quantization"]["size_bytes"] = _sizes(root, graphs)
    after = _answers(root, validation, inputs.threads) if validation else None
    if validation is not None and after is not None:
        if inputs.quantize and before is not None:
            training["quantization"] |= _change(manifest, before, after, validation.labels)
        manifest["cascade"] = calibrate_cascade(
            manifest, after, validation.labels, inputs.cascade_tolerance
        )
    return write_manifest(root, manifest)


def _answers(root: Path, validation: Validation, threads: int) -> PathProbs:
    """The validation rows answered by the bundle in ``root``, loaded as the worker loads it."""
    bundle = ModelBundle.load(root)
    graphs = SplitGraphs(bundle, "cpu", threads)
    paths = cascade_paths(bundle.manifest["encoders"])
    return run_paths(bundle, graphs, validation.products, paths, threads=threads, desc="validation")


def _calibration_batches(
    pipeline: Pipeline, slug: str, products: Sequence[Product]
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``slug``'s graph inputs from training rows that have its modality."""
    names = [input_name(slug, s.name) for s in pipeline.specs[slug] if s.name != MASK_INPUT]
    mask = input_name(slug, MASK_INPUT)
    taken = 0
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(products), CALIBRATION_BATCH * 4):
            items, _ = pipeline.featurize_many(
                products[start : start + CALIBRATION_BATCH * 4], pool
            )
            kept = [item for item in items if item[mask] > 0][: CALIBRATION_PHOTOS - taken]
            for at in range(0, len(kept), CALIBRATION_BATCH):
                part = kept[at : at + CALIBRATION_BATCH]
                yield {name: np.stack([item[name] for item in part]) for name in names}
            taken += len(kept)
            if taken >= CALIBRATION_PHOTOS:
                return


def _sizes(root: Path, graphs: dict[str, Any]) -> dict[str, int]:
    return {slug: (root / e["file"]).stat().st_size for slug, e in graphs["encoders"].items()}


def _change(
    manifest: dict[str, Any], before: PathProbs, after: PathProbs, labels: np.ndarray
) -> dict[str, Any]:
    """Validation accuracy per level of the full path, float32 graphs against int8."""
    from prodcat.training.evaluate import served_accuracy

    fp32 = served_accuracy(manifest, before[FULL], labels)
    int8 = served_accuracy(manifest, after[FULL], labels)
    return {
        "accuracy_fp32": fp32,
        "accuracy_int8": int8,
        "accuracy_change": [b - a for a, b in zip(fp32, int8, strict=True)],
    }
