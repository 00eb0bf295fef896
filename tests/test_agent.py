"""The classifying agent under Faust's ``agent.test_context()``: routing, outcomes, acks.

The model here is a small stand-in with the BundleModel interface (the agent's job is
moving events to exactly one outcome and acking at the right moment, not classifying);
the worker end-to-end test runs a real bundle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest

from prodcat.contract.components import ComponentError
from prodcat.contract.hookspecs import hookimpl
from prodcat.core.settings import Settings
from prodcat.worker.app import create_app
from prodcat.worker.classifier import ASSIGNED, DEAD_LETTER, Outcome
from prodcat.worker.runtime import Runtime

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
GUARD_S = 60.0  # upper bound only, so a broken agent fails instead of hanging
IDENTITY = {"name": "stub", "version": "1", "fingerprint": "0123456789abcdef"}
MODEL_REVIEW_THRESHOLD = 0.92  # the stub model's "fitted" threshold: above its 0.9 scores


class StubModel:
    """Scores by title words: 'unsure' -> low confidence, 'explode' -> the batch fails."""

    providers = ["CPUExecutionProvider"]

    def identity(self) -> dict[str, str]:
        return IDENTITY

    def featurize(self, product: dict[str, Any]) -> str:
        if product["title"].startswith("slow"):
            time.sleep(0.5)
        if product["title"] == "plugin refuses":
            raise ComponentError("text.stub", "cannot featurize this title")
        return product["title"]

    def collate(self, features: list[str]) -> list[str]:
        return features

    def infer(self, titles: list[str]) -> list[dict[str, Any]]:
        if any("explode" in t for t in titles):
            raise RuntimeError("graph failed")
        return [self._result(t) for t in titles]

    def _result(self, title: str) -> dict[str, Any]:
        sub = 0.2 if "unsure" in title else 0.9
        return {
            "category_path": [
                {"level": "masterCategory", "label": "Apparel", "score": 0.95},
                {"level": "subCategory", "label": "Topwear", "score": sub},
            ],
            "top_k": {
                "masterCategory": [{"label": "Apparel", "score": 0.95}],
                "subCategory": [{"label": "Topwear", "score": sub}],
            },
            "model": IDENTITY,
            "review_threshold": MODEL_REVIEW_THRESHOLD,
        }


class Recorder:
    """Publisher that records outcomes; ``gate`` holds every publish until it is set."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def publish(self, outcome: Outcome, source: Any, settle: Callable[[], Any]) -> None:
        await self.gate.wait()
        self.outcomes.append(outcome)
        await settle()


def product(**overrides: Any) -> bytes:
    event = {
        "schema_version": 1,
        "event_id": "evt-1",
        "product_id": "p-1",
        "occurred_at": "2026-11-28T13:05:00Z",
        "title": "Blue cotton shirt",
    }
    event.update(overrides)
    return orjson.dumps(event)


def settings() -> Settings:
    s = Settings()
    s.worker.max_delay_ms = 1
    s.worker.deadline_ms = 10_000
    s.worker.review_threshold = 0.5
    s.images.fetch_timeout_s = 2
    return s


def with_agent(
    body: Callable[[Any, Recorder], Coroutine[Any, Any, None]],
    plugin_manager: Any,
    **worker_settings: Any,
) -> None:
    async def main() -> None:
        s = settings()
        for name, value in worker_settings.items():
            setattr(s.worker, name, value)
        runtime = Runtime(s, StubModel(), plugin_manager)  # type: ignore[arg-type]
        worker = create_app(s, "127.0.0.1:9", runtime)
        recorder = Recorder()
        worker.dispatcher.publisher = recorder
        try:
            async with worker.agent.test_context() as agent:
                await body(agent, recorder)
                await asyncio.wait_for(worker.dispatcher.drain(), 20)
        finally:
            await runtime.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


async def outcomes_for(agent: Any, recorder: Recorder, messages: list[dict[str, Any]]) -> None:
    events = [await agent.put(**m) for m in messages]
    loop = asyncio.get_running_loop()
    give_up = loop.time() + GUARD_S
    while loop.time() < give_up:
        if len(recorder.outcomes) >= len(messages) and all(e.message.acked for e in events):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(recorder.outcomes)} outcomes for {len(messages)} events")


def body_of(outcome: Outcome) -> dict[str, Any]:
    return orjson.loads(outcome.value)


def test_product_becomes_an_assignment_acked_only_after_publish(plugin_manager: Any) -> None:
    async def body(agent: Any, recorder: Recorder) -> None:
        recorder.gate.clear()
        event = await agent.put(
            value=product(), key=b"p-1", headers=[("traceparent", TRACEPARENT.encode())]
        )
        await asyncio.sleep(0.2)
        assert not event.message.acked, "acked before the outcome was published"
        recorder.gate.set()
        await outcomes_for(agent, recorder, [])
        for _ in range(500):
            if event.message.acked:
                break
            await asyncio.sleep(0.01)
        assert event.message.acked
        (outcome,) = recorder.outcomes
        assert outcome.kind == ASSIGNED and outcome.key == b"p-1"
        assert ("traceparent", TRACEPARENT.encode()) in outcome.headers
        assignment = body_of(outcome)
        assert assignment["source_event_id"] == "evt-1"
        assert assignment["traceparent"] == TRACEPARENT
        assert assignment["model"]["fingerprint"] == IDENTITY["fingerprint"]
        assert [c["label"] for c in assignment["category_path"]] == ["Apparel", "Topwear"]
        assert assignment["needs_review"] is False
        assert assignment["decided_by"] == "full"  # a format-1 model: no cascade

    with_agent(body, plugin_manager)


