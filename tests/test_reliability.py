"""Reliability of real worker processes (issue 7): broker outage, overload, hot reload.

Every test runs ``prodcat worker`` as a child process against an embedded broker (the
outage also against Apache Kafka, restarted on its data), with the smallest real model the
project trains (``text.hashgram`` only, cached), and real fashion products. Each test bounds
its own waits; none asserts on timings. Crashes are tests/test_crash_recovery.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from bundles import hashgram_bundle
from harness import (
    ids_covered,
    messages,
    publish,
    read_topic,
    read_until,
    text_products,
    topic_settings,
    worker_env,
)

from prodcat.core.ports import free_port
from prodcat.kafka.clients import ensure_topics
from prodcat.kafka.cluster import KafkaCluster
from prodcat.kafka.embedded import EmbeddedBroker
from prodcat.model.bundle import MANIFEST_FILE, ModelBundle
from prodcat.worker.child import WorkerProcess
from prodcat.worker.memory import rss_bytes

pytestmark = [pytest.mark.integration, pytest.mark.training]

PRODUCTS = 1000
WAIT_S = 240.0  # upper bound of any wait for outcomes; a healthy run needs a fraction


@pytest.fixture(scope="module")
def bundle(data_dir: Path) -> Path:
    return hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)


@pytest.fixture(scope="module")
def other_bundle(data_dir: Path) -> Path:
    """Same recipe, other seed: other weights, other fingerprint (the 'new model')."""
    return hashgram_bundle(data_dir, "rel-hashgram-b", seed=1)


@pytest.fixture(scope="module")
def products(data_dir: Path) -> list[dict[str, Any]]:
    return text_products(data_dir, PRODUCTS)


class TansuOutage:
    """The embedded broker goes away; a new, empty one comes back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.broker = EmbeddedBroker(port=self.port).start()
        self.bootstrap = self.broker.bootstrap
        self.keeps_data = False

    def down(self) -> None:
        self.broker.stop()

    def up(self) -> None:
        self.broker = EmbeddedBroker(port=self.port).start()

    def close(self) -> None:
        self.broker.stop()


class KafkaOutage:
    """A one-node Apache Kafka with a data folder is killed (SIGKILL, as a crashed machine
    stops), then started again from that folder, as ``prodcat broker --engine kafka
    --data-dir`` does: same cluster, ports and data."""

    def __init__(self, jars: Any, data_dir: Path) -> None:
        self.start = lambda: KafkaCluster(jars, data_dir=data_dir).start()
        self.cluster = self.start()
        self.bootstrap = self.cluster.bootstrap
        self.keeps_data = True

    def down(self) -> None:
        self.cluster.kill(0)

    def up(self) -> None:
        self.cluster = self.start()
        assert self.cluster.bootstrap == self.bootstrap

    def close(self) -> None:
        self.cluster.stop(graceful=False)


