"""Read product files as they are published and turn each row into a product event + labels.

One reader serves ``prodcat publish`` (events) and training (labels, split groups), so both
see the same titles, attributes and photos. Each supported format is a small mapping
function; a row that cannot become a valid event is yielded with ``event=None`` and an
``error`` naming the column, never raised, so one bad row never stops a run.

Formats: ``fashion`` (fashion/catalog.csv), ``pricerunner`` and ``amazon_uk_toys``
(products.csv) and ``jsonl`` — one product event per line, where ``schema_version``,
``event_id`` and ``occurred_at`` may be left out (they are filled in) and an optional
top-level ``labels`` object (level -> label) is taken off the event and returned as labels.
"""

from __future__ import annotations

import base64
import csv
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from stream_app.events import SCHEMA_VERSION, EventError, now_rfc3339, validate

EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d0e-4a52-5b8e-9a3c-70726f646361")
MAX_INLINE_IMAGE_BYTES = 4 * 1024 * 1024
IMAGE_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"WEBP", 8, "image/webp"),
]


class SourceError(ValueError):
    """The file as a whole cannot be read (missing, unknown format); the message says why."""


@dataclass
class SourceRow:
    """One input row: the event it became (or why not), its labels and its split group."""

    line: int  # 1-based line number in the file (CSV header is line 1)
    event: dict[str, Any] | None  # a valid product event, or None if the row can't become one
    labels: dict[str, str]  # taxonomy level name -> label; {} or missing levels when unknown
    group: str | None  # key for grouped splits (same product => same group)
    error: str | None  # why the row was rejected (names the column/field)


@dataclass
class Fields:
    """What a format's mapping extracts from one CSV row."""

    product_id: str
    title: str
    labels: dict[str, str]
    group: str | None
    brand: str | None = None
    attributes: dict[str, Any] | None = None
    image_path: str | None = None


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
        labels=_present(
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
        labels=_present({"category": row["category_label"]}),
        group=row["cluster_id"] or None,
    )


AMAZON_LEVELS = ("level1", "level2", "level3", "level4")


def _amazon_uk_toys(row: dict[str, str]) -> Fields:
    # Paths have up to 5 parts (85 rows); the taxonomy keeps the first 4 levels.
    parts = [part.strip() for part in row["amazon_category_and_sub_category"].split(">")]
    return Fields(
        product_id=row["uniq_id"],
        title=row["product_name"],
        labels=_present(dict(zip(AMAZON_LEVELS, parts, strict=False))),
        group=normalise_title(row["product_name"]),
        brand=row["manufacturer"] or None,
    )


def _present(labels: dict[str, str]) -> dict[str, str]:
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
}
FORMATS = (*CSV_FORMATS, "jsonl")


def taxonomy_levels(fmt: str) -> list[str]:
    """Taxonomy level names of a format, top first; ``[]`` for jsonl (levels come per row)."""
    if fmt == "jsonl":
        return []
    return list(_csv_format(fmt).levels)


def _csv_format(fmt: str) -> CsvFormat:
    if fmt not in CSV_FORMATS:
        raise SourceError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return CSV_FORMATS[fmt]


