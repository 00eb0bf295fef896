"""The worker's Prometheus figures as the bench reads them: scraped, differenced, combined.

A burst's figures are the difference of two scrapes of ``/metrics`` (before and after);
several bursts of one pipeline (bench/run.py lets the pipelines take turns) combine into
one result with :func:`merged`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(text: str) -> dict[str, Any]:
    """Histograms as {"<metric>/<graph>": {"buckets": {le: cumulative}, "sum", "count"}} (the
    ``/<graph>`` part only when labelled by graph) and counters as {"<sample>/<label value>":
    value} (``prodcat_decisions_total/text``)."""
    found: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            for sample in family.samples:
                if sample.name.endswith("_total") and len(sample.labels) == 1:
                    found[f"{sample.name}/{next(iter(sample.labels.values()))}"] = sample.value
            continue
        if family.type != "histogram":
            continue
        for sample in family.samples:
            key = family.name + (f"/{sample.labels['graph']}" if "graph" in sample.labels else "")
            entry = found.setdefault(key, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                entry["buckets"][sample.labels["le"]] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
    return found


def histogram_delta(before: dict[str, Any], after: dict[str, Any], name: str) -> dict[str, Any]:
    """Counts per bucket (not cumulative), count and mean of ``name`` between two scrapes."""
    b, a = before.get(name), after.get(name)
    if not a:
        return {"buckets": {}, "count": 0, "mean": None}
    b = b or {"buckets": {}, "sum": 0.0, "count": 0.0}
    per_bucket, previous = {}, 0.0
    for le, cumulative in a["buckets"].items():
        total = cumulative - b["buckets"].get(le, 0.0)
        per_bucket[le] = int(round(total - previous))
        previous = total
    count = a["count"] - b["count"]
    mean = (a["sum"] - b["sum"]) / count if count else None
    return {"buckets": per_bucket, "count": int(count), "mean": mean}


def merged(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One pipeline's figures over several bursts (:func:`throughput` results) as one."""
    items = sum(r["items"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    cpu = [r["cpu_ms_per_item"] for r in rounds]
    result: dict[str, Any] = {
        "items": items,
        "seconds": round(seconds, 3),
        "items_per_s": sum(r["items"] - 1 for r in rounds) / seconds if seconds > 0 else None,
        "cpu_ms_per_item": (
            sum(c * r["items"] for c, r in zip(cpu, rounds, strict=True)) / items
            if None not in cpu
            else None
        ),
        "rounds_items_per_s": [r["items_per_s"] for r in rounds],
    }
    if all("graphs" in r for r in rounds):
        result["graphs"] = {
            graph: _merged_graph([r["graphs"][graph] for r in rounds])
            for graph in rounds[0]["graphs"]
        }
        result["decided_by"] = {
            path: sum(r["decided_by"][path] for r in rounds) for path in rounds[0]["decided_by"]
        }
    return result


def _merged_graph(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A graph's batch-size histogram and mean inference time over several bursts."""
    batches = [p["batch_size"] for p in parts]
    count = sum(b["count"] for b in batches)
    buckets: dict[str, int] = {}
    for b in batches:
        for le, n in b["buckets"].items():
            buckets[le] = buckets.get(le, 0) + n

    def weighted(values: list[float | None]) -> float | None:
        known = [(v, b["count"]) for v, b in zip(values, batches, strict=True) if v is not None]
        total = sum(n for _, n in known)
        return sum(v * n for v, n in known) / total if total else None

    return {
        "batch_size": {
            "buckets": buckets,
            "count": count,
            "mean": weighted([b["mean"] for b in batches]),
        },
        "inference_ms_mean": weighted([p["inference_ms_mean"] for p in parts]),
    }
