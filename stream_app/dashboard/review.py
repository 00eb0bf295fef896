"""The review queue: unsure assignments first, plus a random audit of confident ones.

An assignment with ``needs_review`` enters the queue; so does a confident one whose source
event id hashes below ``[dashboard] audit_rate`` (deterministic, so every dashboard samples
the same products, and the audit's accuracy is an unbiased estimate for confident
assignments). A decision on the corrections topic, from this dashboard or another, takes
the product out. The queue holds at most ``[dashboard] queue_size`` products; beyond that
the oldest leaves it (counted as ``overflowed``: still undecided, but no longer shown).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prodcat.core.events import parse_time
from prodcat.dashboard.store import ProductView

NEEDS_REVIEW = "needs_review"
AUDIT = "audit"
FEED = "feed"
DECIDED_MEMORY = 100_000  # products whose latest decision time is remembered


@dataclass
class Item:
    """One assignment with its product, as the feed and the queue show it."""

    assignment: dict[str, Any]
    view: ProductView | None
    queue: str | None = None  # NEEDS_REVIEW, AUDIT, or None when not queued

    @property
    def event_id(self) -> str:
        return str(self.assignment["source_event_id"])

    @property
    def product_id(self) -> str:
        return str(self.assignment["product_id"])

    @property
    def weakest(self) -> float:
        return min(step["score"] for step in self.assignment["category_path"])

    def labels(self) -> dict[str, str]:
        return {step["level"]: step["label"] for step in self.assignment["category_path"]}


def audited(source_event_id: str, rate: float) -> bool:
    """Whether a confident assignment is drawn for audit (same answer everywhere)."""
    digest = hashlib.sha256(f"audit:{source_event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


class Taxonomy:
    """The category paths a reviewer may choose: those the served model knows."""

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self.levels: list[str] = list(manifest["levels"])
        self.paths: list[list[str]] = [list(p) for p in manifest["taxonomy"]["paths"]]
        self._known = {tuple(p) for p in self.paths}

    def check(self, levels: Sequence[str], labels: Sequence[str]) -> str | None:
        """Why ``labels`` (for ``levels``) is not a path of the taxonomy, or None if it is."""
        if list(levels) != self.levels:
            return f"the assignment's levels {list(levels)} are not the model's {self.levels}"
        if tuple(labels) not in self._known:
            return f"{' > '.join(labels)} is not a category path of the model's taxonomy"
        return None


class ReviewQueue:
    """Queued items by product id, plus when each product was last decided."""

    def __init__(self, size: int, audit_rate: float) -> None:
        self.size = max(1, size)
        self.audit_rate = audit_rate
        self._items: OrderedDict[str, Item] = OrderedDict()
        self._decided: OrderedDict[str, float] = OrderedDict()  # product id -> decided at
        self.overflowed = 0

    def offer(self, item: Item) -> str | None:
        """Queue ``item`` if it needs review or is drawn for audit; returns its queue."""
        assignment = item.assignment
        decided = self._decided.get(item.product_id)
        if decided is not None and decided >= parse_time(assignment["classified_at"]):
            return None  # a reviewer already decided after this assignment
        if assignment["needs_review"]:
            item.queue = NEEDS_REVIEW
        elif audited(item.event_id, self.audit_rate):
            item.queue = AUDIT
        else:
            return None
        self._items.pop(item.product_id, None)
        self._items[item.product_id] = item
        while len(self._items) > self.size:
            _, gone = self._items.popitem(last=False)
            gone.queue = None
            self.overflowed += 1
        return item.queue

    def resolve(self, correction: Mapping[str, Any]) -> Item | None:
        """Take the corrected product out of the queue (if the decision is about it)."""
        product_id = str(correction["product_id"])
        decided_at = parse_time(correction["decided_at"])
        if self._decided.get(product_id, 0.0) < decided_at:
            self._decided[product_id] = decided_at
            self._decided.move_to_end(product_id)
            while len(self._decided) > DECIDED_MEMORY:
                self._decided.popitem(last=False)
        item = self._items.get(product_id)
        if item is None or parse_time(item.assignment["classified_at"]) > decided_at:
            return None
        del self._items[product_id]
        item.queue = None
        return item

    def get(self, event_id: str) -> Item | None:
        return next((i for i in self._items.values() if i.event_id == event_id), None)

    def listing(self) -> Iterator[Item]:
        """Unsure products first (weakest score first), then the audit sample (oldest first)."""
        unsure = sorted(
            (i for i in self._items.values() if i.queue == NEEDS_REVIEW), key=lambda i: i.weakest
        )
        yield from unsure
        yield from (i for i in self._items.values() if i.queue == AUDIT)

    def backlog(self) -> dict[str, int]:
        counts = {NEEDS_REVIEW: 0, AUDIT: 0}
        for item in self._items.values():
            counts[item.queue or NEEDS_REVIEW] += 1
        return counts

    def __len__(self) -> int:
        return len(self._items)