def test_low_confidence_level_needs_review(plugin_manager: Any) -> None:
    async def body(agent: Any, recorder: Recorder) -> None:
        await outcomes_for(agent, recorder, [{"value": product(title="unsure shirt")}])
        assert body_of(recorder.outcomes[0])["needs_review"] is True

    with_agent(body, plugin_manager)


@pytest.mark.parametrize(("setting", "flagged"), [(None, True), (0.5, False)])
def test_the_models_review_threshold_applies_unless_one_is_set(
    plugin_manager: Any, setting: float | None, flagged: bool
) -> None:
    """A confident answer (0.9 per level) is flagged by the model's fitted threshold (0.92)
    when ``[worker] review_threshold`` is unset, and not when the setting says 0.5."""

    async def body(agent: Any, recorder: Recorder) -> None:
        await outcomes_for(agent, recorder, [{"value": product(title="plain shirt")}])
        assert body_of(recorder.outcomes[0])["needs_review"] is flagged

    with_agent(body, plugin_manager, review_threshold=setting)


@pytest.mark.parametrize(
    ("value", "stage"),
    [
        (b"{not json", "decode"),
        (b"\xff\xfe", "decode"),
        (product(schema_version=2), "schema"),
        (product(title="plugin refuses"), "text.stub"),
        (product(title="explode now"), "inference"),
        (product(image={"url": "http://127.0.0.1:9/x.png"}), "image_fetch"),
        (product(image={"url": "http://169.254.169.254/latest/"}), "image_fetch"),
    ],
)
def test_bad_events_become_dead_letters(plugin_manager: Any, value: bytes, stage: str) -> None:
    async def body(agent: Any, recorder: Recorder) -> None:
        await outcomes_for(agent, recorder, [{"value": value, "key": b"k"}])
        (outcome,) = recorder.outcomes
        assert outcome.kind == DEAD_LETTER and outcome.stage == stage
        letter = body_of(outcome)
        assert letter["stage"] == stage
        assert letter["source"]["offset"] == 0
        assert orjson.loads(orjson.dumps(letter))["original"]["key"] == "aw=="  # b"k"

    with_agent(body, plugin_manager)


def test_every_event_ends_as_exactly_one_outcome(plugin_manager: Any) -> None:
    good = [{"value": product(event_id=f"e{i}", product_id=f"p{i}")} for i in range(20)]
    bad = [{"value": b"[]"}, {"value": product(title="explode")}, {"value": b""}]

    async def body(agent: Any, recorder: Recorder) -> None:
        await outcomes_for(agent, recorder, good + bad)
        kinds = [o.kind for o in recorder.outcomes]
        assert kinds.count(ASSIGNED) == 20 and kinds.count(DEAD_LETTER) == 3
        assert sorted(o.key for o in recorder.outcomes if o.kind == ASSIGNED) == sorted(
            f"p{i}".encode() for i in range(20)
        )

    with_agent(body, plugin_manager)


@pytest.mark.parametrize(
    ("second_key", "expected"),
    [(b"p-1", ["e-1", "e-2"]), (b"p-2", ["e-2", "e-1"])],
    ids=["same-product-in-order", "other-product-overtakes"],
)
def test_outcomes_of_one_product_keep_their_order(
    plugin_manager: Any, second_key: bytes, expected: list[str]
) -> None:
    """A slow event is overtaken by a later one, except by a later event of the same product."""

    async def body(agent: Any, recorder: Recorder) -> None:
        await outcomes_for(
            agent,
            recorder,
            [
                {"value": product(event_id="e-1", title="slow shirt"), "key": b"p-1"},
                {"value": product(event_id="e-2", product_id="p-x"), "key": second_key},
            ],
        )
        assert [body_of(o)["source_event_id"] for o in recorder.outcomes] == expected

    with_agent(body, plugin_manager, max_batch_size=1)


class Flagger:
    @hookimpl
    def postprocess_assignment(self, assignment: dict[str, Any], product: dict[str, Any]) -> Any:
        if "gift card" in product["title"]:
            raise ComponentError("giftcards", "gift cards are not classified")
        assignment["needs_review"] = True
        return assignment


def test_postprocess_hooks_run_last(register_plugin: Callable[..., Any]) -> None:
    manager = register_plugin(Flagger(), "flagger")

    async def body(agent: Any, recorder: Recorder) -> None:
        await outcomes_for(
            agent,
            recorder,
            [{"value": product()}, {"value": product(title="gift card 50")}],
        )
        by_kind = {o.kind: o for o in recorder.outcomes}
        assert body_of(by_kind[ASSIGNED])["needs_review"] is True
        assert by_kind[DEAD_LETTER].stage == "giftcards"

    with_agent(body, manager)
