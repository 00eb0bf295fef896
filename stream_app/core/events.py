"""Encode, decode and validate prodcat's messages against the JSON Schemas in ``schemas/``.

The schemas are the contract with shops and downstream services, so the runtime validates
with exactly those files (compiled once by fastjsonschema) instead of a hand-written copy.
A rejected event raises :class:`EventError` naming the stage, the JSON path of the offending
field and the reason, which the worker puts into the dead letter as is.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from importlib.abc import Traversable
from typing import Any, Literal

import fastjsonschema
import orjson

Kind = Literal["product", "assignment", "dead_letter", "correction"]

SCHEMA_FILES: dict[str, str] = {
    "product": "product-event.schema.json",
    "assignment": "category-assignment.schema.json",
    "dead_letter": "dead-letter.schema.json",
    "correction": "category-correction.schema.json",
}
SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
MAX_ERROR_MESSAGE = 2000
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024


class EventError(ValueError):
    """A message that is not a valid prodcat event.

    ``stage`` is ``"decode"`` (not UTF-8 JSON, or too large) or ``"schema"`` (valid JSON that
    breaks the schema); ``path`` is the JSON path of the offending field (``$`` for the whole
    message) and ``reason`` says what is wrong with it.
    """

    def __init__(self, stage: str, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.stage = stage
        self.path = path
        self.reason = reason


def schema_dir() -> Traversable:
    """The JSON Schemas: package data of ``prodcat.schemas`` (the ``schemas/`` folder)."""
    return resources.files("prodcat.schemas")


def load_schema(kind: Kind) -> dict[str, Any]:
    """The parsed JSON Schema of one message kind."""
    if kind not in SCHEMA_FILES:
        raise ValueError(f"unknown message kind {kind!r}; expected one of {sorted(SCHEMA_FILES)}")
    path = schema_dir() / SCHEMA_FILES[kind]
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"schema file {path} is missing: reinstall prodcat") from None


@functools.cache
def _validator(kind: Kind) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(kind))


def validate(kind: Kind, obj: Any) -> None:
    """Raise :class:`EventError` (stage ``schema``) unless ``obj`` is a valid ``kind`` message."""
    try:
        _validator(kind)(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _schema_error(exc) from None


def _schema_error(exc: fastjsonschema.JsonSchemaValueException) -> EventError:
    """Turn fastjsonschema's ``data.image.data must ...`` into a JSON path and a reason."""
    name = exc.name or "data"
    path = "$" + name[len("data") :]
    reason = exc.message[len(name) :].strip() if exc.message.startswith(name) else exc.message
    definition = exc.definition or {}
    if exc.rule == "additionalProperties" and isinstance(exc.value, dict):
        known = definition.get("properties", {})
        extra = sorted(key for key in exc.value if key not in known)
        if extra:
            path = f"{path}.{extra[0]}"
            reason = f"unknown field (allowed: {', '.join(known)})"
    elif exc.rule == "required" and isinstance(exc.value, dict):
        missing = [key for key in definition.get("required", []) if key not in exc.value]
        if missing:
            path, reason = f"{path}.{missing[0]}", "is required"
    elif exc.rule == "pattern" and "description" in definition:
        reason = f"has the wrong format: {definition['description']}"
    elif exc.rule == "oneOf" and path == "$.image":
        reason = "must have either 'url', or 'data' and 'media_type' (not both)"
    return EventError("schema", path, reason)


def encode(obj: Any) -> bytes:
    """Serialise a message as compact UTF-8 JSON."""
    return orjson.dumps(obj)


