"""A replicated Apache Kafka cluster under failure: 3 brokers, replication 3, min ISR 2.

prodcat's topics are created with replication factor 3 (``[topics] replication_factor``);
the cluster's ``min.insync.replicas`` is 2 and every producer waits for all in-sync
replicas (acks=all). A broker is SIGKILLed mid-stream and restarted later: no product is
lost and the worker keeps going without a restart. Then two workers share the stream and a
third joins mid-stream: no product is lost; the rebalance's duplicates are counted.
"""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundles import hashgram_bundle
from harness import (
    PacedPublisher,
    ids_covered,
    read_topic,
    read_until,
    text_products,
    topic_settings,
    wait_for_split,
    worker_env,
)

from prodcat.core.settings import Settings
from prodcat.kafka.clients import admin_client, ensure_topics
from prodcat.kafka.cluster import KafkaCluster
from prodcat.kafka.jars import KafkaJars
from prodcat.worker.child import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.training]

WAIT_S = 240.0  # upper bound of any wait for outcomes
DOWN_S = 10.0  # how long the killed broker stays down


@pytest.fixture(scope="module")
def cluster(kafka_jars: KafkaJars) -> Iterator[KafkaCluster]:
    with KafkaCluster(kafka_jars, nodes=3) as running:
        yield running


@pytest.fixture(scope="module")
def bundle(data_dir: Path) -> Path:
    return hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)


def replicated(
    prefix: str, bootstrap: str, partitions: int = 4
) -> tuple[Settings, dict[str, str], dict[str, str]]:
    """Topics with replication factor 3; the settings and the worker environment for them."""
    settings, topics = topic_settings(prefix)
    settings.topics.replication_factor = 3
    settings.topics.partitions = partitions
    ensure_topics(settings, bootstrap)
    deadline = time.monotonic() + 30  # a new topic's partitions reach every broker's metadata
    while not (replicas := replica_counts(settings, bootstrap, topics["products"])):
        assert time.monotonic() < deadline, "the new topic's partitions were never described"
        time.sleep(0.5)
    assert replicas == {3}
    env = {"PRODCAT_TOPICS__REPLICATION_FACTOR": "3", "PRODCAT_TOPICS__PARTITIONS": str(partitions)}
    return settings, topics, env


def replica_counts(settings: Settings, bootstrap: str, topic: str) -> set[int]:
    admin = admin_client(settings, bootstrap)
    try:
        return {len(p["replica_nodes"]) for p in admin.describe_topics([topic])[0]["partitions"]}
    finally:
        admin.close()


def leaders(settings: Settings, bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> id of the broker leading it."""
    admin = admin_client(settings, bootstrap)
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
    finally:
        admin.close()
    return {p["partition_index"]: p["leader_id"] for p in partitions}


def longest_pause(assignments: list[dict[str, Any]], after: float) -> dict[int, float]:
    """Per source partition: the longest gap between consecutive outcomes (their Kafka
    timestamps) around ``after``, i.e. how long the partition's stream stood still."""
    stamps: dict[int, list[float]] = defaultdict(list)
    for a in assignments:
        stamps[a["value"]["source"]["partition"]].append(a["timestamp"])
    pauses = {}
    for partition, times in stamps.items():
        times.sort()
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > after - 1]
        pauses[partition] = round(max(gaps, default=0.0), 1)
    return pauses


def test_a_broker_killed_mid_stream_loses_nothing_and_the_worker_keeps_going(
    cluster: KafkaCluster, bundle: Path, data_dir: Path, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap
    settings, topics, env = replicated("failover", bootstrap)
    env |= worker_env(tmp_path, topics, "failover")
    products = text_products(data_dir, 1500, skip=500)
    worker = WorkerProcess(bundle, bootstrap, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        pid = worker.process.pid if worker.process else None
        with PacedPublisher(settings, bootstrap, products, chunks=60):
            read_topic(settings, bootstrap, topics["categories"], 200, WAIT_S)
            led = Counter(leaders(settings, bootstrap, topics["products"]).values())
            victim = led.most_common(1)[0][0]  # the broker leading most products partitions
            killed_at = time.time()
            cluster.kill(victim - 1)
            time.sleep(DOWN_S)
            cluster.restart(victim - 1)
            back_after = time.time() - killed_at
        expected = {str(p["product_id"]) for p in products}
        assignments = read_until(
            settings, bootstrap, topics["categories"], ids_covered(expected), WAIT_S
        )
        assert worker.process is not None and worker.process.pid == pid
        assert worker.process.poll() is None, worker.tail()
        worker.wait_ready(WAIT_S)
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    found = Counter(a["value"]["product_id"] for a in assignments)
    assert expected <= set(found), f"{len(expected - set(found))} products lost"
    pauses = longest_pause(assignments, killed_at)
    print(
        f"broker {victim} (leader of {led[victim]} of {sum(led.values())} partitions) killed, "
        f"back after {back_after:.1f} s: longest pause in outcomes per source partition "
        f"{pauses} s; {sum(found.values()) - len(found)} duplicates"
    )


def test_a_third_worker_joining_mid_stream_loses_nothing(
    cluster: KafkaCluster, bundle: Path, data_dir: Path, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap
    # 6 partitions: Faust's sticky assignor gives a newcomer nothing while no worker holds
    # more than ceil(partitions / workers) (4 partitions, 2 -> 3 workers: 2, 2, 0).
    settings, topics, env = replicated("join", bootstrap, partitions=6)
    env |= worker_env(tmp_path, topics, "join")
    products = text_products(data_dir, 900, skip=2000)
    workers = [WorkerProcess(bundle, bootstrap, tmp_path / f"worker{i}.log", env) for i in range(3)]
    try:
        for worker in workers[:2]:
            worker.start()
        wait_for_split(workers[:2], settings.topics.partitions)
        with PacedPublisher(settings, bootstrap, products, chunks=40):
            read_topic(settings, bootstrap, topics["categories"], 200, WAIT_S)
            workers[2].start()
            owned = wait_for_split(workers, settings.topics.partitions)
        expected = {str(p["product_id"]) for p in products}
        assignments = read_until(
            settings, bootstrap, topics["categories"], ids_covered(expected), WAIT_S, linger_s=2
        )
        per_worker = [w.metric("prodcat_events_total") for w in workers]
    finally:
        codes = [w.stop(signal.SIGTERM) for w in workers if w.process is not None]
    assert codes == [0, 0, 0], "\n".join(w.tail() for w in workers)
    assert all(owned) and per_worker[2] > 0, f"the third worker took no part: {owned}"
    found = Counter(a["value"]["product_id"] for a in assignments)
    assert expected <= set(found), f"{len(expected - set(found))} products lost"
    print(
        f"third worker joined: partitions {owned}, outcomes per worker {per_worker}, "
        f"{sum(found.values()) - len(found)} duplicates of {len(products)} products"
    )
