"""Reading the shared data sets as they are, and rejecting bad rows with their line and column."""

from __future__ import annotations

import base64
from itertools import islice
from pathlib import Path

import orjson
import pytest

from prodcat.core.events import validate
from prodcat.sources import SourceError, detect_format, read_source, taxonomy_levels


def lines_of(path: Path, count: int) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return list(islice(handle, count))


def test_formats_are_detected_from_the_header(data_dir: Path, tmp_path: Path) -> None:
    assert detect_format(data_dir / "fashion" / "catalog.csv") == "fashion"
    assert detect_format(data_dir / "pricerunner" / "products.csv") == "pricerunner"
    assert detect_format(data_dir / "amazon_uk_toys" / "products.csv") == "amazon_uk_toys"
    (tmp_path / "events.jsonl").write_text("{}\n")
    assert detect_format(tmp_path / "events.jsonl") == "jsonl"
    (tmp_path / "other.csv").write_text("sku,name\n1,x\n")
    with pytest.raises(SourceError, match="cannot tell the format"):
        detect_format(tmp_path / "other.csv")
    with pytest.raises(SourceError, match="no such file"):
        detect_format(tmp_path / "absent.csv")


def test_fashion_row_becomes_an_event_with_its_photo(fashion: Path) -> None:
    row = next(read_source(fashion))
    assert row.line == 2 and row.error is None
    event = row.event
    assert event is not None
    validate("product", event)
    assert event["product_id"] == "15970"
    assert event["title"] == "Turtle Check Men Navy Blue Shirt"
    assert event["attributes"] == {
        "gender": "Men",
        "baseColour": "Navy Blue",
        "season": "Fall",
        "usage": "Casual",
        "year": 2011,
    }
    assert event["image"]["media_type"] == "image/jpeg"
    photo = (fashion.parent / "images" / "15970.jpg").read_bytes()
    assert base64.b64decode(event["image"]["data"]) == photo
    assert row.labels == {
        "masterCategory": "Apparel",
        "subCategory": "Topwear",
        "articleType": "Shirts",
    }
    assert row.group == "turtle check men navy blue shirt"
    assert taxonomy_levels("fashion") == ["masterCategory", "subCategory", "articleType"]


def test_fashion_row_without_photo_and_text_only_reading(fashion: Path) -> None:
    second = list(read_source(fashion, limit=2))[1]
    assert second.event is not None and "image" not in second.event
    first = next(read_source(fashion, inline_images=False))
    assert first.event is not None and "image" not in first.event


def test_comma_quoted_fashion_titles_are_read_whole(fashion: Path) -> None:
    titles = {
        row.event["product_id"]: (row.line, row.event["title"])
        for row in read_source(fashion, inline_images=False, limit=7100)
        if row.event is not None
    }
    assert titles["44065"] == (5741, "Boss Men Perfume, After Shave Balm and Shower Gel Set")
    assert titles["3413"] == (6238, "Myntra Men's Yes, its all about me White T-shirt")
    assert titles["23101"][1] == "Turtle Men Formal Pink Tie, Cufflink and Pocket Square Combo Set"


def test_pricerunner_rows(data_dir: Path) -> None:
    rows = list(read_source(data_dir / "pricerunner" / "products.csv", limit=2))
    assert [row.line for row in rows] == [2, 3]
    assert rows[0].event is not None
    assert rows[0].event["title"] == "apple iphone 8 plus 64gb silver"
    assert rows[1].labels == {"category": "Mobile Phones"}
    assert rows[0].group == rows[1].group == "1"  # same product, two merchants
    assert taxonomy_levels("pricerunner") == ["category"]


def test_amazon_rows_labelled_unlabelled_and_deep(data_dir: Path) -> None:
    rows = {
        row.event["product_id"]: row
        for row in read_source(data_dir / "amazon_uk_toys" / "products.csv")
        if row.event is not None
    }
    assert len(rows) == 10_000
    first = rows["eac7efa5dbd3d667f26eb3d3ab504464"]
    assert first.event["brand"] == "Hornby"
    assert first.event["title"] == "Hornby 2014 Catalogue"
    assert first.labels == {
        "level1": "Hobbies",
        "level2": "Model Trains & Railway Sets",
        "level3": "Rail Vehicles",
        "level4": "Trains",
    }
    assert rows["1e9876e6f7e98a6bb869341b4b56efd5"].labels == {}  # no category in the file
    deep = rows["8089eb2ba20a4abafd72b436aae83cae"].labels  # a 5-part path keeps 4 levels
    assert list(deep) == taxonomy_levels("amazon_uk_toys")
    assert deep["level4"] == "Landscaping"


def test_malformed_and_invalid_csv_rows_are_reported_not_raised(
    fashion: Path, tmp_path: Path
) -> None:
    header, good, second = lines_of(fashion, 3)
    bad = tmp_path / "catalog.csv"
    bad.write_bytes(
        (header + good + "123,Men,Apparel\n").encode()
        + b"124,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Bad \xff byte,\n"
        + f"125,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,{'x' * 1001},\n".encode()
        + second.encode()
    )
    rows = list(read_source(bad))
    assert [row.line for row in rows] == [2, 3, 4, 5, 6]
    assert "images/15970.jpg" in (rows[0].error or "")  # the photo is not next to this copy
    assert rows[1].error == "expected 11 columns, found 3"
    assert rows[2].error == "not valid UTF-8 text"
    assert "column 'productDisplayName' ($.title)" in (rows[3].error or "")
    assert rows[4].event is not None and rows[4].event["product_id"] == "39386"
    assert all(row.event is None for row in rows[:4])


def test_event_ids_are_deterministic_per_row(data_dir: Path) -> None:
    path = data_dir / "pricerunner" / "products.csv"
    first = [row.event["event_id"] for row in read_source(path, limit=3) if row.event]
    again = [row.event["event_id"] for row in read_source(path, limit=3) if row.event]
    assert first == again and len(set(first)) == 3


def test_jsonl_events_with_labels_defaults_and_errors(tmp_path: Path) -> None:
    lines = [
        {"product_id": "a1", "title": "Red shirt", "labels": {"category": "Shirts"}},
        {"product_id": "a2", "title": 5},
        {
            "schema_version": 1,
            "event_id": "e-1",
            "product_id": "a3",
            "occurred_at": "2026-11-28T10:00:00Z",
            "title": "Blue mug",
        },
    ]
    text = "\n".join(orjson.dumps(line).decode() for line in lines)
    path = tmp_path / "events.jsonl"
    path.write_text(text.replace("\n", "\n\n{oops\n", 1) + "\n")
    rows = list(read_source(path))
    assert [row.line for row in rows] == [1, 3, 4, 5]
    first, broken, invalid, full = rows
    assert first.event is not None and "labels" not in first.event
    validate("product", first.event)
    assert first.labels == {"category": "Shirts"} and first.group == "a1"
    assert broken.event is None and "not valid JSON" in (broken.error or "")
    assert invalid.event is None and (invalid.error or "").startswith("$.title:")
    assert full.event == lines[2] and full.labels == {}
    assert next(read_source(path)).event["event_id"] == first.event["event_id"]
