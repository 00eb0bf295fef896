"""Item 5: what exactly-once costs, measured on a real single-node Apache Kafka.

The same worker, model and products twice: at least once (the default) and exactly once
(``[worker] processing_guarantee``). Per mode, a burst's throughput (outcomes/s, as in item
2) and the latency at a fixed rate, half the at-least-once throughput, from publish to the
outcome being *visible*: a read_uncommitted reader for at least once, a read_committed one for
exactly once, which sees an outcome only when its transaction commits (every
``[worker] commit_interval_s``). The embedded broker has no transactions, so this section
starts Apache Kafka from the fetched jars (``prodcat broker --engine kafka --fetch``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import stream
from bench.data import as_messages, cycle
from prodcat.core.settings import Settings

MODES = {"at_least_once": "read_uncommitted", "exactly_once": "read_committed"}


@contextlib.contextmanager
def kafka(settings: Settings) -> Iterator[str]:
    """A one-node Apache Kafka for the block; its bootstrap address."""
    from prodcat.kafka.cluster import KafkaCluster
    from prodcat.kafka.jars import KafkaJars

    with KafkaCluster(KafkaJars.pinned(settings.cache_dir)) as cluster:
        yield cluster.bootstrap


def measure(
    settings: Settings,
    bootstrap: str,
    plan: Any,
    products: list[Any],
    workdir: Path,
    progress: Callable[[str, int], Callable[[int], None]],
) -> dict[str, Any]:
    """Burst throughput and latency at a fixed rate, per mode, and their ratios."""
    measured = as_messages(cycle(products, plan.products))
    warmup = as_messages(cycle(products, plan.warmup, len(measured)))
    found: dict[str, Any] = {}
    for mode, isolation in MODES.items():
        with (
            stream.worker_target(
                settings,
                bootstrap,
                plan.model,
                workdir,
                plan.providers,
                name=f"worker-{mode}",
                extra_env={"PRODCAT_WORKER__PROCESSING_GUARANTEE": mode},
            ) as target,
            stream.Runner(target, plan.timeout_s, isolation) as runner,
        ):
            burst = stream.throughput(
                runner, warmup, measured, progress(f"7 {mode} burst", len(measured))
            )
            reference = found["at_least_once"]["burst"] if found else burst
            rate = reference["items_per_s"] / 2
            count = max(10, math.ceil(rate * plan.latency_seconds))
            paced = as_messages(cycle(products, count, len(measured) + len(warmup)))
            latency = stream.latency(runner, paced, rate, progress(f"7 {mode} latency", count))
            latency.pop("latencies_ms")
            found[mode] = {"burst": burst, "latency": latency}
    alo, eos = found["at_least_once"], found["exactly_once"]
    found["exactly_once_over_at_least_once"] = {
        "items_per_s": _ratio(eos["burst"]["items_per_s"], alo["burst"]["items_per_s"]),
        "cpu_ms_per_item": _ratio(
            eos["burst"].get("cpu_ms_per_item"), alo["burst"].get("cpu_ms_per_item")
        ),
        "p50_ms": _ratio(eos["latency"]["p50_ms"], alo["latency"]["p50_ms"]),
    }
    return found


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None
