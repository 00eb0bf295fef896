"""Unit tests of the worker's limits: memory budget, port-specific allow-list, model reload."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from bundles import hashgram_bundle
from faust.types import TP

from prodcat.core.settings import Settings
from prodcat.worker.commits import never_past_in_flight
from prodcat.worker.image_fetch import AllowList
from prodcat.worker.memory import MemoryBudget, rss_bytes
from prodcat.worker.model_reload import ModelReloader
from prodcat.worker.runtime import load_model


def test_budget_waits_for_bytes_then_admits_on_release() -> None:
    async def scenario() -> list[str]:
        waits: list[str] = []
        budget = MemoryBudget(400, on_wait=waits.append, rss=lambda: 0)  # 100 bytes in flight
        await budget.acquire(80)
        blocked = asyncio.create_task(budget.acquire(30))
        await asyncio.sleep(0.05)
        assert not blocked.done() and budget.held == 80
        budget.release(80)
        await asyncio.wait_for(blocked, 2)
        assert budget.held == 30 and budget.count == 1
        return waits

    assert asyncio.run(scenario()) == ["bytes"]


def test_budget_gates_on_rss_but_never_stops_with_nothing_in_flight() -> None:
    async def scenario() -> list[str]:
        waits: list[str] = []
        rss = [10_000]
        budget = MemoryBudget(1000, on_wait=waits.append, rss=lambda: rss[0])
        await budget.acquire(2000)  # over every limit, but nothing in flight: admitted
        blocked = asyncio.create_task(budget.acquire(1))
        await asyncio.sleep(0.5)
        assert not blocked.done()
        budget.release(2000)  # nothing in flight again: the next one goes
        await asyncio.wait_for(blocked, 2)
        return waits

    assert asyncio.run(scenario()) == ["bytes"]


def test_rss_is_read_from_proc() -> None:
    assert rss_bytes() > 10 * 2**20 or not Path("/proc/self/statm").exists()
    assert rss_bytes(2**22 + 7) == 0  # no such process


def test_allow_list_entries_may_name_one_port() -> None:
    allow = AllowList(["127.0.0.1:8080", "[::1]:81", "photos.local:80", "10.0.0.0/8", "fd00::1"])
    loopback = ipaddress.ip_address("127.0.0.1")
    assert allow.allows_address(loopback, 8080)
    assert not allow.allows_address(loopback, 9092) and not allow.allows_address(loopback, None)
    assert allow.allows_address(ipaddress.ip_address("::1"), 81)
    assert allow.allows_address(ipaddress.ip_address("10.1.2.3"), 5)  # no port: any port
    assert allow.allows_address(ipaddress.ip_address("fd00::1"), 443)
    assert allow.allows_host("photos.local", 80) and not allow.allows_host("photos.local", 81)


class Target:
    """Records what the reloader does to the runtime."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.results: list[str] = []

    def model_identity(self) -> dict[str, str]:
        return self.model.identity()  # type: ignore[attr-defined]

    async def use_model(self, model: object) -> None:
        self.model = model

    def model_reloaded(self, result: str) -> str:
        self.results.append(result)
        return result


@pytest.mark.training
def test_reloader_follows_the_model_directory(data_dir: Path, tmp_path: Path) -> None:
    """Polling path: a re-pointed symlink loads, a gap (no manifest) is no change, a
    broken bundle is rejected and the same broken bundle is not retried until SIGHUP."""
    first = hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)
    second = hashgram_bundle(data_dir, "rel-hashgram-b", seed=1)
    settings = Settings()
    link = tmp_path / "current"
    link.symlink_to(first)

    def load(path: Path) -> object:
        return load_model(path, settings, None)

    target = Target(load(link))
    reloader = ModelReloader(link, load, target, poll_s=0)

    def repoint(to: Path) -> None:
        fresh = tmp_path / "current.new"
        fresh.symlink_to(to)
        os.replace(fresh, link)

    async def steps() -> list[str | None]:
        out = [await reloader.check()]  # nothing changed
        repoint(second)
        out.append(await reloader.check())
        repoint(tmp_path / "missing")  # mid-swap: no manifest yet
        out.append(await reloader.check())
        empty = tmp_path / "empty"
        (empty).mkdir()
        (empty / "manifest.json").write_text("{}")
        repoint(empty)
        out += [await reloader.check(), await reloader.check(), await reloader.check(forced=True)]
        return out

    assert asyncio.run(steps()) == [None, "loaded", None, "rejected", None, "rejected"]
    assert target.model_identity()["fingerprint"] == load(second).identity()["fingerprint"]


