"""Workers interrupted three times while 3,000 products flow, on both brokers, in both modes.

Each run starts a worker, lets it publish outcomes, interrupts it at a random moment
(SIGKILL, or SIGTERM's drain), and starts the next, three times, then a last worker finishes
the stream. At least once (default): every product is assigned; SIGKILL may add duplicates,
each carrying the original ``source_event_id``; SIGTERM may not (run on Apache Kafka; on the
embedded broker the drain is tests/test_worker_e2e.py's). Exactly once (Apache Kafka only):
a ``read_committed`` consumer of ``categories`` and ``products.dlq`` sees every product
exactly once, whatever the kill interrupted. The duplicates per crash are printed
(docs/operations.md quotes them).
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from bundles import hashgram_bundle
from click.testing import CliRunner
from harness import (
    PacedPublisher,
    ids_covered,
    read_topic,
    read_until,
    text_products,
    topic_settings,
    worker_env,
)

from prodcat.cli.main import cli
from prodcat.kafka.clients import ensure_topics
from prodcat.worker.child import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.training]

CRASH_PRODUCTS = 3000
INTERRUPTIONS = 3
WAIT_S = 240.0  # upper bound of any wait for outcomes; a healthy run needs a fraction
CASES = {
    "tansu-sigkill": ("embedded_broker", signal.SIGKILL, "at_least_once"),
    "kafka-sigkill": ("kafka_broker", signal.SIGKILL, "at_least_once"),
    "kafka-sigterm": ("kafka_broker", signal.SIGTERM, "at_least_once"),
    "kafka-sigkill-exactly-once": ("kafka_broker", signal.SIGKILL, "exactly_once"),
}


@pytest.fixture(scope="module")
def bundle(data_dir: Path) -> Path:
    return hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)


@pytest.fixture(scope="module")
def products(data_dir: Path) -> list[dict[str, Any]]:
    return text_products(data_dir, CRASH_PRODUCTS)


@pytest.mark.parametrize("case", list(CASES))
def test_worker_interrupted_three_times_loses_nothing(
    case: str,
    bundle: Path,
    products: list[dict[str, Any]],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    fixture, sig, guarantee = CASES[case]
    bootstrap = request.getfixturevalue(fixture)
    exactly_once = guarantee == "exactly_once"
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    settings, topics = topic_settings(f"crash-{case}")
    ensure_topics(settings, bootstrap)
    env = worker_env(tmp_path, topics, f"crash-{case}")
    env["PRODCAT_WORKER__PROCESSING_GUARANTEE"] = guarantee
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    stops: list[tuple[float, int]] = []
    started: list[WorkerProcess] = []
    try:
        with PacedPublisher(settings, bootstrap, products, chunks=30):
            for run in range(INTERRUPTIONS):
                worker = WorkerProcess(bundle, bootstrap, tmp_path / f"w{run}.log", env)
                started.append(worker.start())
                worker.wait_ready()
                read_topic(settings, bootstrap, topics["categories"], 1, WAIT_S, isolation)
                moment = rng.uniform(0.2, 2.5)
                time.sleep(moment)
                stops.append((round(moment, 2), worker.stop(sig)))
                if sig == signal.SIGTERM:
                    assert stops[-1][1] == 0, worker.tail()
            last = WorkerProcess(bundle, bootstrap, tmp_path / "last.log", env)
            started.append(last.start())
            last.wait_ready()
        expected = {str(p["product_id"]) for p in products}
        assignments = read_until(
            settings,
            bootstrap,
            topics["categories"],
            ids_covered(expected),
            WAIT_S,
            isolation,
            linger_s=3,  # late outcomes (duplicates) of the last worker land too
        )
        letters = read_topic(settings, bootstrap, topics["dlq"], 10**9, 2, isolation)
        assert last.get("/health")[0] == 200
        assert last.stop(signal.SIGTERM) == 0, last.tail()
    finally:
        for worker in started:
            worker.stop(signal.SIGKILL)  # only those a failure left running
    found = Counter(a["value"]["product_id"] for a in assignments)
    missing = expected - set(found)
    assert not missing, f"{len(missing)} products never assigned (seed {seed}, stops {stops})"
    events_of: dict[str, set[str]] = defaultdict(set)
    for a in assignments:
        events_of[a["value"]["product_id"]].add(a["value"]["source_event_id"])
    assert all(len(ids) == 1 for ids in events_of.values()), "a duplicate changed its event id"
    duplicates = sum(found.values()) - len(found)
    print(
        f"{case}: {len(products)} products, {len(assignments)} assignments, {duplicates} "
        f"duplicates ({duplicates / INTERRUPTIONS:.0f} per interruption); stops after "
        f"(s, exit) {stops}; seed {seed}"
    )
    assert letters == []
    if sig == signal.SIGTERM or exactly_once:
        assert duplicates == 0, f"stops {stops}, seed {seed}"


def test_exactly_once_is_refused_where_there_are_no_transactions(
    bundle: Path, embedded_broker: str
) -> None:
    """One line, exit 1: with --embedded before starting it, and on a running Tansu."""
    env = {"PRODCAT_WORKER__PROCESSING_GUARANTEE": "exactly_once"}
    runner = CliRunner()
    for where in (["--embedded"], ["--broker", embedded_broker]):
        result = runner.invoke(cli, ["worker", "--model", str(bundle), *where], env=env)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        (line,) = result.output.strip().splitlines()
        assert "exactly_once needs Apache Kafka's transactions" in line
        assert "processing_guarantee = at_least_once" in line
