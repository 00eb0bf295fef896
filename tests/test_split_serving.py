"""Bundle format 2 served in the worker's runtime: graphs batched apart, the cascade, the cache.

The bundles are real (hashgram titles + frozen EfficientNet-Lite0 photos trained on the
first 600 fashion photos, tests/bundles.py) and the products are the last fashion rows, which
training never saw. The runtime is the worker's own (``Runtime.classify_product``, the
micro-batchers, ONNX sessions), without Kafka: tests/test_cascade_e2e.py adds the broker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from bundles import photo_bundle

from prodcat.core.settings import Settings
from prodcat.model.bundle import BundleError, ModelBundle, bundle_fingerprint
from prodcat.model.cascade import Cascade
from prodcat.model.decoding import path_index
from prodcat.model.graphs import SplitGraphs
from prodcat.sources import read_source
from prodcat.worker.models import BundleModel, SplitModel
from prodcat.worker.runtime import Runtime, load_model

pytestmark = pytest.mark.training
IMAGE = "image_efficientnet_lite0"
TEXT = "text_hashgram"


@pytest.fixture(scope="module")
def split_bundle(data_dir: Path) -> Path:
    return photo_bundle(data_dir)


@pytest.fixture(scope="module")
def products(data_dir: Path) -> list[dict[str, Any]]:
    """The last 40 fashion rows with a photo, and 10 rows without one."""
    rows = [r.event for r in read_source(data_dir / "fashion" / "catalog.csv") if r.event]
    with_photo = [e for e in rows if e.get("image")][-40:]
    without = [e for e in rows if not e.get("image")][-10:]
    return with_photo + without


def classify(
    bundle: Path, products: list[dict[str, Any]], sequential: bool = False, **worker: Any
) -> tuple[list[dict[str, Any]], Runtime]:
    """Every product through a started runtime; (results in order, the runtime)."""
    settings = Settings()
    settings.worker.max_delay_ms = 5
    for name, value in worker.items():
        setattr(settings.worker, name, value)

    async def main() -> list[dict[str, Any]]:
        runtime = Runtime(settings, load_model(bundle, settings, None), None)
        await runtime.start()
        deadline = asyncio.get_running_loop().time() + 120
        try:
            if sequential:
                return [await runtime.classify_product(dict(p), deadline) for p in products]
            runs = [runtime.classify_product(dict(p), deadline) for p in products]
            return list(await asyncio.gather(*runs))
        finally:
            await runtime.stop()
            outcome["runtime"] = runtime

    outcome: dict[str, Runtime] = {}
    results = asyncio.run(main())
    return results, outcome["runtime"]


def sample(runtime: Runtime, name: str, labels: dict[str, str]) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def test_split_bundle_layout_and_parity(split_bundle: Path) -> None:
    bundle = ModelBundle.load(split_bundle)
    manifest = bundle.manifest
    assert manifest["format"] == "prodcat-bundle/2" and bundle.split
    assert (split_bundle / "head.onnx").is_file() and not (split_bundle / "model.onnx").exists()
    graphs = manifest["graphs"]
    assert set(graphs["encoders"]) == {TEXT, IMAGE}
    for slug, entry in graphs["encoders"].items():
        graph = onnx.load(str(split_bundle / entry["file"]))
        assert [i.name for i in graph.graph.input] == entry["inputs"]
        assert [o.name for o in graph.graph.output] == [f"{slug}__embedding"]
    parity = manifest["training"]["parity"]
    assert set(parity["graphs"]) == {TEXT, IMAGE, "head"}
    assert parity["end_to_end"]["argmax_agreement"] == 1.0
    assert all(g["max_abs_diff"] <= g["atol"] for g in parity["graphs"].values())
    decode = next(p for p in manifest["preprocessors"] if p["name"] == "image.decode")
    assert decode["config"]["draft_size"] == 224  # fitted to the image encoder's input
    cascade = manifest["cascade"]
    assert cascade["first"] == [TEXT] and cascade["thresholds"]
    assert 0 < cascade["validation"]["decided_by_first_stage"] < 1


def test_thresholds_are_part_of_the_fingerprint(split_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(split_bundle, copy)
    file = copy / "manifest.json"
    manifest = json.loads(file.read_text())
    manifest["cascade"]["thresholds"] = dict.fromkeys(manifest["levels"], 0.0)
    file.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="edited"):
        ModelBundle.load(copy)
    manifest["fingerprint"] = bundle_fingerprint(manifest)
    file.write_text(json.dumps(manifest))
    assert ModelBundle.load(copy).fingerprint != ModelBundle.load(split_bundle).fingerprint


def test_the_worker_cascade_decides_as_the_offline_one(
    split_bundle: Path, products: list[dict[str, Any]]
) -> None:
    """Per product, the runtime's decided_by and answer equal the batch cascade's (which is
    what evaluation measures), and photo-less products never reach the image graph."""
    results, runtime = classify(split_bundle, products)
    bundle = ModelBundle.load(split_bundle)
    cascade = Cascade.from_manifest(bundle.manifest)
    assert cascade is not None
    graphs = SplitGraphs(bundle, "cpu", 2)
    batch = bundle.collate([bundle.featurize(dict(p)) for p in products])
    labels = [bundle.manifest["labels"][lv] for lv in bundle.levels]
    taxonomy = path_index(bundle.manifest["taxonomy"]["paths"], labels)
    probs, decided = graphs.cascade_probs(batch, cascade, taxonomy)
    expected = bundle.decode(probs)
    assert [r["decided_by"] for r in results] == ["text" if d else "full" for d in decided]
    for got, want in zip(results, expected, strict=True):
        assert [c["label"] for c in got["category_path"]] == [
            c["label"] for c in want["category_path"]
        ]
        assert got["path_score"] == pytest.approx(want["path_score"], rel=1e-4)
    with_photo, full_with_photo = 40, int(np.sum(~decided[:40]))
    assert 0 < decided.sum() < with_photo, "the test bundle's cascade should split them"
    assert not decided[with_photo:].any(), "no photo: nothing to skip, decided by full"
    image_rows = sample(runtime, "prodcat_batch_size_sum", {"graph": IMAGE})
    assert image_rows == full_with_photo  # only undecided products with a photo
    assert sample(runtime, "prodcat_batch_size_sum", {"graph": TEXT}) == len(products)
    assert sample(runtime, "prodcat_decisions_total", {"decided_by": "text"}) == decided.sum()


def test_a_product_without_a_photo_never_runs_the_image_graph(
    split_bundle: Path, products: list[dict[str, Any]]
) -> None:
    without = products[40:]
    for cascade in ("auto", "off"):
        results, runtime = classify(split_bundle, without, cascade=cascade)
        assert {r["decided_by"] for r in results} == {"full"}
        assert sample(runtime, "prodcat_batch_size_count", {"graph": IMAGE}) == 0
        assert sample(runtime, "prodcat_batch_size_sum", {"graph": TEXT}) == len(without)


def test_cascade_off_always_fuses(split_bundle: Path, products: list[dict[str, Any]]) -> None:
    results, runtime = classify(split_bundle, products, cascade="off")
    assert {r["decided_by"] for r in results} == {"full"}
    bundle = ModelBundle.load(split_bundle)
    batch = bundle.collate([bundle.featurize(dict(p)) for p in products])
    fused = bundle.decode(SplitGraphs(bundle, "cpu", 2).probs(batch))
    served = [[(s["label"], s["score"]) for s in r["category_path"]] for r in results]
    direct = [[(s["label"], s["score"]) for s in f["category_path"]] for f in fused]
    assert [[label for label, _ in path] for path in served] == [
        [label for label, _ in path] for path in direct
    ]
    scores = [score for path in served for _, score in path]
    assert scores == pytest.approx([score for path in direct for _, score in path], rel=1e-4)
    assert sample(runtime, "prodcat_batch_size_sum", {"graph": IMAGE}) == 40


def test_republished_photos_come_from_the_cache(
    split_bundle: Path, products: list[dict[str, Any]]
) -> None:
    photos = products[:8]
    again = photos[4:] + photos[:4]
    twice = photos + [{**p, "title": p["title"] + " (new price)"} for p in again]
    results, runtime = classify(
        split_bundle, twice, sequential=True, cascade="off", image_cache_size=4
    )
    # 8 photos, room for 4 (the last 4 stay): the second round finds those, not the others
    assert sample(runtime, "prodcat_image_cache_lookups_total", {"result": "hit"}) == 4
    assert sample(runtime, "prodcat_image_cache_lookups_total", {"result": "miss"}) == 12
    assert sample(runtime, "prodcat_batch_size_sum", {"graph": IMAGE}) == 12
    for first, second in zip(results[4:8], results[8:12], strict=True):
        assert first["category_path"][0]["label"] == second["category_path"][0]["label"]


def test_a_format_1_bundle_is_still_served(data_dir: Path, products: list[dict[str, Any]]) -> None:
    old = photo_bundle(data_dir, bundle_format=1)
    bundle = ModelBundle.load(old)
    assert not bundle.split and (old / "model.onnx").is_file()
    settings = Settings()
    assert isinstance(load_model(old, settings, None), BundleModel)
    assert isinstance(load_model(photo_bundle(data_dir), settings, None), SplitModel)
    results, runtime = classify(old, products)
    assert {r["decided_by"] for r in results} == {"full"}
    assert sample(runtime, "prodcat_batch_size_sum", {"graph": "model"}) == len(products)
    assert sample(runtime, "prodcat_decisions_total", {"decided_by": "full"}) == len(products)