@pytest.mark.parametrize("engine", ["tansu", "kafka"])
def test_broker_outage_makes_the_worker_not_ready_then_it_resumes(
    engine: str,
    bundle: Path,
    products: list[dict[str, Any]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The broker goes away for 15 s, then comes back on the same address: the worker
    reports not ready meanwhile, never exits, and resumes without a restart."""
    if engine == "tansu":
        broker: Any = TansuOutage()
    else:
        broker = KafkaOutage(request.getfixturevalue("kafka_jars"), tmp_path / "kafka")
    settings, topics = topic_settings("outage")
    env = worker_env(tmp_path, topics, "outage") | {"PRODCAT_WORKER__BROKER_PROBE_S": "0.5"}
    # More before than after: every partition's new log (embedded broker) ends below the
    # old position.
    before, after = products[:120], products[120:160]
    worker = WorkerProcess(bundle, broker.bootstrap, tmp_path / "worker.log", env)
    try:
        ensure_topics(settings, broker.bootstrap)
        worker.start().wait_ready()
        publish(settings, broker.bootstrap, messages(before))
        done = read_topic(settings, broker.bootstrap, topics["categories"], 120, WAIT_S)
        assert len(done) == 120
        broker.down()
        outage_ends = time.monotonic() + 15
        states: list[tuple[int, int]] = []
        while time.monotonic() < outage_ends:
            assert worker.process is not None and worker.process.poll() is None, worker.tail()
            states.append((worker.get("/ready")[0], worker.get("/health")[0]))
            time.sleep(0.5)
        assert (503, 200) in states, f"never reported not-ready while healthy: {states}"
        assert states[-1] == (503, 200), states[-5:]
        assert worker.metric("prodcat_broker_up") == 0
        broker.up()
        ensure_topics(settings, broker.bootstrap)
        worker.wait_ready(WAIT_S)
        publish(settings, broker.bootstrap, messages(after))
        expected = {str(p["product_id"]) for p in (before if broker.keeps_data else []) + after}
        found = read_until(
            settings, broker.bootstrap, topics["categories"], ids_covered(expected), WAIT_S
        )
        assert expected <= {m["value"]["product_id"] for m in found}, worker.tail()
        assert worker.metric("prodcat_broker_up") == 1
        code = worker.stop(signal.SIGTERM)
    finally:
        if worker.process is not None:
            worker.stop(signal.SIGKILL)
        broker.close()
    assert code == 0, worker.tail()


def test_overload_keeps_queue_and_memory_bounded_and_loses_nothing(
    bundle: Path, products: list[dict[str, Any]], embedded_broker: str, tmp_path: Path
) -> None:
    """A burst far above what the worker holds: back-pressure, bounded memory, backlog shown.

    The worker holds at most ``queue_size`` events in flight plus ``queue_size`` prefetched
    (its capacity); the burst is thirty times that and is published before the worker
    starts, so all of it is waiting when it begins.
    """
    queue_size, limit_mb = 16, 1024
    burst = products[:1000]
    settings, topics = topic_settings("overload")
    ensure_topics(settings, embedded_broker)
    env = worker_env(tmp_path, topics, "overload") | {
        "PRODCAT_WORKER__QUEUE_SIZE": str(queue_size),
        "PRODCAT_WORKER__MAX_BATCH_SIZE": "8",
        "PRODCAT_WORKER__MEMORY_LIMIT_MB": str(limit_mb),
    }
    publish(settings, embedded_broker, messages(burst))
    worker = WorkerProcess(bundle, embedded_broker, tmp_path / "worker.log", env).start()
    samples: list[dict[str, float]] = []
    try:
        worker.wait_ready()
        deadline = time.monotonic() + WAIT_S
        done = 0.0
        while done < len(burst) and time.monotonic() < deadline:
            sample = {
                name: worker.metric(name)
                for name in (
                    "prodcat_queue_depth",
                    "prodcat_in_flight_events",
                    "prodcat_backlog_events",
                    "prodcat_memory_rss_bytes",
                )
            }
            assert worker.process is not None
            sample["rss_proc"] = rss_bytes(worker.process.pid)
            samples.append(sample)
            done = assigned(worker)
            time.sleep(0.2)
        final_backlog = backlog_once_committed(worker)
        assignments = read_topic(
            settings, embedded_broker, topics["categories"], len(burst), WAIT_S
        )
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    assert {a["value"]["product_id"] for a in assignments} == {p["product_id"] for p in burst}
    peak = {name: max(s[name] for s in samples) for name in samples[0]}
    print(f"overload: {len(burst)} products, {len(samples)} samples, peaks {peak}")
    assert peak["prodcat_queue_depth"] <= queue_size
    assert peak["prodcat_in_flight_events"] <= queue_size
    assert peak["rss_proc"] < limit_mb * 2**20
    assert peak["prodcat_backlog_events"] >= 10 * 2 * queue_size, "the backlog was never shown"
    assert final_backlog == 0


def test_over_its_memory_limit_the_worker_takes_one_event_at_a_time(
    bundle: Path, products: list[dict[str, Any]], embedded_broker: str, tmp_path: Path
) -> None:
    """A memory limit below the worker's own footprint: it must neither stop nor lose
    anything, only slow down to one event in flight, and say why in its metrics."""
    settings, topics = topic_settings("memlimit")
    ensure_topics(settings, embedded_broker)
    env = worker_env(tmp_path, topics, "memlimit") | {"PRODCAT_WORKER__MEMORY_LIMIT_MB": "64"}
    events = products[:200]
    worker = WorkerProcess(bundle, embedded_broker, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        publish(settings, embedded_broker, messages(events))
        in_flight: list[float] = []
        deadline = time.monotonic() + WAIT_S
        while len(in_flight) < 2 or in_flight[-1] > 0 or assigned(worker) < len(events):
            assert time.monotonic() < deadline, worker.tail()
            in_flight.append(worker.metric("prodcat_in_flight_events"))
            time.sleep(0.1)
        waits = worker.metric("prodcat_admission_waits_total", {"reason": "memory"})
        rss = worker.metric("prodcat_memory_rss_bytes")
        assignments = read_topic(settings, embedded_broker, topics["categories"], 200, WAIT_S)
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    print(f"memory limit 64 MiB, RSS {rss / 2**20:.0f} MiB: {waits:.0f} admissions waited")
    assert rss > 64 * 2**20, "the limit must be below the footprint for this test to mean much"
    assert {a["value"]["product_id"] for a in assignments} == {e["product_id"] for e in events}
    assert max(in_flight) <= 1
    assert waits > 0


def backlog_once_committed(worker: WorkerProcess) -> float:
    """The backlog after the last commit (every ``[worker] commit_interval_s``) settled it."""
    deadline = time.monotonic() + 15
    while (backlog := worker.metric("prodcat_backlog_events")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return backlog


def assigned(worker: WorkerProcess) -> float:
    return worker.metric("prodcat_events_total", {"outcome": "assigned", "stage": ""})


def test_hot_reload_swaps_valid_bundles_and_rejects_bad_ones(
    bundle: Path,
    other_bundle: Path,
    products: list[dict[str, Any]],
    embedded_broker: str,
    tmp_path: Path,
) -> None:
    """SIGHUP-driven (polling off): B replaces A between batches with no event dropped; a
    bundle with an edited manifest is rejected, logged and counted, and B keeps serving."""
    settings, topics = topic_settings("reload")
    ensure_topics(settings, embedded_broker)
    current = tmp_path / "models" / "current"
    current.parent.mkdir()
    broken = tmp_path / "models" / "broken"
    shutil.copytree(other_bundle, broken)
    manifest = json.loads((broken / MANIFEST_FILE).read_text())
    manifest["labels"][manifest["levels"][0]][0] = "Renamed"  # the fingerprint no longer matches
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest))
    point(current, bundle)
    env = worker_env(tmp_path, topics, "reload") | {"PRODCAT_WORKER__MODEL_POLL_S": "0"}
    worker = WorkerProcess(current, embedded_broker, tmp_path / "worker.log", env).start()
    a, b = (ModelBundle.load(path).fingerprint for path in (bundle, other_bundle))
    batches = [products[i : i + 300] for i in range(0, 900, 300)]
    try:
        worker.wait_ready()
        publish(settings, embedded_broker, messages(batches[0]))
        point(current, other_bundle)  # polling is off: nothing happens before SIGHUP
        read_topic(settings, embedded_broker, topics["categories"], 300, WAIT_S)
        hangup(worker)
        wait_for_metric(worker, "loaded", 1)
        publish(settings, embedded_broker, messages(batches[1]))
        point(current, broken)
        hangup(worker)
        wait_for_metric(worker, "rejected", 1)
        publish(settings, embedded_broker, messages(batches[2]))
        assignments = read_topic(settings, embedded_broker, topics["categories"], 900, WAIT_S)
        assert worker.ready() is not None
        reloads = {r: reload_count(worker, r) for r in ("loaded", "rejected", "unchanged")}
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    assert reloads == {"loaded": 1, "rejected": 1, "unchanged": 0}
    served = {x["value"]["product_id"]: x["value"]["model"]["fingerprint"] for x in assignments}
    assert len(assignments) == 900 and len(served) == 900, "an event was dropped or repeated"
    assert {served[q["product_id"]] for q in batches[0]} == {a}
    assert {served[q["product_id"]] for q in batches[1] + batches[2]} == {b}
    log = worker.log_path.read_text(errors="replace")
    rejected = [line for line in log.splitlines() if "model reload rejected" in line]
    assert len(rejected) == 1 and "fingerprint" in rejected[0] and b in rejected[0]


def point(link: Path, target: Path) -> None:
    """Re-point the model symlink atomically: a new link renamed over the old one."""
    fresh = link.with_name(link.name + ".new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target.resolve(), target_is_directory=True)
    os.replace(fresh, link)


def hangup(worker: WorkerProcess) -> None:
    assert worker.process is not None
    worker.process.send_signal(signal.SIGHUP)


def reload_count(worker: WorkerProcess, result: str) -> float:
    return worker.metric("prodcat_model_reloads_total", {"result": result})


def wait_for_metric(worker: WorkerProcess, result: str, value: float) -> None:
    deadline = time.monotonic() + 60
    while reload_count(worker, result) < value:
        assert time.monotonic() < deadline, f"no {result} reload:\n{worker.tail()}"
        time.sleep(0.2)
