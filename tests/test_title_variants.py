"""Poor titles on the real fashion catalogue: category words go, brand/gender/colour stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodcat.sources import read_source
from prodcat.training.title_variants import (
    KEEP,
    CategoryWords,
    forms,
    no_photo,
    no_title,
    poor_title,
    word_key,
)

LEVELS = ("masterCategory", "subCategory", "articleType")


@pytest.fixture(scope="module")
def rows(data_dir: Path) -> list:
    return [r for r in read_source(data_dir / "fashion" / "catalog.csv") if r.event]


@pytest.fixture(scope="module")
def words(rows: list) -> CategoryWords:
    classes = {
        level: sorted({r.labels[level] for r in rows if r.labels.get(level)}) for level in LEVELS
    }
    return CategoryWords.from_classes(classes)


def _row(rows: list, title: str):
    return next(r for r in rows if r.event["title"] == title)


def test_real_titles_lose_the_category_and_keep_brand_gender_colour(
    rows: list, words: CategoryWords
) -> None:
    cases = {
        "Puma Men Grey Polo T-shirt": "Puma Men Grey Polo",
        "Nike Men Air Relentless 2 MSL White Sports Shoes": "Nike Men Air Relentless 2 MSL White",
        "Q&Q Men Gents ANALOG Black Watches": "Q&Q Men Gents ANALOG Black",
        "Belmonte Men Printed Cream Tshirts": "Belmonte Men Printed Cream",
        "Rocia Women Gold Handbag": "Rocia Women Gold",
    }
    for title, expected in cases.items():
        assert poor_title(_row(rows, title).event, words)["title"] == expected


def test_no_poor_title_names_its_article_type(rows: list, words: CategoryWords) -> None:
    """On every catalogue row, no word of the row's own article type survives."""
    named = 0
    for row in rows:
        keys = {word_key(w) for w in row.labels["articleType"].split()} - KEEP
        article = set().union(*(forms(k) for k in keys)) - KEEP
        title = {word_key(w) for w in row.event["title"].split()}
        poor = {word_key(w) for w in poor_title(row.event, words)["title"].split()}
        named += bool(article & title)
        assert not article & poor, row.event["title"]
    assert named > len(rows) / 2  # the catalogue's titles do name the article type


def test_plurals_and_synonyms_are_category_words(words: CategoryWords) -> None:
    for token in ("tee", "Tees", "T-Shirts", "tshirt", "Sneakers", "shoe", "Accessory", "dress"):
        assert word_key(token) in words.words, token
    for token in ("Puma", "Men", "Women's", "Black", "Navy", "Blue", "Cream", "Nike", "Solid"):
        assert word_key(token) not in words.words, token


def test_variants_take_away_only_their_part(rows: list, words: CategoryWords) -> None:
    event = next(r.event for r in rows if r.event.get("image"))
    assert "title" not in no_title(event) and no_title(event)["image"] == event["image"]
    assert "image" not in no_photo(event) and no_photo(event)["title"] == event["title"]
    poor = poor_title(event, words)
    assert {k: v for k, v in poor.items() if k != "title"} == {
        k: v for k, v in event.items() if k != "title"
    }


def test_the_transform_is_fingerprinted_by_its_words() -> None:
    """Cached poor-title features are keyed by this: another taxonomy, another key."""
    shoes = CategoryWords.from_classes({"type": ["Shoes"]})
    bags = CategoryWords.from_classes({"type": ["Bags"]})
    assert shoes.describe() != bags.describe()
    assert shoes.describe() == CategoryWords.from_classes({"level": ["Shoes"]}).describe()
    assert shoes.remove_from("Puma Men Black Shoes") == "Puma Men Black"
    assert bags.remove_from("Puma Men Black Shoes") == "Puma Men Black"  # shoe is a synonym
