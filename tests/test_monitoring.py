"""The worker's /metrics body: prodcat's own metrics beside the standard Python collectors."""

from __future__ import annotations

from prodcat.worker.monitoring import WorkerMetrics


def test_standard_process_and_gc_collectors_are_exported() -> None:
    body = WorkerMetrics().render().decode()
    names = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line[:1] != "#"}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert {"python_gc_objects_collected_total", "python_info"} <= names
    assert "prodcat_events_total" in body  # declared, even before the first event


def test_two_workers_in_one_process_do_not_clash() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.events.labels(outcome="assigned", stage="").inc()
    assert b'prodcat_events_total{outcome="assigned",stage=""} 1.0' in first.render()
    assert b'outcome="assigned"' not in second.render()
