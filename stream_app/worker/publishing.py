"""Publishing outcomes at least once: send, wait for the broker's acknowledgement, then ack.

A produce that fails is retried with back-off until it succeeds (the worker reports not
ready meanwhile): the event stays unacked, so its offset is never committed without its
outcome. Exactly-once publishing is prodcat/worker/exactly_once.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prodcat.worker.classifier import ASSIGNED, Outcome, Source
from prodcat.worker.dispatcher import Settle
from prodcat.worker.runtime import Runtime

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
T = TypeVar("T")


async def until_it_works(runtime: Runtime, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` until it succeeds, backing off; ``runtime.publishing_ok`` tells /ready."""
    delay = RETRY_MIN_S
    while True:
        try:
            result = await attempt()
            runtime.publishing_ok = True
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any producer failure: retry, never drop
            runtime.publishing_ok = False
            log.warning("publish to %s failed (%s); retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


class AtLeastOncePublisher:
    """Produces outcomes with the app's producer; settles once the broker acknowledged."""

    def __init__(self, runtime: Runtime, categories: Any, dlq: Any) -> None:
        self.runtime = runtime
        self.categories = categories
        self.dlq = dlq

    async def publish(self, outcome: Outcome, source: Source, settle: Settle) -> None:
        topic = self.categories if outcome.kind == ASSIGNED else self.dlq

        async def send() -> None:
            pending = await topic.send(
                key=outcome.key, value=outcome.value, headers=outcome.headers
            )
            await pending

        await until_it_works(self.runtime, str(topic), send)
        await settle()
