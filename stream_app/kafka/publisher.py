"""Send source rows to Kafka as product events: key, headers, pacing and an honest count.

Kept apart from the CLI so tests and the demo publish through exactly the code users run.
Rows that are not valid events are counted as rejected and never sent; a send the broker
refuses is counted as failed. Nothing is dropped without being counted and reported.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prodcat.core.events import CONTENT_TYPE, encode
from prodcat.sources import SourceRow


@dataclass
class PublishSummary:
    """What a publish run did; ``problems`` lists ``(line, reason)`` of every row not sent."""

    sent: int = 0
    rejected: int = 0
    failed: int = 0
    seconds: float = 0.0
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "rejected": self.rejected,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "problems": [{"line": line, "reason": reason} for line, reason in self.problems],
        }


def new_traceparent() -> str:
    """A W3C traceparent starting a fresh, sampled trace: ``00-<trace id>-<span id>-01``."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def event_headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka headers of a product event: its id, content type and a new trace."""
    return [
        ("event_id", event["event_id"].encode()),
        ("content-type", CONTENT_TYPE.encode()),
        ("traceparent", new_traceparent().encode()),
    ]


class Pacer:
    """Sleep just enough to keep an average of ``rate`` events per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at = max(self.next_at, time.monotonic() - 1.0) + self.interval


def publish_rows(
    producer: Any,
    rows: Iterable[SourceRow],
    topic: str,
    *,
    rate: float | None = None,
    on_row: Callable[[SourceRow, str | None], None] | None = None,
) -> PublishSummary:
    """Send every valid row's event to ``topic`` (key = product_id) and wait for the acks.

    ``on_row(row, problem)`` is called once per row, ``problem`` being why it was not sent
    (``None`` for sent rows), for progress bars and live reports. A send failure reported
    later by the broker is counted in ``failed`` and listed in ``problems``.
    """
    summary = PublishSummary()
    lock = threading.Lock()
    pacer = Pacer(rate)
    started = time.monotonic()

    def acked(_metadata: Any) -> None:
        with lock:
            summary.sent += 1

    def refused(line: int) -> Callable[[BaseException], None]:
        def record(exc: BaseException) -> None:
            with lock:
                summary.failed += 1
                summary.problems.append((line, f"broker refused the event: {exc}"))

        return record

    for row in rows:
        problem = row.error if row.event is None else None
        if row.event is not None:
            pacer.wait()
            try:
                future = producer.send(
                    topic,
                    key=row.event["product_id"].encode(),
                    value=encode(row.event),
                    headers=event_headers(row.event),
                )
            except Exception as exc:  # noqa: BLE001 - e.g. MessageSizeTooLargeError: skip row
                problem = f"could not send: {exc}"
            else:
                future.add_callback(acked)
                future.add_errback(refused(row.line))
        if problem is not None:
            with lock:
                summary.rejected += 1
                summary.problems.append((row.line, problem))
        if on_row is not None:
            on_row(row, problem)
    producer.flush()
    summary.seconds = time.monotonic() - started
    summary.problems.sort()
    return summary
