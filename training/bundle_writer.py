"""Writing model bundles: graphs, manifest, assets; later the metrics and the model card.

The bundle is assembled in a temporary sibling folder and renamed into place only after
the export passed its parity check, so a failed export never leaves a half-written bundle
where a worker could pick it up. The format is documented in ``prodcat.model.bundle``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.contract.components import Head, Product
from prodcat.contract.manifest import manifest_entry
from prodcat.contract.pipeline import Pipeline, assign_slugs
from prodcat.model.bundle import (
    FORMAT_1,
    MANIFEST_FILE,
    MODEL_FILE,
    asset_dir,
    bundle_fingerprint,
    file_sha256,
    graph_entries,
)
from prodcat.training.build import DEFAULT_TOLERANCE, BuildInputs, Validation
from prodcat.training.datasets import LabelSpace
from prodcat.training.export import export_onnx, output_name, parity_check, quantize, run_onnx
from prodcat.training.fusion import FusionModel

METRICS_FILE = "metrics.json"
EVAL_BATCH = 64


def write_bundle(
    out: Path,
    *,
    model: FusionModel,
    pipeline: Pipeline,
    head: Head,
    label_space: LabelSpace,
    dataset: dict[str, Any],
    training: dict[str, Any],
    parity_batch: dict[str, np.ndarray],
    plugin_manager: Any,
    review: dict[str, Any] | None = None,
    validation: Validation | None = None,
    calibration_products: Sequence[Product] = (),
    quantize: bool = False,
    bundle_format: int = 2,
    cascade_tolerance: float = DEFAULT_TOLERANCE,
    threads: int = 2,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``model`` and write the bundle to ``out``; returns the manifest.

    Format 2 (default): a graph per encoder plus a head graph, the cascade calibrated on
    ``validation`` (prodcat.training.split_bundle). Format 1: one graph, for workers of
    prodcat versions that read nothing newer. ``quantize``: int8 graphs, their accuracy
    change measured on ``validation``; format 2 calibrates the image encoders' static int8
    on ``calibration_products`` (training rows). ``review``: the fitted ``needs_review``
    threshold (``prodcat.training.review``).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or overwrite")
    if bundle_format not in (1, 2):
        raise ValueError(f"bundle format must be 1 or 2, got {bundle_format}")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    inputs = BuildInputs(
        model,
        pipeline,
        parity_batch,
        validation,
        calibration_products,
        quantize,
        cascade_tolerance,
        threads,
    )
    try:
        _export_assets(pipeline, tmp)
        base = _manifest(pipeline, head, label_space, dataset, training, plugin_manager)
        if review is not None:
            base["review"] = review
        if bundle_format == 2:
            from prodcat.training.split_bundle import build_split

            manifest = build_split(tmp, base, inputs)
        else:
            manifest = _build_whole(tmp, base, inputs)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _build_whole(tmp: Path, manifest: dict[str, Any], inputs: BuildInputs) -> dict[str, Any]:
    """Format 1: the whole model as one graph."""
    graph = tmp / MODEL_FILE
    model, pipeline, batch = inputs.model, inputs.pipeline, inputs.parity_batch
    export_onnx(model, pipeline, manifest["levels"], batch, graph)
    training = {**manifest["training"], "parity": parity_check(model, pipeline, graph, batch)}
    quantize_graph = inputs.quantize
    if quantize_graph:
        fp32 = tmp / "model.fp32.onnx"
        graph.replace(fp32)
        quantize(fp32, graph)
        validation = inputs.validation
        batches = _batches(pipeline, validation) if validation else []
        training["quantization"] = quantization_change(fp32, graph, batches)
        fp32.unlink()
    manifest = {
        **manifest,
        "format": FORMAT_1,
        "model": {"file": MODEL_FILE, "sha256": file_sha256(graph), "quantized": quantize_graph},
        "training": training,
    }
    return write_manifest(tmp, manifest)


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every graph file, fingerprint the manifest and write it to ``root``."""
    for entry in graph_entries(manifest).values():
        entry["sha256"] = file_sha256(root / entry["file"])
    manifest["fingerprint"] = bundle_fingerprint(manifest)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _batches(
    pipeline: Pipeline, validation: Validation
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(validation.products), EVAL_BATCH):
            chunk = validation.products[start : start + EVAL_BATCH]
            items, _ = pipeline.featurize_many(chunk, pool)
            yield pipeline.collate(items), validation.labels[start : start + EVAL_BATCH]


