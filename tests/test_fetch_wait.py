"""The worker's Kafka fetches wait at most FETCH_MAX_WAIT_MS (Faust hard-codes 1.5 s)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as driver

from prodcat.worker.fetch_wait import FETCH_MAX_WAIT_MS, cap_fetch_wait


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Stand in for the driver's consumer factory: records and returns 1.5-s consumers."""
    made: list[Any] = []

    def create(self: Any, transport: Any) -> Any:
        made.append(SimpleNamespace(_fetch_max_wait_ms=1500, transport=transport))
        return made[-1]

    monkeypatch.setattr(driver.AIOKafkaConsumerThread, "_create_worker_consumer", create)
    return made


def test_consumers_built_after_the_cap_wait_less(built: list[Any]) -> None:
    cap_fetch_wait()
    cap_fetch_wait()  # idempotent: wraps the driver's factory once
    consumer = driver.AIOKafkaConsumerThread._create_worker_consumer(None, "transport")
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    assert consumer.transport == "transport" and len(built) == 1


def test_a_shorter_wait_is_kept(built: list[Any]) -> None:
    cap_fetch_wait(5000)
    consumer = driver.AIOKafkaConsumerThread._create_worker_consumer(None, "transport")
    assert consumer._fetch_max_wait_ms == 1500
