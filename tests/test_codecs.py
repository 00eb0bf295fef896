"""Every compression codec Kafka producers use, from a producer prodcat did not write.

A librdkafka producer (confluent-kafka, as many shops configure theirs) publishes real
fashion products under none, gzip, snappy, lz4 and zstd; a worker assigns every one, on the
embedded broker and on Apache Kafka, while its own producers compress with zstd
(``[kafka] compression``), and ``prodcat tail`` reads the compressed topics. Then a worker
installed *without* the codec libraries (the situation that used to crash-loop it) meets
snappy batches: each record becomes a dead letter, the worker keeps running and says what it
could not read in one log line, a metric and /health.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import hashgram_bundle
from click.testing import CliRunner
from harness import librdkafka_publish, read_topic, text_products, topic_settings, worker_env

from prodcat.cli.main import cli
from prodcat.kafka.clients import ensure_topics
from prodcat.worker.child import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.training]

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PER_CODEC = 20
WAIT_S = 120.0  # upper bound of any wait for outcomes


@pytest.fixture(scope="module")
def bundle(data_dir: Path) -> Path:
    return hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)


def keyed(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(str(e["product_id"]).encode(), orjson.dumps(e)) for e in events]


def test_products_under_every_codec_are_all_assigned(
    bundle: Path, data_dir: Path, broker: str, tmp_path: Path
) -> None:
    settings, topics = topic_settings("codecs")
    settings.kafka.compression = "zstd"
    ensure_topics(settings, broker)
    env = worker_env(tmp_path, topics, "codecs") | {"PRODCAT_KAFKA__COMPRESSION": "zstd"}
    products = text_products(data_dir, PER_CODEC * len(CODECS), skip=3000)
    worker = WorkerProcess(bundle, broker, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        for i, codec in enumerate(CODECS):
            batch = products[i * PER_CODEC : (i + 1) * PER_CODEC]
            librdkafka_publish(broker, topics["products"], keyed(batch), codec)
        assignments = read_topic(settings, broker, topics["categories"], len(products), WAIT_S)
        letters = read_topic(settings, broker, topics["dlq"], 1, 2)
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    assert letters == [], [letter["value"]["error"] for letter in letters]
    assigned = Counter(a["value"]["product_id"] for a in assignments)
    assert set(assigned) == {str(p["product_id"]) for p in products}, worker.tail()

    tail = CliRunner().invoke(
        cli,
        ["tail", "--broker", broker, "--topic", topics["products"], "--from-beginning"]
        + ["--json", "--max", str(len(products)), "--timeout", "60"],
    )
    assert tail.exit_code == 0, tail.output
    tailed = [json.loads(line) for line in tail.output.splitlines() if line.startswith("{")]
    assert len(tailed) == len(products)


def test_a_batch_the_worker_cannot_read_becomes_dead_letters(
    bundle: Path, data_dir: Path, broker: str, tmp_path: Path
) -> None:
    """cramjam (aiokafka's snappy/lz4/zstd) blocked: gzip products are assigned, snappy
    ones dead-lettered with their offsets, and the worker never exits."""
    blocked = tmp_path / "no-codecs"
    blocked.mkdir()
    (blocked / "cramjam.py").write_text(
        'raise ImportError("cramjam blocked: a worker installed without codec libraries")\n'
    )
    settings, topics = topic_settings("unreadable")
    ensure_topics(settings, broker)
    env = worker_env(tmp_path, topics, "unreadable") | {"PYTHONPATH": str(blocked)}
    readable = text_products(data_dir, 20, skip=3200)
    unreadable = text_products(data_dir, 20, skip=3300)
    worker = WorkerProcess(bundle, broker, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        librdkafka_publish(broker, topics["products"], keyed(unreadable), "snappy")
        librdkafka_publish(broker, topics["products"], keyed(readable), "gzip")
        assignments = read_topic(settings, broker, topics["categories"], len(readable), WAIT_S)
        letters = read_topic(settings, broker, topics["dlq"], len(unreadable), WAIT_S)
        time.sleep(1)  # the metrics count an outcome once its produce is acknowledged
        status, body = worker.get("/health")
        batches = worker.metric("prodcat_unreadable_batches_total")
        dead = worker.metric(
            "prodcat_events_total", {"outcome": "dead_letter", "stage": "unreadable"}
        )
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    assert {a["value"]["product_id"] for a in assignments} == {p["product_id"] for p in readable}
    assert len(letters) == len(unreadable), worker.tail()
    assert {letter["value"]["stage"] for letter in letters} == {"unreadable"}
    assert {letter["value"]["original"]["value"] for letter in letters} == {None}
    assert "snappy" in letters[0]["value"]["error"]["message"]
    offsets = sorted(
        (m["value"]["source"]["partition"], m["value"]["source"]["offset"]) for m in letters
    )
    assert len(set(offsets)) == len(unreadable), "each unreadable record exactly once"
    health = json.loads(body)
    assert status == 200 and health["unreadable"]["batches"] == batches >= 1
    assert "snappy" in health["unreadable"]["last"]
    assert dead == len(unreadable)
    log = worker.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "cannot read" in line]
    assert len(lines) == batches, lines
    assert "Traceback" not in log, worker.tail()
