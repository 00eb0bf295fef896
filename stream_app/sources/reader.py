"""Read product files as they are published and turn each row into a product event + labels.

One reader serves ``prodcat publish`` (events) and training (labels, split groups), so both
see the same titles, attributes and photos. Each supported format is a small mapping
function; a row that cannot become a valid event is yielded with ``event=None`` and an
``error`` naming the column, never raised, so one bad row never stops a run.

Formats: the CSV layouts of :mod:`prodcat.sources.formats` and ``jsonl`` — one product
event per line, where ``schema_version``, ``event_id`` and ``occurred_at`` may be left out
(they are filled in) and an optional top-level ``labels`` object (level -> label) is taken
off the event and returned as labels.
"""

from __future__ import annotations

import base64
import csv
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from prodcat.core.events import SCHEMA_VERSION, EventError, now_rfc3339, validate
from prodcat.sources.formats import (
    CSV_FORMATS,
    CsvFormat,
    Fields,
    RowError,
    SourceError,
    csv_format,
    present_labels,
)

EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d0e-4a52-5b8e-9a3c-70726f646361")
MAX_INLINE_IMAGE_BYTES = 4 * 1024 * 1024
IMAGE_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"WEBP", 8, "image/webp"),
]


@dataclass
class SourceRow:
    """One input row: the event it became (or why not), its labels and its split group."""

    line: int  # 1-based line number in the file (CSV header is line 1)
    event: dict[str, Any] | None  # a valid product event, or None if the row can't become one
    labels: dict[str, str]  # taxonomy level name -> label; {} or missing levels when unknown
    group: str | None  # key for grouped splits (same product => same group)
    error: str | None  # why the row was rejected (names the column/field)


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
    spec = csv_format(fmt)
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
    product_id = fields.product_id or f"{fmt}-{line}"
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id_for(fmt, product_id, line),
        "product_id": product_id,
        "occurred_at": now_rfc3339(),
        "title": fields.title,
    }
    optional = {
        "description": fields.description,
        "brand": fields.brand,
        "attributes": fields.attributes,
        "locale": fields.locale,
    }
    event.update({key: value for key, value in optional.items() if value})
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
        return SourceRow(line, None, present_labels(labels), group, f"{exc}")
    return SourceRow(line, obj, present_labels(labels), group, None)
