"""Training on rows with and without photos, evaluation as shops send products, and
fine-tuning the image encoder's last blocks: real training on small fashion slices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from prodcat.cli.main import cli
from prodcat.contract.manager import get_plugin_manager
from prodcat.model.bundle import ModelBundle
from prodcat.model.graphs import open_graphs
from prodcat.sources import read_source
from prodcat.training.augment import Augmentation
from prodcat.training.datasets import DatasetOptions
from prodcat.training.fusion import FusionModel
from prodcat.training.recipe import TrainSpec, run_training
from prodcat.training.trainer import TrainConfig

pytestmark = pytest.mark.training

LEVELS = {"masterCategory", "subCategory", "articleType"}
VARIANTS = {"full", "poor_titles", "no_title", "no_photo"}


@pytest.fixture(scope="module")
def mixed_bundle(fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """hashgram + frozen EfficientNet-Lite0 on the first 400 rows, most without a photo."""
    root = tmp_path_factory.mktemp("mixed")
    spec = TrainSpec(
        data=fashion,
        out=root / "bundle",
        dataset=DatasetOptions(limit=400, min_class_count=3),
        encoders=[("text.hashgram", {"buckets": 4096}), ("image.efficientnet_lite0", {})],
        train=TrainConfig(epochs=4, batch_size=32, lr=3e-3),
        cache_dir=root / "cache",
    )
    return {"spec": spec, "summary": run_training(spec), "bundle": spec.out}


def test_rows_without_photos_are_trained_on(mixed_bundle: dict[str, Any]) -> None:
    manifest = json.loads((mixed_bundle["bundle"] / "manifest.json").read_text())
    assert manifest["dataset"]["rows"] == 400
    assert not manifest["dataset"]["with_images_only"]
    metrics = json.loads((mixed_bundle["bundle"] / "metrics.json").read_text())
    assert 0 < metrics["n_with_photo"] < metrics["n"]
    training = manifest["training"]
    assert training["config"]["photo_oversample"] == 3
    assert set(training["temperatures"]) == LEVELS
    assert all(0.25 <= t <= 4.0 for t in training["temperatures"].values())
    # classes with no training photo are named, and only those
    title_only = training["title_only_classes"]
    counts = manifest["dataset"]["class_counts"]["articleType"]
    assert set(title_only["articleType"]) <= set(counts)
    cache = mixed_bundle["spec"].cache_dir / "features"
    names = sorted(p.name.split("-")[0] for p in cache.glob("*.npz"))
    assert names == ["image_efficientnet_lite0"]  # hashgram trains: nothing to cache


def test_metrics_have_every_variant_on_all_rows_and_photo_rows(
    mixed_bundle: dict[str, Any],
) -> None:
    metrics = json.loads((mixed_bundle["bundle"] / "metrics.json").read_text())
    assert set(metrics["variants"]) == VARIANTS
    # needs_review is measured at the threshold fitted on the validation split
    fitted = json.loads((mixed_bundle["bundle"] / "manifest.json").read_text())["review"]
    assert 0 < fitted["threshold"] <= 1
    assert fitted["validation"]["errors_flagged"] >= fitted["catch"]
    for variant in metrics["variants"].values():
        for block, n in ((variant, metrics["n"]), (variant["with_photo"], metrics["n_with_photo"])):
            assert set(block["levels"]) == LEVELS
            for m in block["levels"].values():
                assert m["n"] == n and 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert set(variant["ece_per_level"]) == LEVELS
        review = variant["review"]
        assert review["threshold"] == fitted["threshold"] and 0 <= review["flagged"] <= 1
    assert metrics["levels"] == metrics["variants"]["full"]["levels"]
    card = (mixed_bundle["bundle"] / "README.md").read_text()
    assert "poor titles (category words removed)" in card
    assert "Classes learned from titles only" in card
    assert f"`needs_review`: any level's score under {fitted['threshold']}" in card


def test_poor_titles_are_what_the_bundle_is_scored_on(
    mixed_bundle: dict[str, Any], fashion: Path
) -> None:
    """The poor-titles variant runs the served graphs on titles without category words:
    the hashgram ids of a stripped title differ from the full title's."""
    bundle = ModelBundle.load(mixed_bundle["bundle"])
    from prodcat.training.title_variants import CategoryWords, poor_title

    words = CategoryWords.from_classes(bundle.manifest["labels"])
    event = next(r.event for r in read_source(fashion, limit=50) if "Shirt" in r.event["title"])
    full = bundle.featurize(event)
    poor = bundle.featurize(poor_title(event, words))
    assert not np.array_equal(full["text_hashgram__ids"], poor["text_hashgram__ids"])
    graphs = open_graphs(bundle, "cpu", 1)
    probs = graphs.probs(bundle.collate([full, poor]))
    assert not np.allclose(probs[-1][0], probs[-1][1])


