"""Reviewers' corrections as labels: read from the corrections topic or a JSONL file.

``prodcat train --corrections`` and ``prodcat evaluate --corrections`` use the latest
decision per product (by ``decided_at``): a reviewer who changes their mind wins, and an
``accept`` confirms the model's path as the label. A file holds one correction per line,
either the correction itself or a ``prodcat tail --json`` record of one (its ``value``), so
``prodcat tail --topic categories.corrections --from-beginning --json > corrections.jsonl``
keeps the decisions of an in-memory broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from prodcat.core.events import EventError, parse_time, validate
from prodcat.core.settings import Settings

log = logging.getLogger(__name__)
IDLE_S = 3.0  # the topic is read until nothing new arrives for this long


class CorrectionsError(ValueError):
    """A corrections file that cannot be used; the message names the line."""


def read_corrections_file(path: str | Path) -> list[dict[str, Any]]:
    """Every correction in a JSONL file, validated; a bad line is an error naming it."""
    found = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
                if isinstance(value, dict) and "value" in value and "correction_id" not in value:
                    value = value["value"]  # a `prodcat tail --json` record
                validate("correction", value)
            except (orjson.JSONDecodeError, EventError) as exc:
                raise CorrectionsError(f"{path} line {number}: not a correction ({exc})") from None
            found.append(value)
    return found


def read_corrections_topic(
    settings: Settings, bootstrap: str, idle_s: float = IDLE_S
) -> list[dict[str, Any]]:
    """Every valid correction on ``[topics] corrections``, from the beginning."""
    from kafka import TopicPartition

    from prodcat.kafka.assignments import poll_records
    from prodcat.kafka.clients import consumer

    client = consumer(settings, bootstrap, enable_auto_commit=False)
    try:
        topic = settings.topics.corrections
        partitions = sorted(client.partitions_for_topic(topic) or [])
        if not partitions:
            raise CorrectionsError(f"topic {topic} does not exist on {bootstrap}")
        client.assign([TopicPartition(topic, p) for p in partitions])
        client.seek_to_beginning()
        found, invalid = [], 0
        for record in poll_records(client, idle_timeout_s=idle_s):
            try:
                validate("correction", record.value)
            except EventError:
                invalid += 1
                continue
            found.append(record.value)
    finally:
        client.close()
    if invalid:
        log.warning("%d messages on %s are not valid corrections: skipped", invalid, topic)
    return found


def latest_labels(corrections: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Product id -> {level: label} of its latest decision (later in the input wins ties)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for correction in corrections:
        product = str(correction["product_id"])
        when = parse_time(correction["decided_at"])
        if product not in latest or when >= parse_time(latest[product]["decided_at"]):
            latest[product] = correction
    return {
        product: {step["level"]: step["label"] for step in correction["new_path"]}
        for product, correction in latest.items()
    }
