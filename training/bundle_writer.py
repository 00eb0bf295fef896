"""Writing model bundles: graph, manifest, assets; later the metrics and the model card.

The bundle is assembled in a temporary sibling folder and renamed into place only after
the export passed its parity check, so a failed export never leaves a half-written bundle
where a worker could pick it up. The format is documented in ``prodcat.model.bundle``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.contract.components import Head
from prodcat.contract.manifest import manifest_entry
from prodcat.contract.pipeline import Pipeline, assign_slugs
from prodcat.model.bundle import (
    FORMAT,
    MANIFEST_FILE,
    MODEL_FILE,
    asset_dir,
    bundle_fingerprint,
    file_sha256,
)
from prodcat.training.datasets import LabelSpace
from prodcat.training.export import export_onnx, output_name, parity_check, quantize, run_onnx
from prodcat.training.fusion import FusionModel

METRICS_FILE = "metrics.json"


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
    quantize_on: Iterable[tuple[dict[str, np.ndarray], np.ndarray]] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``model`` and write the bundle to ``out``; returns the manifest.

    ``quantize_on``: validation batches (inputs, labels) to quantise to int8 and measure
    the accuracy change on; None keeps the float32 graph.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or overwrite")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        graph = tmp / MODEL_FILE
        export_onnx(model, pipeline, label_space.levels, parity_batch, graph)
        training = {**training, "parity": parity_check(model, pipeline, graph, parity_batch)}
        if quantize_on is not None:
            fp32 = tmp / "model.fp32.onnx"
            graph.replace(fp32)
            quantize(fp32, graph)
            training["quantization"] = quantization_change(fp32, graph, quantize_on)
            fp32.unlink()
        manifest = _manifest(
            pipeline, head, label_space, dataset, training, graph, plugin_manager, quantize_on
        )
        _export_assets(pipeline, tmp)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


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
    graph: Path,
    pm: Any,
    quantized: object,
) -> dict[str, Any]:
    pre_slugs = assign_slugs(p.name for p in pipeline.preprocessors)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "file": MODEL_FILE,
            "sha256": file_sha256(graph),
            "quantized": quantized is not None,
        },
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
    manifest["fingerprint"] = bundle_fingerprint(manifest)
    return manifest


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