def test_evaluate_command_prints_and_writes_the_variants(
    mixed_bundle: dict[str, Any], fashion: Path, tmp_path: Path
) -> None:
    args = ["evaluate", "--model", str(mixed_bundle["bundle"]), "--data", str(fashion)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in VARIANTS:
        assert f"\n{name} " in result.output
    assert "needs_review flags" in result.output
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written["variants"]) == VARIANTS


def test_views_collapse_when_a_row_has_one_modality() -> None:
    """The answer averages fused / title-only / photo-only views over those a row has: a
    row with only a title gets exactly the title-only head's answer."""
    pm = get_plugin_manager()
    encoders = [
        pm.encoder("text.hashgram", {"buckets": 512}),
        pm.encoder("image.efficientnet_lite0"),
    ]
    torch.manual_seed(0)
    views = {"fused": 1.0, "text": 2.0, "image": 1.0}
    averaged = FusionModel(encoders, pm.head("head.mlp"), [3, 5], 0.0, None, views).eval()
    single = FusionModel(encoders, pm.head("head.mlp"), [3, 5], 0.0, None, None).eval()
    single.load_state_dict(averaged.state_dict())
    embeddings = {
        s: torch.randn(4, e.output_dim) for s, e in zip(averaged.slugs, encoders, strict=True)
    }
    text_only = {averaged.slugs[0]: torch.ones(4), averaged.slugs[1]: torch.zeros(4)}
    both = {averaged.slugs[0]: torch.ones(4), averaged.slugs[1]: torch.ones(4)}
    with torch.inference_mode():
        for a, b in zip(
            averaged.fuse(embeddings, text_only), single.fuse(embeddings, text_only), strict=True
        ):
            assert torch.allclose(torch.softmax(a, -1), torch.softmax(b, -1), atol=1e-6)
        mixed = averaged.fuse(embeddings, both)
        fused = single.fuse(embeddings, both)
        assert not torch.allclose(torch.softmax(mixed[1], -1), torch.softmax(fused[1], -1))
        for level in mixed:
            assert torch.allclose(torch.softmax(level, -1).sum(-1), torch.ones(4), atol=1e-5)


def test_augmentation_is_seeded_and_keeps_the_shape() -> None:
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    augment = Augmentation()
    a = augment(pixels, torch.Generator().manual_seed(1))
    b = augment(pixels, torch.Generator().manual_seed(1))
    assert a.shape == pixels.shape and torch.equal(a, b)
    assert not torch.allclose(a, pixels)
    flip_only = Augmentation(flip=1.0, min_crop=1.0, brightness=0, contrast=0, saturation=0)
    assert torch.allclose(flip_only(pixels, torch.Generator()), pixels.flip(-1), atol=1e-6)


def test_image_encoder_fine_tunes_its_last_blocks(fashion: Path, tmp_path: Path) -> None:
    """trainable_blocks: the prefix outputs of augmented copies are cached, the last block
    learns, and the exported encoder graph passes parity."""
    spec = TrainSpec(
        data=fashion,
        out=tmp_path / "bundle",
        dataset=DatasetOptions(with_images_only=True, limit=96, min_class_count=3),
        encoders=[
            ("text.hashgram", {"buckets": 1024}),
            ("image.efficientnet_lite0", {"trainable_blocks": 1}),
        ],
        train=TrainConfig(epochs=2, batch_size=16, augment_copies=2, encoder_lr_scale=1.0),
        cache_dir=tmp_path / "cache",
        evaluate=False,
    )
    run_training(spec)
    (prefix,) = (tmp_path / "cache" / "features").glob("image_efficientnet_lite0-prefix-*.npz")
    with np.load(prefix) as cached:
        assert cached["outputs"].shape[:2] == (2, 96)  # two copies of every photo
        assert cached["outputs"].dtype == np.float16
        assert not np.array_equal(cached["outputs"][0], cached["outputs"][1])
    manifest = json.loads((spec.out / "manifest.json").read_text())
    parity = manifest["training"]["parity"]["graphs"]["image_efficientnet_lite0"]
    assert parity["max_abs_diff"] < 1e-2
    # the shipped encoder is no longer the pretrained one
    bundle = ModelBundle.load(spec.out)
    event = next(r.event for r in read_source(fashion, limit=20) if r.event.get("image"))
    batch = bundle.collate([bundle.featurize(event)])
    shipped = open_graphs(bundle, "cpu", 1)
    pretrained = get_plugin_manager().encoder("image.efficientnet_lite0").build_module().eval()
    pixels = torch.from_numpy(batch["image_efficientnet_lite0__pixels"])
    with torch.inference_mode():
        before = pretrained(pixels).numpy()
    after = shipped.embed_present(batch, ["image_efficientnet_lite0"])[0]
    assert not np.allclose(before, after["image_efficientnet_lite0"], atol=1e-3)
