"""Items 2-4: throughput and latency through a real broker, for the worker and the baseline.

A *target* is a process consuming a products topic and producing one outcome per event
(``prodcat worker``, or the naive loop of ``bench.naive``). The bench publishes prepared
messages (each with a fresh event id), a :class:`Collector` thread reads the outcome topics
and notes when each event's outcome arrived, and the figures come from those times:

* throughput: outcomes/s from the first to the last outcome of a burst published as fast
  as the producer goes (after a warm-up burst, so start-up and first runs don't count);
* latency: publish time -> outcome receipt, for a rate-limited publisher.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.worker_metrics import histogram_delta, parse_metrics
from prodcat.core.settings import REPO_ROOT, Settings
from prodcat.core.stats import percentile
from prodcat.kafka.clients import consumer as kafka_consumer
from prodcat.kafka.clients import ensure_topics
from prodcat.kafka.clients import producer as kafka_producer
from prodcat.kafka.publisher import Pacer
from prodcat.worker.child import WorkerProcess

Message = tuple[str, bytes, bytes]  # event id, key, value
Tick = Callable[[int], None]
QUANTILES = (50, 95, 99)


class StreamBenchError(RuntimeError):
    """A target died or outcomes did not arrive in time; the message says where to look."""


def topic_settings(settings: Settings, prefix: str) -> Settings:
    """A copy of ``settings`` whose three topics are ``<prefix>-products`` etc."""
    import dataclasses

    topics = dataclasses.replace(
        settings.topics,
        products=f"{prefix}-products",
        categories=f"{prefix}-categories",
        dlq=f"{prefix}-products.dlq",
    )
    return dataclasses.replace(settings, topics=topics)


class Collector:
    """Reads the outcome topics in a thread; remembers when each event's outcome arrived."""

    def __init__(
        self, settings: Settings, bootstrap: str, isolation_level: str = "read_uncommitted"
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.isolation_level = isolation_level  # read_committed: when outcomes become visible
        self.arrived: dict[str, float] = {}
        self.worker_ms: dict[str, float] = {}  # an assignment's own latency_ms (in the worker)
        self.dead_letters = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-collector", daemon=True)

    def __enter__(self) -> Collector:
        from kafka import TopicPartition

        topics = (self.settings.topics.categories, self.settings.topics.dlq)
        self._consumer = kafka_consumer(
            self.settings,
            self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            isolation_level=self.isolation_level,
        )
        self._consumer.assign(
            [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(self._consumer.partitions_for_topic(topic) or [])
            ]
        )
        self._consumer.seek_to_beginning()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            batches = self._consumer.poll(timeout_ms=100)
            received = time.time()
            if not batches:
                continue
            with self._changed:
                for records in batches.values():
                    for record in records:
                        self.arrived.setdefault(self._event_id(record), received)
                self._changed.notify_all()

    def _event_id(self, record: Any) -> str:
        value = orjson.loads(record.value)
        if record.topic == self.settings.topics.dlq:
            self.dead_letters += 1
            original = base64.b64decode(value["original"]["value"] or "")
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                return str(orjson.loads(original)["event_id"])
            return f"dead-{record.partition}-{record.offset}"
        event_id = str(value["source_event_id"])
        if value.get("latency_ms") is not None:
            self.worker_ms.setdefault(event_id, float(value["latency_ms"]))
        return event_id

    def wait_for(
        self, ids: list[str], timeout_s: float, alive: Callable[[], str | None], tick: Tick
    ) -> None:
        """Block until every id has an outcome; ``alive()`` names a dead target, if any."""
        deadline = time.monotonic() + timeout_s
        done = 0
        with self._changed:
            while True:
                now_done = sum(i in self.arrived for i in ids)
                tick(now_done - done)
                done = now_done
                if done == len(ids):
                    return
                problem = alive()
                if problem:
                    raise StreamBenchError(problem)
                if time.monotonic() > deadline:
                    raise StreamBenchError(
                        f"only {done} of {len(ids)} outcomes within {timeout_s:.0f} s"
                    )
                self._changed.wait(0.5)


def publish(
    producer: Any, topic: str, messages: list[Message], rate: float | None = None
) -> dict[str, float]:
    """Send ``messages`` (at ``rate`` per s, else as fast as possible); event id -> send time."""
    pacer = Pacer(rate)
    sent = {}
    for event_id, key, value in messages:
        pacer.wait()
        sent[event_id] = time.time()
        producer.send(topic, key=key, value=value)
    producer.flush(60)
    return sent


@dataclass
class Target:
    """A consumer process under test, with the topics it reads and writes."""

    name: str
    settings: Settings
    bootstrap: str
    process: Any = None  # WorkerProcess or subprocess.Popen
    log_path: Path | None = None

    def problem(self) -> str | None:
        popen = getattr(self.process, "process", self.process)
        if popen is not None and popen.poll() is not None:
            return f"{self.name} exited with {popen.returncode}; see {self.log_path}"
        return None

    def cpu_seconds(self) -> float | None:
        """CPU time the target process has used (all its threads); None off Linux.

        Beside wall-clock throughput this shows where time goes on a shared machine: CPU
        per item barely moves when other processes take cores away.
        """
        popen = getattr(self.process, "process", self.process)
        try:
            fields = Path(f"/proc/{popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def scrape(self) -> dict[str, Any] | None:
        """The worker's histograms and counters from /metrics (None: the naive loop)."""
        if not isinstance(self.process, WorkerProcess):
            return None
        _, body = self.process.get("/metrics")
        return parse_metrics(body.decode())


@contextlib.contextmanager
def worker_target(
    settings: Settings,
    bootstrap: str,
    model: Path,
    workdir: Path,
    providers: str,
    name: str = "worker",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Target]:
    """``prodcat worker`` as a child process on fresh topics (``bench-<name>-...``), ready;
    ``extra_env``: worker settings of this run (``PRODCAT_WORKER__CASCADE=off``)."""
    settings = topic_settings(settings, f"bench-{name}")
    ensure_topics(settings, bootstrap)
    topics = settings.topics
    env = {
        "PRODCAT_CACHE_DIR": str(workdir / "worker-cache"),
        "PRODCAT_WORKER__GROUP_ID": f"prodcat-bench-{os.getpid()}-{name}",
        "PRODCAT_WORKER__PROVIDERS": providers,
        "PRODCAT_TOPICS__PRODUCTS": topics.products,
        "PRODCAT_TOPICS__CATEGORIES": topics.categories,
        "PRODCAT_TOPICS__DLQ": topics.dlq,
        "PRODCAT_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log_path = workdir / f"{name}.log"
    worker = WorkerProcess(model, bootstrap, log_path, env).start()
    try:
        worker.wait_ready(180)
        yield Target(name, settings, bootstrap, worker, log_path)
    finally:
        worker.stop()


@contextlib.contextmanager
def naive_target(
    settings: Settings, bootstrap: str, model: Path, workdir: Path, providers: str
) -> Iterator[Target]:
    """The naive loop (``bench.naive``) as a child process on fresh topics."""
    settings = topic_settings(settings, "bench-naive")
    ensure_topics(settings, bootstrap)
    log_path = workdir / "naive.log"
    command = [sys.executable, "-m", "bench.naive", "--model", str(model), "--broker", bootstrap]
    command += ["--products", settings.topics.products]
    command += ["--categories", settings.topics.categories, "--providers", providers]
    command += ["--threads", str(settings.worker.ort_threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield Target("naive baseline", settings, bootstrap, process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Runner:
    """Publishes to a target and waits for its outcomes."""

    target: Target
    timeout_s: float
    isolation_level: str = "read_uncommitted"
    producer: Any = None
    collector: Collector | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> Runner:
        settings, bootstrap = self.target.settings, self.target.bootstrap
        self.producer = kafka_producer(settings, bootstrap)
        self._stack.callback(self.producer.close)
        collector = Collector(settings, bootstrap, self.isolation_level)
        self.collector = self._stack.enter_context(collector)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def send_and_wait(
        self, messages: list[Message], tick: Tick, rate: float | None = None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(event id -> sent time, event id -> outcome time) of ``messages``."""
        assert self.collector is not None
        sent = publish(self.producer, self.target.settings.topics.products, messages, rate)
        ids = list(sent)
        self.collector.wait_for(ids, self.timeout_s, self.target.problem, tick)
        return sent, {i: self.collector.arrived[i] for i in ids}


def throughput(
    runner: Runner, warmup: list[Message], messages: list[Message], tick: Tick
) -> dict[str, Any]:
    """Outcomes/s of a burst, and (worker) the batches each graph's batcher formed and the
    products each cascade path decided meanwhile."""
    runner.send_and_wait(warmup, lambda _n: None)
    before = runner.target.scrape()
    cpu_before = runner.target.cpu_seconds()
    _, arrived = runner.send_and_wait(messages, tick)
    cpu_after = runner.target.cpu_seconds()
    after = runner.target.scrape()
    times = sorted(arrived.values())
    span = times[-1] - times[0]
    result: dict[str, Any] = {
        "items": len(messages),
        "seconds": round(span, 3),
        "items_per_s": (len(times) - 1) / span if span > 0 else None,
        "cpu_ms_per_item": (
            (cpu_after - cpu_before) * 1000 / len(messages)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
    }
    if before is not None and after is not None:
        graphs = sorted(k.split("/", 1)[1] for k in after if k.startswith("prodcat_batch_size/"))
        result["graphs"] = {}
        for graph in graphs:
            inference = histogram_delta(before, after, f"prodcat_inference_seconds/{graph}")
            result["graphs"][graph] = {
                "batch_size": histogram_delta(before, after, f"prodcat_batch_size/{graph}"),
                "inference_ms_mean": inference["mean"] * 1000 if inference["mean"] else None,
            }
        result["decided_by"] = {
            path: after.get(f"prodcat_decisions_total/{path}", 0.0)
            - before.get(f"prodcat_decisions_total/{path}", 0.0)
            for path in ("text", "full")
        }
    return result


def latency(runner: Runner, messages: list[Message], rate: float, tick: Tick) -> dict[str, Any]:
    """Publish at ``rate``/s; percentiles of publish -> outcome receipt in ms."""
    assert runner.collector is not None
    sent, arrived = runner.send_and_wait(messages, tick, rate)
    millis = sorted((arrived[i] - sent[i]) * 1000 for i in sent)
    inside = [runner.collector.worker_ms[i] for i in sent if i in runner.collector.worker_ms]
    span = max(sent.values()) - min(sent.values())
    return {
        "offered_per_s": rate,
        "published_per_s": (len(sent) - 1) / span if span > 0 else None,
        "items": len(millis),
        **{f"p{q}_ms": percentile(millis, q) for q in QUANTILES},
        # consumed -> assignment built, as the worker reports it: the rest is Kafka's hops
        **{f"worker_p{q}_ms": percentile(inside, q) for q in QUANTILES},
        "latencies_ms": [round(m, 2) for m in millis],
    }