def test_dead_letter_keeps_the_head_of_an_oversized_original() -> None:
    from prodcat.core.events import make_dead_letter

    raw = b"x" * 5000
    letter = make_dead_letter(raw, b"k", "products", 0, 7, "decode", "EventError", "too big", 1024)
    assert base64.b64decode(letter["original"]["value"]) == raw[:1024]
    assert letter["original"]["truncated_from"] == 5000
    small = make_dead_letter(b"{}", None, "products", 0, 8, "schema", "EventError", "x", 1024)
    assert "truncated_from" not in small["original"]


def test_dead_letters_keep_no_more_than_fits_in_a_message() -> None:
    from prodcat.worker.classifier import original_cap

    settings = Settings()
    assert original_cap(settings) == settings.worker.dlq_max_original_bytes
    settings.kafka.max_message_bytes = 1024 * 1024
    cap = original_cap(settings)
    assert cap < settings.worker.dlq_max_original_bytes
    assert (cap + 2) // 3 * 4 + 64 * 1024 <= settings.kafka.max_message_bytes


class FakeConsumer:
    """Faust consumer calls rewind_past_end uses, with positions and watermarks."""

    def __init__(self, positions: dict[TP, int], ends: dict[TP, int | None]) -> None:
        self.positions, self.ends = positions, ends
        self.seeks: list[dict[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.positions)

    def highwater(self, tp: TP) -> int | None:
        return self.ends[tp]

    async def position(self, tp: TP) -> int:
        return self.positions[tp]

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.seeks.append(offsets)


def test_a_position_past_the_log_end_is_rewound_to_the_start() -> None:
    from prodcat.worker.offsets import rewind_past_end

    behind, ahead, unknown, other = TP("p", 0), TP("p", 1), TP("p", 2), TP("q", 0)
    consumer = FakeConsumer(
        {behind: 5, ahead: 30, unknown: 30, other: 30},
        {behind: 9, ahead: 4, unknown: None, other: 0},
    )
    assert asyncio.run(rewind_past_end(consumer, "p")) == [ahead]
    assert consumer.seeks == [{ahead: 0}]


def faust_offsets(acked: list[int], committed: int | None) -> SimpleNamespace:
    """The state Faust's own ``Consumer._new_offset`` reads, with that very method bound."""
    from collections import defaultdict

    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    tp = TP("products", 0)
    consumer = SimpleNamespace(
        _acked=defaultdict(list, {tp: list(acked)}),
        _acked_index=defaultdict(set, {tp: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {tp: committed}),
    )
    consumer._new_offset = types.MethodType(Consumer._new_offset, consumer)
    return consumer


def test_no_commit_passes_an_event_in_flight() -> None:
    """Offset 10 (the committed one) still in flight, 11..15 done: Faust alone commits 16
    (its gap check is off by one); guarded, nothing until 10 is done, then 16."""
    tp = TP("products", 0)
    assert faust_offsets([11, 12, 13, 14, 15], committed=10)._new_offset(tp) == 16
    in_flight = {10}
    consumer = faust_offsets([11, 12, 13, 14, 15], committed=10)
    never_past_in_flight(consumer, lambda topic, partition: min(in_flight, default=None))
    assert consumer._new_offset(tp) is None
    in_flight.clear()
    consumer._acked[tp].insert(0, 10)
    assert consumer._new_offset(tp) == 16
    before_any_commit = faust_offsets([1, 2], committed=None)  # Faust skips its check here
    never_past_in_flight(before_any_commit, lambda topic, partition: 0)
    assert before_any_commit._new_offset(tp) is None
