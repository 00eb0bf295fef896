"""Item 6, the image path step by step: decoding, the image graph in int8, the cache.

Each step is measured on its own, before and after, on the bench's products:

* **decode**: the bench's photos enlarged 8x (to shop size, about 3 megapixels; made in
  memory, never stored) decoded and turned into the encoder's input with a full decode and
  with ``image.decode``'s ``draft_size`` (JPEG draft mode); ms and CPU ms per photo, and the
  difference in the encoder's input;
* **int8**: the bundle's image encoder graph against a static int8 copy (QDQ, per channel,
  calibrated on other bench photos), at the batcher's max batch size: items/s, CPU ms per
  item, cosine of the embeddings; the accuracy change is what ``prodcat train --quantize``
  measures on the validation split;
* **cache**: the worker's runtime (no Kafka) classifying every product twice, the second
  time as a republished product, with ``cascade = "off"``, without and with the image
  embedding cache: products/s and hit ratio.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.progress import Progress

from bench.data import Product
from prodcat.contract.components import IMAGE_KEY, MASK_INPUT
from prodcat.contract.pipeline import input_name
from prodcat.core.settings import Settings
from prodcat.model.bundle import ModelBundle
from prodcat.model.inference import create_session
from prodcat.plugins.preprocessors import DecodeImage

ENLARGE = 8
PHOTOS = 16
RUNS = 3  # timed batches per graph


def measure(
    bundle: ModelBundle, products: list[Product], settings: Settings, plan: Any, progress: Progress
) -> dict[str, Any]:
    task = progress.add_task("6 image path", total=3)
    images = [slug for slug, _ in _image_encoders(bundle)]
    out: dict[str, Any] = {"decode": _decode(bundle, products)}
    progress.advance(task)
    if images:
        out["int8"] = _int8(bundle, images[0], products, settings, plan.providers)
    progress.advance(task)
    out["cache"] = _cache(bundle, products[: plan.products // 4 or 8], settings)
    progress.advance(task)
    return out


def _image_encoders(bundle: ModelBundle) -> list[tuple[str, Any]]:
    return [
        (slug, encoder)
        for slug, encoder in zip(bundle.pipeline.slugs, bundle.pipeline.encoders, strict=True)
        if encoder.modality == "image"
    ]


def _decode(bundle: ModelBundle, products: list[Product]) -> dict[str, Any]:
    """Full decode against draft mode on enlarged photos, through the image encoder's input."""
    decoder = next(p for p in bundle.pipeline.preprocessors if isinstance(p, DecodeImage))
    full = DecodeImage({**decoder.config, "draft_size": None})
    encoders = _image_encoders(bundle)
    photos = [_photo_bytes(p) for p in products[:PHOTOS]]
    large = [_enlarged(data) for data in photos]

    def inputs(decode: DecodeImage, data: bytes) -> np.ndarray:
        product = {IMAGE_KEY: decode.decode(data)}
        return encoders[0][1].featurize(product)["pixels"] if encoders else np.zeros(1)

    figures: dict[str, Any] = {"draft_size": decoder.config.get("draft_size")}
    for name, data in (("original", photos), ("enlarged", large)):
        for variant, decode in (("full", full), ("draft", decoder)):
            ms, cpu = _timed(lambda d=decode, photos=data: [inputs(d, x) for x in photos])
            figures[f"{name}_{variant}_ms"] = ms / len(data)
            figures[f"{name}_{variant}_cpu_ms"] = cpu / len(data)
    diffs = [float(np.max(np.abs(inputs(full, x) - inputs(decoder, x)))) for x in large]
    mean_diffs = [float(np.mean(np.abs(inputs(full, x) - inputs(decoder, x)))) for x in large]
    side = Image.open(io.BytesIO(large[0])).size
    figures |= {"enlarged_size": list(side), "photos": len(large)}
    figures |= {"max_input_diff": max(diffs), "mean_input_diff": float(np.mean(mean_diffs))}
    return figures


