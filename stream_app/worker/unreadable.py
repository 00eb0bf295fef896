"""Record batches the worker cannot read become dead letters instead of a crash loop.

A batch compressed with a codec whose library is missing (the issue that motivated this:
``UnsupportedCodecError: Libraries for snappy compression codec not found``), or one that
fails its CRC or decompression, makes aiokafka raise on every fetch of it: Faust's fetcher
crashes, the worker exits, and its replacement meets the same batch. So the worker wraps
each batch aiokafka unpacks (``guard_record_batches``): when reading one fails, the batch's
remaining offsets, known from its header without decompressing it, come out as placeholder
records with no key or value and an ``UNREADABLE_HEADER`` saying why. They flow through the
stream like any event, so each becomes one dead letter (stage ``unreadable``, the source
offset, the error) and is acked and committed in order: nothing is skipped silently and
nothing stalls. The original bytes stay in the source topic at those offsets while its
retention keeps them (docs/operations.md says how to replay them).

The listener hears of each unreadable batch once (one log line, a metric, ``/health``); it
is called from Faust's consumer thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

UNREADABLE_HEADER = "prodcat-unreadable"
SEEN_BATCHES = 4096  # batches remembered so a re-fetched one is reported once


@dataclass(frozen=True)
class UnreadableBatch:
    """Offsets ``first``..``last`` of a partition that could not be read, and why."""

    topic: str
    partition: int
    first: int
    last: int
    error_type: str
    error: str

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}] offsets {self.first}-{self.last}: "
            f"{self.error_type}: {self.error}"
        )


Listener = Callable[[UnreadableBatch], None]


@dataclass(frozen=True)
class Placeholder:
    """Stands in for one record of an unreadable batch (the attributes aiokafka reads)."""

    offset: int
    timestamp: int
    timestamp_type: int
    headers: tuple[tuple[str, bytes], ...]
    key: None = None
    value: None = None
    checksum: None = None


class _Reporter:
    """Calls the listener once per batch, remembering the most recent ones."""

    def __init__(self) -> None:
        self.listener: Listener | None = None
        self._seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def report(self, batch: UnreadableBatch) -> None:
        key = (batch.topic, batch.partition, batch.first)
        with self._lock:
            if key in self._seen:
                return
            self._seen[key] = None
            if len(self._seen) > SEEN_BATCHES:
                self._seen.popitem(last=False)
        if self.listener is not None:
            self.listener(batch)


_reporter = _Reporter()


class _GuardedBatch:
    """A record batch whose iteration never raises: see the module docstring."""

    def __init__(self, batch: Any, tp: Any) -> None:
        self._batch = batch
        self._tp = tp
        self._crc_ok = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def validate_crc(self) -> bool:
        self._crc_ok = bool(self._batch.validate_crc())
        return True  # a bad CRC is reported by __iter__, as any other unreadable batch

    def __iter__(self) -> Iterator[Any]:
        batch = self._batch
        position = batch.base_offset
        try:
            if not self._crc_ok:
                raise ValueError("record batch failed its CRC check (corrupt data)")
            for record in batch:
                position = record.offset + 1
                yield record
            return
        except Exception as exc:  # noqa: BLE001 - any failure to read the batch
            failure = exc
        yield from self._placeholders(position, failure)

    def _placeholders(self, first: int, failure: Exception) -> Iterator[Placeholder]:
        last = self._batch.next_offset - 1
        unreadable = UnreadableBatch(
            self._tp.topic, self._tp.partition, first, last, type(failure).__name__, str(failure)
        )
        _reporter.report(unreadable)
        reason = f"{unreadable.error_type}: {unreadable.error}".encode()
        stamp = getattr(self._batch, "max_timestamp", -1)
        kind = getattr(self._batch, "timestamp_type", 0)
        for offset in range(first, last + 1):
            yield Placeholder(offset, stamp, kind, ((UNREADABLE_HEADER, reason),))


class _GuardedRecords:
    """aiokafka's MemoryRecords, handing out guarded batches."""

    def __init__(self, records: Any, tp: Any) -> None:
        self._records = records
        self._tp = tp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None or not hasattr(batch, "next_offset"):
            return batch  # legacy (pre-0.11) batches: no header to skip them by
        return _GuardedBatch(batch, self._tp)


def guard_record_batches(listener: Listener) -> None:
    """Make every aiokafka consumer of this process turn unreadable batches into
    placeholders, and tell ``listener`` about each. Idempotent; the last listener wins."""
    from aiokafka.consumer import fetcher

    _reporter.listener = listener
    cls = fetcher.PartitionRecords
    if getattr(cls.__init__, "__wrapped__", None) is not None:
        return
    original = cls.__init__

    def init(self: Any, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        original(self, tp, _GuardedRecords(records, tp), *args, **kwargs)

    init.__wrapped__ = original  # type: ignore[attr-defined]
    cls.__init__ = init


def unreadable_reason(headers: dict[str, bytes], value: bytes | None) -> tuple[str, str] | None:
    """(error type, message) when a consumed message is a placeholder, else None."""
    if value is not None or UNREADABLE_HEADER not in headers:
        return None
    error_type, _, message = headers[UNREADABLE_HEADER].decode(errors="replace").partition(": ")
    return error_type, message