def detect_format(path: str | Path) -> str:
    """The format of a file: jsonl by extension, CSV layouts by their header columns."""
    path = _existing(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = set(next(csv.reader(handle), []))
    for name, spec in CSV_FORMATS.items():
        if set(spec.required) <= header:
            return name
    raise SourceError(
        f"{path}: cannot tell the format from its header {sorted(header)}; expected the "
        f"columns of one of {', '.join(CSV_FORMATS)}, or a .jsonl file (or pass --format)"
    )


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return path


def read_source(
    path: str | Path,
    fmt: str | None = None,
    *,
    inline_images: bool = True,
    limit: int | None = None,
) -> Iterator[SourceRow]:
    """Yield one :class:`SourceRow` per data row (at most ``limit``), in file order.

    With ``inline_images=False`` the photo files are not read and events carry no image
    (fast, for text-only work).
    """
    path = _existing(path)
    fmt = fmt or detect_format(path)
    rows = _read_jsonl(path) if fmt == "jsonl" else _read_csv(path, fmt, inline_images)
    return islice(rows, limit)


def _read_csv(path: Path, fmt: str, inline_images: bool) -> Iterator[SourceRow]:
    spec = _csv_format(fmt)
    # surrogateescape: an undecodable byte rejects its row instead of aborting the file
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [column for column in spec.required if column not in header]
        if missing:
            raise SourceError(f"{path}: not a {fmt} file, missing columns {missing}")
        csv.field_size_limit(sys.maxsize)
        while True:
            line = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield SourceRow(line, None, {}, None, f"malformed CSV: {exc}")
                continue
            if values:
                yield _csv_row(path, fmt, spec, header, values, line, inline_images)


def _csv_row(
    path: Path,
    fmt: str,
    spec: CsvFormat,
    header: list[str],
    values: list[str],
    line: int,
    inline_images: bool,
) -> SourceRow:
    if len(values) != len(header):
        error = f"expected {len(header)} columns, found {len(values)}"
        return SourceRow(line, None, {}, None, error)
    row = dict(zip(header, values, strict=True))
    if any(_has_bad_bytes(value) for value in values):
        return SourceRow(line, None, {}, None, "not valid UTF-8 text")
    fields = spec.mapping(row)
    try:
        event = _event_from_fields(fields, fmt, line)
        if fields.image_path and inline_images:
            event["image"] = _inline_image(path.parent / fields.image_path)
        validate("product", event)
    except RowError as exc:
        return SourceRow(line, None, fields.labels, fields.group, f"{exc}")
    except EventError as exc:
        column = spec.columns.get(exc.path.removeprefix("$.").split(".")[0].split("[")[0])
        where = f"column {column!r} ({exc.path})" if column else exc.path
        error = f"{where} {exc.reason}"
        return SourceRow(line, None, fields.labels, fields.group, error)
    return SourceRow(line, event, fields.labels, fields.group, None)


def _has_bad_bytes(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)


def _event_from_fields(fields: Fields, fmt: str, line: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id_for(fmt, fields.product_id, line),
        "product_id": fields.product_id,
        "occurred_at": now_rfc3339(),
        "title": fields.title,
    }
    if fields.brand:
        event["brand"] = fields.brand
    if fields.attributes:
        event["attributes"] = fields.attributes
    return event


def event_id_for(fmt: str, product_id: str, line: int) -> str:
    """Deterministic event id of a file row: re-publishing a file re-sends the same ids."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{fmt}:{product_id}:{line}"))


def _inline_image(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RowError(f"column 'image': cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_INLINE_IMAGE_BYTES:
        raise RowError(f"column 'image': {path} is {len(data):,} bytes, over the 4 MiB limit")
    return {"data": base64.b64encode(data).decode("ascii"), "media_type": media_type(data, path)}


def media_type(data: bytes, path: Path) -> str:
    """The image's media type from its first bytes (JPEG, PNG or WebP)."""
    for magic, offset, name in IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    raise RowError(f"column 'image': {path} is not a JPEG, PNG or WebP image")


def _read_jsonl(path: Path) -> Iterator[SourceRow]:
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if raw.strip():
                yield _jsonl_row(raw, line, path.name)


def _jsonl_row(raw: bytes, line: int, file_name: str) -> SourceRow:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return SourceRow(line, None, {}, None, f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return SourceRow(line, None, {}, None, "expected a JSON object")
    labels = obj.pop("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        return SourceRow(line, None, {}, None, "$.labels must map level -> label")
    group = str(obj["product_id"]) if "product_id" in obj else None
    obj.setdefault("schema_version", SCHEMA_VERSION)
    obj.setdefault(
        "event_id", event_id_for(f"jsonl:{file_name}", str(obj.get("product_id", "")), line)
    )
    obj.setdefault("occurred_at", now_rfc3339())
    try:
        validate("product", obj)
    except EventError as exc:
        return SourceRow(line, None, _present(labels), group, f"{exc}")
    return SourceRow(line, obj, _present(labels), group, None)
