"""The JSON Schemas and the codec: examples validate, bad events are rejected with their path."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from prodcat.core.events import (
    EventError,
    decode_product,
    encode,
    load_schema,
    make_assignment,
    make_dead_letter,
    validate,
)

KINDS = ("product", "assignment", "dead_letter", "correction")
VALID: dict[str, Any] = load_schema("product")["examples"][0]
PNG_B64 = load_schema("product")["examples"][1]["image"]["data"]


@pytest.mark.parametrize("kind", KINDS)
def test_schema_examples_validate(kind: str) -> None:
    schema = load_schema(kind)  # type: ignore[arg-type]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["examples"]
    for example in schema["examples"]:
        validate(kind, example)  # type: ignore[arg-type]


def changed(**changes: Any) -> dict[str, Any]:
    """The valid example with fields replaced (value ...) or removed (value None)."""
    event = copy.deepcopy(VALID)
    for name, value in changes.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event


INVALID = [
    ("missing title", changed(title=None), "$.title", "is required"),
    ("missing product id", changed(product_id=None), "$.product_id", "is required"),
    ("title not a string", changed(title=42), "$.title", "string"),
    ("title too long", changed(title="x" * 1001), "$.title", "1000"),
    ("unknown schema version", changed(schema_version=2), "$.schema_version", "1"),
    ("empty product id", changed(product_id=""), "$.product_id", "1"),
    ("control char in product id", changed(product_id="a\nb"), "$.product_id", "format"),
    ("event id with spaces", changed(event_id="not an id"), "$.event_id", "format"),
    ("date without zone", changed(occurred_at="2026-11-28 13:00"), "$.occurred_at", "date-time"),
    ("unknown top-level field", changed(price=9.99), "$.price", "unknown field"),
    ("attribute is a list", changed(attributes={"sizes": ["S", "M"]}), "$.attributes.sizes", ""),
    ("attributes not an object", changed(attributes="red"), "$.attributes", "object"),
    ("bad locale", changed(locale="english please"), "$.locale", "format"),
    ("brand too long", changed(brand="b" * 201), "$.brand", "200"),
    ("ftp image url", changed(image={"url": "ftp://x.example/a.jpg"}), "$.image.url", "format"),
    (
        "bad base64",
        changed(image={"data": "not base64!", "media_type": "image/png"}),
        "$.image.data",
        "format",
    ),
    (
        "gif media type",
        changed(image={"data": PNG_B64, "media_type": "image/gif"}),
        "$.image.media_type",
        "",
    ),
    ("data without media type", changed(image={"data": PNG_B64}), "$.image", "either"),
    (
        "url and data",
        changed(
            image={"url": "https://x.example/a.jpg", "data": PNG_B64, "media_type": "image/png"}
        ),
        "$.image",
        "either",
    ),
    (
        "unknown image field",
        changed(image={"url": "https://x.example/a", "alt": "a"}),
        "$.image.alt",
        "unknown field",
    ),
    ("not an object", ["a", "list"], "$", "object"),
]


@pytest.mark.parametrize(
    ("event", "path", "reason"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_events_are_rejected_with_their_path(event: Any, path: str, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_product(encode(event))
    assert caught.value.stage == "schema"
    assert caught.value.path == path
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b'{"title": "\xff\xfe"}', "not valid UTF-8 JSON"),
        (b"", "not valid UTF-8 JSON"),
        (b'{"title": "' + b"x" * 2000 + b'"}', "over the 1,000 limit"),
    ],
)
def test_undecodable_or_oversized_input_is_a_decode_error(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_product(raw, max_bytes=1000)
    assert (caught.value.stage, caught.value.path) == ("decode", "$")
    assert reason in caught.value.reason


def test_decode_product_round_trips_a_valid_event() -> None:
    event = load_schema("product")["examples"][1]
    assert decode_product(orjson.dumps(event)) == event


def test_make_assignment_builds_a_valid_message() -> None:
    assignment = make_assignment(
        VALID,
        category_path=[("masterCategory", "Apparel", 0.9), ("articleType", "Shirts", 0.4)],
        top_k={"masterCategory": [("Apparel", 0.9), ("Footwear", 0.1)]},
        model={"name": "m", "version": "1", "fingerprint": "abc"},
        needs_review=True,
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        source=("products", 1, 7),
    )
    validate("assignment", assignment)
    assert assignment["source_event_id"] == VALID["event_id"]
    assert assignment["product_id"] == VALID["product_id"]
    assert assignment["category_path"][1] == {
        "level": "articleType",
        "label": "Shirts",
        "score": 0.4,
    }
    assert assignment["source"] == {"topic": "products", "partition": 1, "offset": 7}


def test_make_assignment_refuses_an_out_of_range_score() -> None:
    with pytest.raises(EventError, match=r"\$\.category_path\[0\]\.score"):
        make_assignment(
            VALID,
            category_path=[("masterCategory", "Apparel", 1.5)],
            top_k={},
            model={"name": "m", "version": "1", "fingerprint": "abc"},
            needs_review=False,
        )


def test_dead_letter_keeps_the_original_bytes() -> None:
    raw, key = b'{"title": \xff', b"sku-1"
    letter = make_dead_letter(raw, key, "products", 3, 42, "decode", "EventError", "x" * 5000)
    validate("dead_letter", letter)
    assert base64.b64decode(letter["original"]["value"]) == raw
    assert base64.b64decode(letter["original"]["key"]) == key
    assert letter["source"] == {"topic": "products", "partition": 3, "offset": 42}
    assert len(letter["error"]["message"]) == 2000


@pytest.mark.parametrize(
    ("stage", "recorded"),
    [
        ("schema", "schema"),
        ("text.hashgram", "text.hashgram"),
        ("My Plugin!", "my_plugin_"),
        ("", "unknown"),
    ],
)
def test_dead_letter_stage_names(stage: str, recorded: str) -> None:
    letter = make_dead_letter(b"{}", None, "products", 0, 1, stage, "ComponentError", "no")
    assert letter["stage"] == recorded


def test_dead_letter_of_a_tombstone() -> None:
    letter = make_dead_letter(None, None, "products", 0, 0, "decode", "EventError", "no value")
    assert letter["original"] == {"value": None, "key": None}
