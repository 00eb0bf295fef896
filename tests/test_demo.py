"""The demo's bookkeeping: percentiles, the tally of outcomes, the malformed events."""

from __future__ import annotations

import math

import orjson
import pytest

from prodcat.core.events import EventError, decode_product
from prodcat.core.stats import percentile
from prodcat.demo.products import DemoProduct, malformed_events
from prodcat.demo.tally import Tally


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 95) == 7
    assert math.isnan(percentile([], 50))


def assignment(product_id: str, labels: list[str], latency_ms: float) -> dict:
    return {
        "product_id": product_id,
        "category_path": [
            {"level": level, "label": label, "score": 0.9}
            for level, label in zip(("master", "sub"), labels, strict=True)
        ],
        "latency_ms": latency_ms,
    }


def test_tally_scores_levels_and_counts_dead_letters() -> None:
    tally = Tally(["master", "sub"])
    for key in (b"a", b"b", b"bad"):
        tally.sent(key)
    sent = tally.first_sent or 0
    truth = {"master": "Apparel", "sub": "Topwear"}
    assert tally.assignment(assignment("a", ["Apparel", "Topwear"], 5), sent + 0.1, truth)
    decided = assignment("b", ["Apparel", "Shoes"], 7) | {"decided_by": "text"}
    assert not tally.assignment(decided, sent + 0.3, truth)
    tally.dead_letter(b"bad", "schema", "$.title: must be string", sent + 0.2)
    summary = tally.summary()
    assert summary["outcomes"] == 3 and summary["assigned"] == 2 and summary["dead_letters"] == 1
    assert summary["accuracy"] == {"master": 1.0, "sub": 0.5}
    assert summary["decided_by"] == {"full": 1, "text": 1}
    assert summary["dead_letters_by_reason"] == {"schema: $.title: must be string": 1}
    assert summary["worker_latency_ms"]["p50"] == 5
    assert summary["latency_ms"]["p99"] == pytest.approx(300, abs=1)
    assert summary["events_per_s"] == pytest.approx(10, rel=0.01)


def test_malformed_events_are_all_refused_at_the_door_or_later() -> None:
    good = {
        "schema_version": 1,
        "event_id": "e1",
        "product_id": "p1",
        "occurred_at": "2026-11-28T13:05:00Z",
        "title": "Blue shirt",
    }
    template = DemoProduct(b"p1", orjson.dumps(good), {"master": "Apparel"}, "Blue shirt")
    cases = malformed_events(template)
    assert len({c.key for c in cases}) == len(cases) == 5
    refused_by_schema = 0
    for case in cases:
        try:
            decode_product(case.value)
        except EventError:
            refused_by_schema += 1
    # the other two are valid events whose photo fails later (decode, SSRF guard)
    assert refused_by_schema == 3
