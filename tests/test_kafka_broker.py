"""Real Apache Kafka from the project's own files, and what only a real Kafka can check.

``prodcat broker --engine kafka`` with missing Java, Maven or jars fails in one line naming
the fix; ``--nodes 3`` starts a replicated cluster and removes its data on SIGTERM (a
``--data-dir`` cluster coming back with its data: the outage test in
tests/test_reliability.py). Then the lag a worker exports
(``prodcat_backlog_events``, end offset minus committed offset per partition) is checked
against what Kafka's admin API says for the group, while commits are held back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import hashgram_bundle
from click.testing import CliRunner
from harness import (
    LocalServer,
    QuietHandler,
    read_topic,
    text_products,
    topic_settings,
    worker_env,
)

from prodcat.cli.main import cli
from prodcat.core.settings import Settings
from prodcat.kafka.clients import admin_client, ensure_topics, producer
from prodcat.kafka.jars import KafkaJars
from prodcat.worker.child import PRODCAT, WorkerProcess

pytestmark = pytest.mark.integration

WAIT_S = 120.0  # upper bound of any wait
GROUP = "lag"


def one_line_error(args: list[str], **env: str) -> str:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    return line


def test_missing_java_maven_or_jars_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = str(tmp_path / "cache")
    assert "prodcat broker --engine kafka --fetch" in one_line_error(
        ["broker", "--engine", "kafka"], PRODCAT_CACHE_DIR=cache
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn there
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert "Maven (mvn) not found" in one_line_error(
        ["broker", "--engine", "kafka", "--fetch"], PRODCAT_CACHE_DIR=cache
    )
    assert "no java found" in one_line_error(["broker", "--engine", "kafka"])


def test_three_nodes_from_the_cli_replicate_and_are_removed_on_sigterm(
    kafka_jars: KafkaJars,
) -> None:
    process = subprocess.Popen(
        [PRODCAT, "broker", "--engine", "kafka", "--nodes", "3", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        bootstrap = ready["bootstrap"]
        assert len(bootstrap.split(",")) == 3 and len(ready["pids"]) == 3
        settings = Settings()
        settings.topics.products = "replicated"
        settings.topics.replication_factor = 3
        ensure_topics(settings, bootstrap)
        admin = admin_client(settings, bootstrap)
        try:
            brokers = admin.describe_cluster()["brokers"]
            partitions = admin.describe_topics(["replicated"])[0]["partitions"]
        finally:
            admin.close()
        assert len(brokers) == 3
        assert {len(p["isr_nodes"]) for p in partitions} == {3}
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0
    assert not Path(ready["data_dir"]).exists()
    for pid in ready["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


class GateServer(LocalServer):
    """Serves a photo only once released: events waiting for it hold their commits back."""

    def __init__(self, photo: bytes) -> None:
        self.released = released = threading.Event()

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                released.wait(WAIT_S)
                self.reply(200, "image/jpeg", photo)

        super().__init__(Handler)

    def __exit__(self, *exc_info: object) -> None:
        self.released.set()
        super().__exit__(*exc_info)


@pytest.fixture
def gate(data_dir: Path) -> Iterator[GateServer]:
    photo = next((data_dir / "fashion" / "images").glob("*.jpg")).read_bytes()
    with GateServer(photo) as server:
        yield server


def admin_lag(settings: Settings, bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """End offset minus committed offset per partition, as Kafka's admin API reports them."""
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec

    admin = admin_client(settings, bootstrap)
    try:
        committed = admin.list_group_offsets(group)[group]
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
    finally:
        admin.close()
    return {
        tp.partition: ends[tp].offset - (committed[tp].offset if tp in committed else 0)
        for tp in partitions
    }


def worker_lag(worker: WorkerProcess, topic: str, partitions: int) -> dict[int, int]:
    return {
        p: int(worker.metric("prodcat_backlog_events", {"topic": topic, "partition": str(p)}))
        for p in range(partitions)
    }


def send_to(settings: Settings, bootstrap: str, events: list[tuple[int, dict[str, Any]]]) -> None:
    client = producer(settings, bootstrap)
    try:
        for partition, event in events:
            key = str(event["product_id"]).encode()
            client.send(settings.topics.products, orjson.dumps(event), key, partition=partition)
        client.flush(30)
    finally:
        client.close()


def test_the_lag_metric_is_what_kafka_reports_for_the_group(
    kafka_broker: str, gate: GateServer, data_dir: Path, tmp_path: Path
) -> None:
    """Per partition, 10 events done, then one waiting for its photo and five after it:
    the commit stops at the waiting one, so Kafka reports a lag of 6 per partition, and so
    must the worker; once the photo comes, both go to 0."""
    bundle = hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)
    settings, topics = topic_settings("lag")
    ensure_topics(settings, kafka_broker)
    parts = settings.topics.partitions
    env = worker_env(tmp_path, topics, GROUP) | {
        "PRODCAT_IMAGES__ALLOW_HOSTS": f"127.0.0.1:{gate.port}",
        "PRODCAT_IMAGES__FETCH_TIMEOUT_S": str(WAIT_S),
        "PRODCAT_WORKER__DEADLINE_MS": str(WAIT_S * 2000),
    }
    events = text_products(data_dir, 16 * parts, skip=4000)
    first = [(i % parts, e) for i, e in enumerate(events[: 10 * parts])]
    photo = {p: {"url": gate.url(f"/{p}.jpg")} for p in range(parts)}
    held = [(p, {**events[10 * parts + p], "image": photo[p]}) for p in range(parts)]
    after = [(i % parts, e) for i, e in enumerate(events[11 * parts :])]
    worker = WorkerProcess(bundle, kafka_broker, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        send_to(settings, kafka_broker, first)
        read_topic(settings, kafka_broker, topics["categories"], len(first), WAIT_S)
        caught_up = {p: 0 for p in range(parts)}
        views = wait_for_lags(worker, settings, kafka_broker, caught_up)
        assert views == {"kafka": caught_up, "worker": caught_up}, views
        send_to(settings, kafka_broker, held + after)  # per partition: 1 held, then 5
        stuck = {p: 6 for p in range(parts)}
        views = wait_for_lags(worker, settings, kafka_broker, stuck)
        assert views == {"kafka": stuck, "worker": stuck}, views
        gate.released.set()
        views = wait_for_lags(worker, settings, kafka_broker, caught_up)
        assert views == {"kafka": caught_up, "worker": caught_up}, views
    finally:
        gate.released.set()
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()


def wait_for_lags(
    worker: WorkerProcess, settings: Settings, bootstrap: str, wanted: dict[int, int]
) -> dict[str, dict[int, int]]:
    """Kafka's and the worker's view of the lag, once both are ``wanted`` (commits come
    every second) or the time is up."""
    topic = settings.topics.products
    deadline = time.monotonic() + WAIT_S
    while True:
        views = {
            "kafka": admin_lag(settings, bootstrap, GROUP, topic),
            "worker": worker_lag(worker, topic, settings.topics.partitions),
        }
        if views == {"kafka": wanted, "worker": wanted} or time.monotonic() > deadline:
            return views
        time.sleep(0.5)