def quantization_change(
    fp32: Path, int8: Path, batches: Iterable[tuple[dict[str, np.ndarray], np.ndarray]]
) -> dict[str, Any]:
    """Per-level accuracy of both graphs on the same rows, and int8 minus float32."""
    hits: dict[str, list[float]] = {"fp32": [], "int8": []}
    for inputs, labels in batches:
        for key, path in (("fp32", fp32), ("int8", int8)):
            probs = run_onnx(path, inputs)
            hits[key].append(
                np.stack([p.argmax(axis=1) == labels[:, i] for i, p in enumerate(probs)], 1)
            )
    acc = {key: np.concatenate(parts).mean(axis=0) for key, parts in hits.items()}
    return {
        "accuracy_fp32": [float(a) for a in acc["fp32"]],
        "accuracy_int8": [float(a) for a in acc["int8"]],
        "accuracy_change": [float(b - a) for a, b in zip(acc["fp32"], acc["int8"], strict=True)],
        "size_bytes": int8.stat().st_size,
        "fp32_size_bytes": fp32.stat().st_size,
    }


def _manifest(
    pipeline: Pipeline,
    head: Head,
    label_space: LabelSpace,
    dataset: dict[str, Any],
    training: dict[str, Any],
    pm: Any,
) -> dict[str, Any]:
    """What both formats record; each adds its graphs (and format 2 its cascade)."""
    pre_slugs = assign_slugs(p.name for p in pipeline.preprocessors)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "levels": label_space.levels,
        "labels": label_space.classes,
        "taxonomy": {"paths": label_space.paths},
        "preprocessors": [
            {**manifest_entry(pm, "preprocessor", p), "slug": s}
            for p, s in zip(pipeline.preprocessors, pre_slugs, strict=True)
        ],
        "encoders": [
            {**manifest_entry(pm, "encoder", e), "slug": s}
            for e, s in zip(pipeline.encoders, pipeline.slugs, strict=True)
        ],
        "head": manifest_entry(pm, "head", head),
        "inputs": [
            {"name": name, "encoder": slug, "input": spec.name, **_spec(spec)}
            for name, slug, spec in pipeline.inputs()
        ],
        "outputs": [
            {"name": output_name(level), "level": level, "size": size}
            for level, size in zip(label_space.levels, label_space.sizes(), strict=True)
        ],
        "dataset": dataset,
        "training": training,
        "metrics": {},
    }


def _spec(spec: Any) -> dict[str, Any]:
    data = spec.to_json()
    return {"dtype": data["dtype"], "shape": data["shape"]}


def _export_assets(pipeline: Pipeline, root: Path) -> None:
    pre_slugs = assign_slugs(p.name for p in pipeline.preprocessors)
    for kind, components, slugs in (
        ("preprocessor", pipeline.preprocessors, pre_slugs),
        ("encoder", pipeline.encoders, pipeline.slugs),
    ):
        for component, slug in zip(components, slugs, strict=True):
            folder = asset_dir(root, kind, slug)
            folder.mkdir(parents=True, exist_ok=True)
            component.export_assets(folder)
            if not any(folder.iterdir()):
                folder.rmdir()
    assets = root / "assets"
    if assets.is_dir() and not any(assets.iterdir()):
        assets.rmdir()


def record_metrics(bundle: Path, metrics: dict[str, Any]) -> None:
    """Store evaluation results in metrics.json and the manifest (outside the fingerprint)."""
    (bundle / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    manifest_file = bundle / MANIFEST_FILE
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    manifest["metrics"] = metrics
    manifest_file.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