def _int8(
    bundle: ModelBundle, slug: str, products: list[Product], settings: Settings, providers: str
) -> dict[str, Any]:
    """The image graph as shipped against a static int8 copy, on the same photos."""
    from prodcat.training.graph_precision import quantize_static

    size = settings.worker.max_batch_size
    graph = bundle.graph_path(slug)
    names = list(bundle.manifest["graphs"]["encoders"][slug]["inputs"])
    rows = [bundle.featurize(p) for p in products]
    rows = [r for r in rows if r[input_name(slug, MASK_INPUT)] > 0]
    calibration, timed = rows[: len(rows) // 2], rows[len(rows) // 2 :] or rows
    batch = {n: np.stack([timed[i % len(timed)][n] for i in range(size)]) for n in names}
    shipped = bundle.manifest["graphs"]["encoders"][slug].get("precision", "fp32")
    result: dict[str, Any] = {"graph": slug, "batch_size": size, "shipped": shipped}
    with tempfile.TemporaryDirectory(prefix="prodcat-bench-") as tmp:
        copy = Path(tmp) / "int8.onnx"
        shutil.copyfile(graph, copy)
        if shipped == "fp32":
            chunks = [calibration[i : i + 16] for i in range(0, len(calibration), 16)]
            quantize_static(copy, ({n: np.stack([r[n] for r in c]) for n in names} for c in chunks))
        embeddings = {}
        for precision, path in (("fp32", graph), ("int8", copy)):
            session = create_session(path, providers, settings.worker.ort_threads)
            session.run(batch)  # first run: allocations, not measured
            ms, cpu = _timed(lambda s=session: [s.run(batch) for _ in range(RUNS)])
            embeddings[precision] = next(iter(session.run(batch).values()))
            result[precision] = {
                "items_per_s": size * RUNS / (ms / 1000),
                "cpu_ms_per_item": cpu / (size * RUNS),
            }
    a, b = embeddings["fp32"], embeddings["int8"]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    result["cosine_mean"], result["cosine_min"] = float(cosine.mean()), float(cosine.min())
    result["size_bytes"] = {"fp32": graph.stat().st_size}
    return result


def _cache(bundle: ModelBundle, products: list[Product], settings: Settings) -> dict[str, Any]:
    """Every product twice (the second time republished) through the worker's runtime."""
    from prodcat.worker.runtime import Runtime, load_model

    twice = products + [{**p, "event_id": f"{p.get('event_id')}-again"} for p in products]
    out: dict[str, Any] = {"products": len(twice)}
    for name, size in (("off", 0), ("on", len(products))):
        worker = dataclasses.replace(settings.worker, cascade="off", image_cache_size=size)
        run = dataclasses.replace(settings, worker=worker)
        runtime = Runtime(run, load_model(bundle.path, run, None), None)

        async def classify_all(runtime: Runtime = runtime) -> None:
            await runtime.start()
            deadline = asyncio.get_running_loop().time() + 600
            for half in (twice[: len(products)], twice[len(products) :]):
                await asyncio.gather(*(runtime.classify_product(dict(p), deadline) for p in half))
            await runtime.stop()

        ms, cpu = _timed(lambda: asyncio.run(classify_all()))
        registry = runtime.metrics.registry
        hits = registry.get_sample_value("prodcat_image_cache_lookups_total", {"result": "hit"})
        misses = registry.get_sample_value("prodcat_image_cache_lookups_total", {"result": "miss"})
        looked = (hits or 0) + (misses or 0)
        out[name] = {
            "items_per_s": len(twice) / (ms / 1000),
            "cpu_ms_per_item": cpu / len(twice),
            "hit_ratio": (hits or 0) / looked if looked else None,
        }
    return out


def _photo_bytes(product: Product) -> bytes:
    return base64.b64decode(product["image"]["data"])


def _enlarged(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        w, h = image.size
        large = image.convert("RGB").resize((w * ENLARGE, h * ENLARGE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    large.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall ms, CPU ms of this process) of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000
