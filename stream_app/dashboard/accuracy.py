"""The model's accuracy on reviewed products, over time, from reviewers' decisions.

Each decision says whether the model's label was right at each level (accept: all right;
correct: the levels whose label changed were wrong). Products in the review queue because
the model was unsure are a biased sample (mostly hard ones), so the accuracy is also given
for the audit sample alone (confident assignments drawn at random): that one estimates the
accuracy of everything the model publishes confidently.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prodcat.core.events import parse_time

MAX_DECISIONS = 20_000  # remembered decisions (a few dozen bytes each)
BUCKETS = 24  # points on the chart, spread over the decisions' time span


@dataclass(frozen=True)
class Decision:
    at: float  # seconds since the epoch
    queue: str
    fingerprint: str
    right: tuple[bool, ...]  # per level, top level first

    @property
    def path_right(self) -> bool:
        return all(self.right)


def decision_of(correction: Mapping[str, Any]) -> Decision:
    new = {step["level"]: step["label"] for step in correction["new_path"]}
    right = tuple(new.get(step["level"]) == step["label"] for step in correction["old_path"])
    at = parse_time(correction["decided_at"])
    return Decision(at, correction["queue"], correction["model"]["fingerprint"], right)


class ReviewedAccuracy:
    """Decisions remembered (bounded), summarised per level and as a series over time."""

    def __init__(self, max_decisions: int = MAX_DECISIONS) -> None:
        self.decisions: deque[Decision] = deque(maxlen=max_decisions)
        self.levels: list[str] = []

    def add(self, correction: Mapping[str, Any]) -> Decision:
        decision = decision_of(correction)
        if not self.levels:
            self.levels = [step["level"] for step in correction["old_path"]]
        self.decisions.append(decision)
        return decision

    def accuracy(self, queue: str | None = None) -> dict[str, Any]:
        """Share right per level and for the whole path, over all remembered decisions."""
        return _summary(
            [d for d in self.decisions if queue is None or d.queue == queue], self.levels
        )

    def series(self) -> list[dict[str, Any]]:
        """Path accuracy per time bucket (all decisions and the audit sample alone)."""
        if not self.decisions:
            return []
        ordered = sorted(self.decisions, key=lambda d: d.at)
        start, end = ordered[0].at, ordered[-1].at
        width = max((end - start) / BUCKETS, 1.0)
        buckets: dict[int, list[Decision]] = {}
        for decision in ordered:
            buckets.setdefault(int((decision.at - start) // width), []).append(decision)
        series = []
        for index, items in sorted(buckets.items()):
            audit = [d for d in items if d.queue == "audit"]
            series.append(
                {
                    "at": start + (index + 0.5) * width,
                    "n": len(items),
                    "accuracy": sum(d.path_right for d in items) / len(items),
                    "audit_n": len(audit),
                    "audit_accuracy": (
                        sum(d.path_right for d in audit) / len(audit) if audit else None
                    ),
                }
            )
        return series

    def report(self) -> dict[str, Any]:
        return {
            "all": self.accuracy(),
            "audit": self.accuracy("audit"),
            "needs_review": self.accuracy("needs_review"),
            "series": self.series(),
        }


def _summary(decisions: list[Decision], levels: list[str]) -> dict[str, Any]:
    n = len(decisions)
    if not n:
        return {"n": 0, "path": None, "levels": {level: None for level in levels}}
    return {
        "n": n,
        "path": sum(d.path_right for d in decisions) / n,
        "levels": {
            level: sum(d.right[i] for d in decisions if i < len(d.right)) / n
            for i, level in enumerate(levels)
        },
    }