def decode_json(raw: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Any:
    """Parse a message value; oversized, non-UTF-8 or non-JSON input is a ``decode`` error."""
    if raw is None:
        raise EventError("decode", "$", "message has no value")
    if len(raw) > max_bytes:
        raise EventError(
            "decode", "$", f"message is {len(raw):,} bytes, over the {max_bytes:,} limit"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError("decode", "$", f"not valid UTF-8 JSON: {exc}") from None


def decode_product(raw: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> dict[str, Any]:
    """Decode and validate one product event; raise :class:`EventError` if it is not one."""
    obj = decode_json(raw, max_bytes)
    validate("product", obj)
    return obj


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds, e.g. ``2026-11-28T13:05:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(rfc3339: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (the schemas' date-time fields)."""
    return datetime.fromisoformat(rfc3339).timestamp()


def make_assignment(
    event: Mapping[str, Any],
    *,
    category_path: Sequence[tuple[str, str, float]],
    top_k: Mapping[str, Sequence[tuple[str, float]]],
    model: Mapping[str, str],
    needs_review: bool,
    traceparent: str | None = None,
    latency_ms: float | None = None,
    source: tuple[str, int, int] | None = None,
    classified_at: str | None = None,
    decided_by: str | None = None,
) -> dict[str, Any]:
    """Build a validated category assignment answering ``event``.

    ``category_path`` is ``[(level, label, score), ...]`` from the top level down, ``top_k``
    maps each level to ``[(label, score), ...]`` best first, ``model`` has ``name``,
    ``version`` and ``fingerprint``; ``source`` is the event's ``(topic, partition, offset)``;
    ``decided_by`` says which path of the text-first cascade answered (``text`` or ``full``);
    the event's ``locale`` travels to the assignment, so consumers can route by language.
    """
    assignment: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source_event_id": event["event_id"],
        "product_id": event["product_id"],
        "category_path": [
            {"level": level, "label": label, "score": float(score)}
            for level, label, score in category_path
        ],
        "top_k": {
            level: [{"label": label, "score": float(score)} for label, score in candidates]
            for level, candidates in top_k.items()
        },
        "needs_review": bool(needs_review),
        "model": {key: str(model[key]) for key in ("name", "version", "fingerprint")},
        "classified_at": classified_at or now_rfc3339(),
    }
    if traceparent is not None:
        assignment["traceparent"] = traceparent
    if latency_ms is not None:
        assignment["latency_ms"] = float(latency_ms)
    if source is not None:
        assignment["source"] = _source(*source)
    if decided_by is not None:
        assignment["decided_by"] = decided_by
    if event.get("locale"):
        assignment["locale"] = event["locale"]
    validate("assignment", assignment)
    return assignment


def make_correction(
    assignment: Mapping[str, Any],
    *,
    new_labels: Sequence[str],
    reviewer: str,
    queue: str,
    comment: str | None = None,
) -> dict[str, Any]:
    """Build a validated correction: a reviewer's decision about ``assignment``.

    ``new_labels`` is the right label per level of the assignment's path (top level first);
    when it equals the model's path the decision is ``accept``, otherwise ``correct``.
    """
    old = [dict(step) for step in assignment["category_path"]]
    if len(new_labels) != len(old):
        reason = f"needs {len(old)} labels (one per level), got {len(new_labels)}"
        raise EventError("schema", "$.new_path", reason)
    same = all(step["label"] == label for step, label in zip(old, new_labels, strict=True))
    correction: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "correction_id": str(uuid.uuid4()),
        "product_id": assignment["product_id"],
        "source_event_id": assignment["source_event_id"],
        "decision": "accept" if same else "correct",
        "reviewer": reviewer,
        "decided_at": now_rfc3339(),
        "old_path": old,
        "new_path": [
            {"level": step["level"], "label": label}
            for step, label in zip(old, new_labels, strict=True)
        ],
        "model": dict(assignment["model"]),
        "queue": queue,
    }
    if comment:
        correction["comment"] = comment
    validate("correction", correction)
    return correction


def make_dead_letter(
    raw: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    stage: str,
    error_type: str,
    message: str,
    max_original_bytes: int | None = None,
) -> dict[str, Any]:
    """Build a validated dead letter keeping the original message bytes for replay.

    A value longer than ``max_original_bytes`` is cut to that length and
    ``original.truncated_from`` gives its full size: the letter must stay under the
    broker's message size limit, or the event could never be dead-lettered (its outcome
    would be retried forever). The full bytes stay in the source topic at ``source``.
    """
    original: dict[str, Any] = {"value": _b64(raw), "key": _b64(key)}
    if raw is not None and max_original_bytes is not None and len(raw) > max_original_bytes:
        original = {"value": _b64(raw[:max_original_bytes]), "key": _b64(key)}
        original["truncated_from"] = len(raw)
    letter = {
        "schema_version": SCHEMA_VERSION,
        "original": original,
        "source": _source(topic, partition, offset),
        "stage": _stage_name(stage),
        "error": {"type": error_type or "Error", "message": _shorten(message)},
        "failed_at": now_rfc3339(),
    }
    validate("dead_letter", letter)
    return letter


def _source(topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {"topic": topic, "partition": int(partition), "offset": int(offset)}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _stage_name(stage: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]", "_", stage.lower()).lstrip("0123456789_.-")[:64]
    return name or "unknown"


def _shorten(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE:
        return message
    return message[: MAX_ERROR_MESSAGE - 1] + "…"
