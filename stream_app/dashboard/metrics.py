"""The dashboard's Prometheus metrics (its /metrics), in a registry of its own.

The split between processes: what every assignment changes (assignments per level and
label, the confidence histogram) is counted by the worker that made it, exactly and
whether or not a dashboard runs. What needs the whole stream or the reviewers (the drift
score over a window of every worker's assignments against the training split, the review
backlog, decisions and accuracy on reviewed products) comes from the dashboard, which
reads the whole categories and corrections topics; a worker sees only its partitions.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from prodcat.dashboard.review import AUDIT, FEED, NEEDS_REVIEW


class DashboardMetrics:
    content_type = "text/plain"

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.drift = Gauge(
            "prodcat_drift_psi",
            "Population stability index of the labels of the last [dashboard] drift_window "
            "assignments against the model's training split, per taxonomy level.",
            ["level"],
            registry=r,
        )
        self.drift_window = Gauge(
            "prodcat_drift_window_assignments",
            "Assignments in the drift window (the score is only set from 100 on).",
            registry=r,
        )
        self.backlog = Gauge(
            "prodcat_review_backlog",
            "Products waiting in the review queue, by why they are there.",
            ["queue"],
            registry=r,
        )
        self.overflowed = Counter(
            "prodcat_review_overflowed",
            "Undecided products pushed out of the full review queue ([dashboard] queue_size).",
            registry=r,
        )
        self.decisions = Counter(
            "prodcat_review_decisions",
            "Reviewers' decisions seen on the corrections topic, by decision and queue.",
            ["decision", "queue"],
            registry=r,
        )
        self.reviewed_accuracy = Gauge(
            "prodcat_reviewed_accuracy",
            "Share of reviewed products whose whole path the model had right, by queue "
            "(audit: a random sample of confident assignments).",
            ["queue"],
            registry=r,
        )
        for queue in (NEEDS_REVIEW, AUDIT):
            self.backlog.labels(queue).set(0)
        for decision in ("accept", "correct"):
            for queue in (NEEDS_REVIEW, AUDIT, FEED):
                self.decisions.labels(decision, queue)

    def render(self) -> bytes:
        return generate_latest(self.registry)
