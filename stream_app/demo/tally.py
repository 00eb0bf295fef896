"""The demo's live tally: outcomes as they arrive, latencies, accuracy, dead letters."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prodcat.core.stats import percentiles


@dataclass
class Tally:
    """Outcomes as they arrive, and the summary at the end."""

    levels: list[str]
    rate: float | None = None  # events/s the products were published at; None = one burst
    sent_at: dict[bytes, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # publish -> outcome received
    worker_ms: list[float] = field(default_factory=list)  # consumed -> assignment published
    correct: Counter[str] = field(default_factory=Counter)
    scored: int = 0
    assigned: int = 0
    decided_by: Counter[str] = field(default_factory=Counter)  # text / full (the cascade)
    dead: Counter[str] = field(default_factory=Counter)
    first_sent: float | None = None
    last_outcome: float | None = None

    def sent(self, key: bytes) -> None:
        now = time.time()
        self.sent_at[key] = now
        self.first_sent = self.first_sent or now

    def assignment(self, value: dict[str, Any], received: float, truth: dict[str, str]) -> bool:
        """Record one assignment; True when every level matches the known labels."""
        self._arrived(value["product_id"].encode(), received)
        self.assigned += 1
        self.decided_by[value.get("decided_by", "full")] += 1
        if value.get("latency_ms") is not None:
            self.worker_ms.append(value["latency_ms"])
        if not truth:
            return False
        self.scored += 1
        path = {c["level"]: c["label"] for c in value["category_path"]}
        hits = [path.get(level) == truth.get(level) for level in self.levels]
        for level, hit in zip(self.levels, hits, strict=True):
            self.correct[level] += hit
        return all(hits)

    def dead_letter(self, key: bytes | None, stage: str, reason: str, received: float) -> None:
        if key is not None:
            self._arrived(key, received)
        self.dead[f"{stage}: {reason}"] += 1

    @property
    def outcomes(self) -> int:
        return self.assigned + sum(self.dead.values())

    def _arrived(self, key: bytes, received: float) -> None:
        sent = self.sent_at.get(key)
        if sent is not None:
            self.latencies_ms.append((received - sent) * 1000)
        self.last_outcome = max(received, self.last_outcome or received)

    def summary(self) -> dict[str, Any]:
        elapsed = (self.last_outcome or 0) - (self.first_sent or 0)
        return {
            "published": "burst" if self.rate is None else f"{self.rate:g} events/s",
            "outcomes": self.outcomes,
            "assigned": self.assigned,
            "dead_letters": sum(self.dead.values()),
            "decided_by": dict(self.decided_by),
            "events_per_s": round(self.outcomes / elapsed, 1) if elapsed > 0 else None,
            "latency_ms": percentiles(self.latencies_ms),
            "worker_latency_ms": percentiles(self.worker_ms),
            "accuracy": {
                level: round(self.correct[level] / self.scored, 4) if self.scored else None
                for level in self.levels
            },
            "dead_letters_by_reason": dict(self.dead.most_common()),
        }
