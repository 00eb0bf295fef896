"""The worker's memory ceiling (``[worker] memory_limit_mb``), enforced at admission.

Memory in a worker grows with what it holds: events consumed but not yet acknowledged
(their raw bytes, decoded JSON, photos, features). So the ceiling is enforced where events
enter, by the :class:`MemoryBudget` the dispatcher asks before it takes an event:

* the raw bytes of in-flight events may use at most ``INFLIGHT_SHARE`` of the limit (the
  rest is for the model, the runtime and the decoded forms, a photo decodes to several
  times its JPEG size);
* no event is admitted while the process's resident set (RSS, read from
  ``/proc/self/statm``) is over the limit, whatever the byte count says; this catches
  what the byte count cannot see (a plugin's caches, allocator fragmentation).

Both waits are back-pressure: Kafka keeps the rest, nothing is dropped. With nothing in
flight an event is always admitted, so one event larger than the budget, or an RSS that
never shrinks back (CPython keeps freed arenas), slows the worker to one event at a time
instead of stopping it. What the budget does not cover: Faust's prefetch buffer
(``stream_buffer_maxsize`` = ``queue_size`` events) and aiokafka's fetch buffers (up to
``max_message_bytes`` per partition); size the limit with them in mind (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

INFLIGHT_SHARE = 0.25
RECHECK_S = 0.2  # RSS changes without any release to wake us: look again this often
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process in bytes (0 where /proc is not available)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryBudget:
    """Admits events while their bytes fit the in-flight budget and RSS is under the limit."""

    def __init__(
        self,
        limit_bytes: int,
        on_wait: Callable[[str], None] = lambda reason: None,
        rss: Callable[[], int] = rss_bytes,
    ) -> None:
        if limit_bytes < 1:
            raise ValueError(f"memory limit must be positive, got {limit_bytes}")
        self.limit = limit_bytes
        self.budget = int(limit_bytes * INFLIGHT_SHARE)
        self.held = 0  # raw bytes of admitted, not yet released events
        self.count = 0  # admitted, not yet released events
        self._on_wait = on_wait  # told why, each time an admission has to wait
        self._rss = rss
        self._released = asyncio.Event()

    def blocker(self, size: int) -> str | None:
        """Why an event of ``size`` bytes cannot be admitted now ("bytes"/"memory"), or None."""
        if self.count == 0:
            return None
        if self.held + size > self.budget:
            return "bytes"
        if self._rss() > self.limit:
            return "memory"
        return None

    async def acquire(self, size: int) -> None:
        """Wait until an event of ``size`` bytes may be admitted, then count it as held."""
        reason = self.blocker(size)
        if reason is not None:
            self._on_wait(reason)
        while reason is not None:
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), RECHECK_S)
            reason = self.blocker(size)
        self.held += size
        self.count += 1

    def release(self, size: int) -> None:
        """An admitted event finished (acked or failed): its bytes are free again."""
        self.held -= size
        self.count -= 1
        self._released.set()
