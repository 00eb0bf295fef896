"""The CSV layouts prodcat reads as published: columns, taxonomy levels, row mapping.

Each data set is one :class:`CsvFormat`, recognised by its header and mapped to product
event fields by a small function; adding a catalogue means adding one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SourceError(ValueError):
    """The file as a whole cannot be read (missing, unknown format); the message says why."""


@dataclass
class Fields:
    """What a format's mapping extracts from one CSV row."""

    product_id: str  # "" for layouts without an id column: the reader numbers the row
    title: str
    labels: dict[str, str]
    group: str | None
    brand: str | None = None
    attributes: dict[str, Any] | None = None
    image_path: str | None = None
    description: str | None = None
    locale: str | None = None  # BCP 47 tag of the catalogue's language


class RowError(ValueError):
    """A row-level problem, raised by mapping functions and caught by the reader."""


@dataclass(frozen=True)
class CsvFormat:
    """A CSV layout: the columns that identify it, its taxonomy levels and its row mapping."""

    required: tuple[str, ...]
    levels: tuple[str, ...]
    columns: dict[str, str]  # event field -> source column, to name the column in errors
    mapping: Callable[[dict[str, str]], Fields]


def normalise_title(title: str) -> str:
    """Lower-case, single-spaced title: the grouping key for near-identical products."""
    return " ".join(title.lower().split())


def _fashion(row: dict[str, str]) -> Fields:
    attributes: dict[str, Any] = {
        name: row[name] for name in ("gender", "baseColour", "season", "usage") if row[name]
    }
    if row["year"]:
        attributes["year"] = int(row["year"]) if row["year"].isdigit() else row["year"]
    return Fields(
        product_id=row["id"],
        title=row["productDisplayName"],
        labels=present_labels(
            {lvl: row[lvl] for lvl in ("masterCategory", "subCategory", "articleType")}
        ),
        group=normalise_title(row["productDisplayName"]),
        attributes=attributes,
        image_path=row["image"] or None,
    )


def _pricerunner(row: dict[str, str]) -> Fields:
    return Fields(
        product_id=row["product_id"],
        title=row["product_title"],
        labels=present_labels({"category": row["category_label"]}),
        group=row["cluster_id"] or None,
    )


AMAZON_LEVELS = ("level1", "level2", "level3", "level4")


def _amazon_uk_toys(row: dict[str, str]) -> Fields:
    # Paths have up to 5 parts (85 rows); the taxonomy keeps the first 4 levels.
    parts = [part.strip() for part in row["amazon_category_and_sub_category"].split(">")]
    return Fields(
        product_id=row["uniq_id"],
        title=row["product_name"],
        labels=present_labels(dict(zip(AMAZON_LEVELS, parts, strict=False))),
        group=normalise_title(row["product_name"]),
        brand=row["manufacturer"] or None,
    )


def _lianshang_zh(row: dict[str, str]) -> Fields:
    return Fields(
        product_id="",
        title=row["eq"],
        labels=present_labels({"category": row["label"]}),
        group=normalise_title(row["eq"]),
        locale="zh-CN",
    )


CDISCOUNT_LEVELS = ("Categorie1", "Categorie2", "Categorie3")
CDISCOUNT_NO_BRAND = "AUCUNE"


def _cdiscount_fr(row: dict[str, str]) -> Fields:
    brand = row["Marque"].strip()
    return Fields(
        product_id="",
        title=row["Libelle"],
        labels=present_labels({level: row[level] for level in CDISCOUNT_LEVELS}),
        group=normalise_title(row["Libelle"]),
        brand=brand if brand and brand != CDISCOUNT_NO_BRAND else None,
        description=row["Description"].strip() or None,
        locale="fr-FR",
    )


def present_labels(labels: dict[str, str]) -> dict[str, str]:
    return {level: label.strip() for level, label in labels.items() if label.strip()}


CSV_FORMATS: dict[str, CsvFormat] = {
    "fashion": CsvFormat(
        required=(
            "id",
            "productDisplayName",
            "masterCategory",
            "subCategory",
            "articleType",
            "gender",
            "baseColour",
            "season",
            "year",
            "usage",
            "image",
        ),
        levels=("masterCategory", "subCategory", "articleType"),
        columns={
            "product_id": "id",
            "title": "productDisplayName",
            "image": "image",
            "attributes": "gender/baseColour/season/usage/year",
        },
        mapping=_fashion,
    ),
    "pricerunner": CsvFormat(
        required=("product_id", "product_title", "cluster_id", "category_label"),
        levels=("category",),
        columns={"product_id": "product_id", "title": "product_title"},
        mapping=_pricerunner,
    ),
    "amazon_uk_toys": CsvFormat(
        required=("uniq_id", "product_name", "amazon_category_and_sub_category", "manufacturer"),
        levels=AMAZON_LEVELS,
        columns={"product_id": "uniq_id", "title": "product_name", "brand": "manufacturer"},
        mapping=_amazon_uk_toys,
    ),
    "lianshang_zh": CsvFormat(
        required=("eq", "label"),
        levels=("category",),
        columns={"title": "eq"},
        mapping=_lianshang_zh,
    ),
    "cdiscount_fr": CsvFormat(
        required=("Libelle", "Description", "Marque", *CDISCOUNT_LEVELS),
        levels=CDISCOUNT_LEVELS,
        columns={"title": "Libelle", "description": "Description", "brand": "Marque"},
        mapping=_cdiscount_fr,
    ),
}
FORMATS = (*CSV_FORMATS, "jsonl")


def taxonomy_levels(fmt: str) -> list[str]:
    """Taxonomy level names of a format, top first; ``[]`` for jsonl (levels come per row)."""
    if fmt == "jsonl":
        return []
    return list(csv_format(fmt).levels)


def csv_format(fmt: str) -> CsvFormat:
    if fmt not in CSV_FORMATS:
        raise SourceError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return CSV_FORMATS[fmt]
