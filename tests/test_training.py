"""Training for real on small slices of the shared data sets, export, bundle, evaluation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from prodcat.cli.main import cli
from prodcat.contract.manager import create_plugin_manager
from prodcat.model.bundle import BundleError, ModelBundle, bundle_fingerprint
from prodcat.sources import normalise_title
from prodcat.training.datasets import OTHER, DatasetOptions, load_dataset
from prodcat.training.recipe import TrainSpec, run_training
from prodcat.training.trainer import TrainConfig

pytestmark = pytest.mark.training

FAST_TRAIN = TrainConfig(epochs=4, batch_size=32, patience=4, lr=3e-3)


@pytest.fixture(scope="module")
def photo_bundle(fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """hashgram titles + frozen EfficientNet-Lite0 photos, trained on 160 fashion photos."""
    root = tmp_path_factory.mktemp("photo")
    spec = TrainSpec(
        data=fashion,
        out=root / "bundle",
        dataset=DatasetOptions(with_images_only=True, limit=160, min_class_count=3),
        encoders=[("text.hashgram", {"buckets": 4096}), ("image.efficientnet_lite0", {})],
        train=FAST_TRAIN,
        cache_dir=root / "cache",
    )
    summary = run_training(spec)
    return {"spec": spec, "summary": summary, "bundle": spec.out}


def test_bundle_is_complete_and_parity_checked(photo_bundle: dict[str, Any]) -> None:
    out = photo_bundle["bundle"]
    files = ("head.onnx", "manifest.json", "metrics.json", "README.md", "training.png")
    for name in files:
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(e["file"] for e in manifest["graphs"]["encoders"].values()) == [
        "encoders/image_efficientnet_lite0.onnx",
        "encoders/text_hashgram.onnx",
    ]
    parity = manifest["training"]["parity"]
    assert parity["argmax_agreement"] == 1.0
    assert parity["max_abs_diff"] <= parity["atol"]
    assert set(parity["graphs"]) == {"text_hashgram", "image_efficientnet_lite0", "head"}
    assert [i["name"] for i in manifest["inputs"]] == [
        "text_hashgram__ids",
        "text_hashgram__weights",
        "text_hashgram__mask",
        "image_efficientnet_lite0__pixels",
        "image_efficientnet_lite0__mask",
    ]
    assert manifest["levels"] == ["masterCategory", "subCategory", "articleType"]
    assert manifest["fingerprint"] == bundle_fingerprint(manifest)
    assert manifest["dataset"]["split"]["grouping"] == "normalised title"
    assert {e["distribution"] for e in manifest["encoders"]} == {"prodcat"}


def test_metrics_are_shaped_as_documented(photo_bundle: dict[str, Any]) -> None:
    out = photo_bundle["bundle"]
    metrics = json.loads((out / "metrics.json").read_text())
    test_rows = photo_bundle["summary"]["dataset"]["splits"]["test"]
    variants = metrics["variants"]
    for block in (metrics, variants["poor_titles"], variants["no_photo"], variants["no_title"]):
        assert set(block["levels"]) == {"masterCategory", "subCategory", "articleType"}
        for level in block["levels"].values():
            assert set(level) == {"accuracy", "macro_f1", "weighted_f1", "n"}
            assert level["n"] == test_rows
            assert 0.0 <= level["accuracy"] <= 1.0
    assert 0.0 <= metrics["ece"] <= 1.0
    assert set(metrics["ece_per_level"]) == {"masterCategory", "subCategory", "articleType"}
    assert metrics["items_per_s"] > 0
    for plot in metrics["plots"]:
        assert (out / plot).stat().st_size > 0
    # photos alone must already sort fashion into departments far above chance
    assert metrics["variants"]["no_title"]["levels"]["masterCategory"]["accuracy"] > 0.6


def test_features_of_frozen_encoders_are_cached(photo_bundle: dict[str, Any]) -> None:
    cached = list((photo_bundle["spec"].cache_dir / "features").glob("*.npz"))
    assert [p.name.split("-")[0] for p in cached] == ["image_efficientnet_lite0"]


def test_bundle_serves_with_onnxruntime_alone(photo_bundle: dict[str, Any], fashion: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from prodcat.model.bundle import ModelBundle
        from prodcat.model.graphs import open_graphs
        from prodcat.sources import read_source
        bundle = ModelBundle.load({str(photo_bundle["bundle"])!r})
        rows = [r for r in read_source({str(fashion)!r}, limit=40) if "image" in (r.event or {{}})]
        products = [r.event for r in rows[:3]] + [dict(rows[0].event, image=None, title="")]
        products[-1].pop("image")
        graphs = open_graphs(bundle, "cpu", 1)
        items = bundle.decode(graphs.probs(bundle.collate([bundle.featurize(p) for p in products])))
        assert "torch" not in sys.modules, "serving imported torch"
        print(json.dumps({{"items": items, "paths": bundle.manifest["taxonomy"]["paths"]}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["items"]) == 4
    for item in result["items"]:
        assert [e["label"] for e in item["category_path"]] in result["paths"]


def test_evaluate_command_reads_the_bundle(photo_bundle: dict[str, Any], fashion: Path) -> None:
    out = photo_bundle["bundle"].parent / "eval"
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--model", str(photo_bundle["bundle"]), "--data", str(fashion)]
        + ["--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["data"]["split"] == "test"
    assert metrics["n"] == photo_bundle["summary"]["dataset"]["splits"]["test"]
    assert (out / "metrics.json").is_file()
    assert (out / "confusion_articleType.png").is_file()


def test_bundle_refuses_a_fingerprint_mismatch(
    photo_bundle: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(photo_bundle["bundle"], copy)
    manifest_file = copy / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    # as if the model had been built with another config of the installed encoder
    manifest["encoders"][0]["fingerprint"] = "0123456789abcdef"
    manifest["fingerprint"] = bundle_fingerprint(manifest)
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="fingerprint"):
        ModelBundle.load(copy)
    # hand-editing the manifest without re-fingerprinting is caught too
    manifest["labels"]["masterCategory"][0] = "Renamed"
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="edited"):
        ModelBundle.load(copy)


def test_bundle_refuses_a_missing_plugin(photo_bundle: dict[str, Any]) -> None:
    without_images = create_plugin_manager(
        env={"PRODCAT_DISABLE_PLUGINS": "builtin_image_encoders"}
    )
    with pytest.raises(BundleError, match=r"image\.efficientnet_lite0.*prodcat==0\.1\.0"):
        ModelBundle.load(photo_bundle["bundle"], without_images)


def test_model_with_the_example_plugin_trains_exports_and_quantizes(
    fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODCAT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "attributes"
    args = ["train", "--data", str(fashion), "--all-rows", "--limit", "300", "--epochs", "3"]
    args += ["--encoder", 'text.hashgram:{"buckets": 4096}', "--encoder", "tabular.attributes"]
    args += ["--min-class-count", "3", "--quantize", "--out", str(out), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["test"]["levels"]["masterCategory"]["n"] > 0
    bundle = ModelBundle.load(out)
    tabular = bundle.manifest["encoders"][1]
    assert (tabular["name"], tabular["distribution"]) == (
        "tabular.attributes",
        "prodcat-attributes",
    )
    assert bundle.manifest["training"]["parity"]["argmax_agreement"] == 1.0
    quantization = bundle.manifest["training"]["quantization"]
    assert bundle.precision == "mixed"  # int8 encoders, a float32 head
    assert set(quantization["methods"].values()) == {
        "dynamic int8 per channel (MatMul, Gemm, Gather)"
    }
    assert len(quantization["accuracy_change"]) == len(bundle.levels)
    assert sum(quantization["size_bytes"].values()) < sum(quantization["fp32_size_bytes"].values())


def test_grouped_split_keeps_identical_titles_together(fashion: Path) -> None:
    data = load_dataset(fashion, options=DatasetOptions(limit=4000, seed=7))
    titles = {
        name: {normalise_title(data.records[i].product["title"]) for i in idx}
        for name, idx in data.splits.items()
    }
    shared = Counter(normalise_title(r.product["title"]) for r in data.records)
    assert any(n > 1 for n in shared.values()), "the slice must contain repeated titles"
    assert not titles["train"] & titles["val"]
    assert not titles["train"] & titles["test"]
    assert not titles["val"] & titles["test"]
    again = load_dataset(fashion, options=DatasetOptions(limit=4000, seed=7))
    assert again.splits == data.splits
    other = load_dataset(fashion, options=DatasetOptions(limit=4000, seed=8))
    assert other.splits != data.splits
    counts = data.describe()["split"]["counts"]
    assert 0.7 < counts["train"] / len(data.records) < 0.9


def test_rare_classes_are_merged_or_dropped(fashion: Path) -> None:
    merged = load_dataset(fashion, options=DatasetOptions(limit=600, min_class_count=10))
    rare = merged.report["rare_classes"]["classes"]["articleType"]
    assert rare and all(n < 10 for n in rare.values())
    classes = merged.label_space.classes["articleType"]
    assert OTHER in classes and not set(rare) & set(classes)
    assert merged.report["rare_classes"]["rows_merged"] >= sum(rare.values())

    dropped = load_dataset(
        fashion, options=DatasetOptions(limit=600, min_class_count=10, rare="drop")
    )
    assert dropped.report["rare_classes"]["rows_dropped"] >= sum(rare.values())
    assert len(dropped.records) == 600 - dropped.report["rare_classes"]["rows_dropped"]
    kept = dropped.label_space.classes["articleType"]
    assert OTHER not in kept and not set(rare) & set(kept)


def test_images_only_filter(fashion: Path) -> None:
    data = load_dataset(fashion, options=DatasetOptions(limit=50, with_images_only=True))
    assert all(r.product.get("image") for r in data.records)
    assert data.report["skipped"].get("no_image", 0) > 0


def test_a_padded_sequence_encoder_runs_cut_to_the_longest_title(
    fashion: Path, tmp_path: Path
) -> None:
    """MiniLM's graph takes any sequence length; the parity check proves that a batch cut to
    its longest title embeds exactly as the padded one, and the runner cuts it."""
    from prodcat.model.graphs import SplitGraphs

    spec = TrainSpec(
        data=fashion,
        out=tmp_path / "minilm",
        dataset=DatasetOptions(limit=200, min_class_count=3),
        encoders=[("text.minilm", {})],
        train=FAST_TRAIN,
        cache_dir=tmp_path / "cache",
        evaluate=False,
    )
    run_training(spec)
    bundle = ModelBundle.load(spec.out)
    entry = bundle.manifest["graphs"]["encoders"]["text_minilm"]
    assert entry["sequence_inputs"] == ["text_minilm__input_ids", "text_minilm__attention_mask"]
    check = bundle.manifest["training"]["parity"]["graphs"]["text_minilm"]["trimmed"]
    assert check["max_abs_diff"] <= check["atol"]
    graphs = SplitGraphs(bundle, "cpu", 1)
    batch = bundle.collate([bundle.featurize({"title": t}) for t in ("Red Shirt", "Blue Jeans")])
    feeds = graphs.encoder_feeds("text_minilm", batch)
    assert feeds["text_minilm__input_ids"].shape == (2, 4)  # [CLS] two words [SEP]
