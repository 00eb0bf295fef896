"""``prodcat broker``: run a broker on 127.0.0.1 until Ctrl-C/SIGTERM.

Two engines: ``tansu`` (default), the embedded in-memory Kafka-protocol broker that starts
instantly, and ``kafka``, real Apache Kafka in KRaft mode from jars Maven fetched once
(``--fetch``), one node or a ``--nodes N`` cluster.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click
import orjson

from prodcat.cli.options import json_option
from prodcat.core.settings import Settings
from prodcat.kafka.embedded import BrokerError, EmbeddedBroker
from prodcat.kafka.jars import (
    KafkaJars,
    KafkaSetupError,
    fetch_jars,
    find_java,
    find_maven,
)

TANSU_PORT = 9092


@click.command()
@click.option(
    "--engine",
    type=click.Choice(["tansu", "kafka"]),
    default="tansu",
    show_default=True,
    help="tansu: embedded, in memory, instant; kafka: Apache Kafka (needs Java 17+ and the "
    "jars from --fetch).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port on 127.0.0.1 (kafka: of node 1); 0 picks a free one. Default: 9092 for "
    "tansu, free ports for kafka.",
)
@click.option(
    "--nodes",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="kafka: brokers in the cluster (3 gives replication factor 3, min ISR 2).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="kafka: keep the cluster's data here (reused on the next start) instead of a "
    "temporary folder removed on stop.",
)
@click.option(
    "--fetch",
    is_flag=True,
    help="kafka: download the pinned Apache Kafka jars with Maven into the cache (once; "
    "nothing to do when present) and exit.",
)
@click.option("--log-file", type=click.Path(dir_okay=False), help="tansu: where its logs go.")
@json_option(
    "Print one JSON line once ready: tansu {bootstrap, pid, log}; kafka {bootstrap, pids, "
    "logs, data_dir, kafka_version}; with --fetch {kafka_version, libs, fetched}."
)
@click.pass_obj
def command(
    settings: Settings,
    engine: str,
    port: int | None,
    nodes: int,
    data_dir: str | None,
    fetch: bool,
    log_file: str | None,
    as_json: bool,
) -> None:
    """Run a broker on 127.0.0.1 until Ctrl-C or SIGTERM.

    tansu keeps everything in memory: topics and messages are gone when it stops. kafka
    formats storage, starts the node(s), waits until every broker serves, and on stop
    removes its data unless --data-dir is given. Point other commands at it with --broker
    or PRODCAT_BROKER.
    """
    if engine == "tansu" and (fetch or data_dir or nodes != 1):
        raise click.UsageError("--fetch, --data-dir and --nodes need --engine kafka")
    if engine == "kafka" and log_file:
        raise click.UsageError("--log-file is for --engine tansu (kafka logs per node)")
    stop = StopRequest()
    try:
        if engine == "tansu":
            _serve_tansu(TANSU_PORT if port is None else port, log_file, as_json, stop)
        elif fetch:
            _fetch(KafkaJars.pinned(settings.cache_dir), as_json)
        else:
            _serve_kafka(KafkaJars.pinned(settings.cache_dir), nodes, data_dir, port, as_json, stop)
    except (BrokerError, KafkaSetupError) as exc:
        raise click.ClickException(str(exc)) from None
    if not as_json and not fetch:
        click.echo("broker stopped")


class StopRequest:
    """Ctrl-C/SIGTERM: while starting, interrupt at once (the broker cleans up what it
    started); once serving, ask the wait loop to stop the broker."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.serving = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested.set()
        if not self.serving:
            raise KeyboardInterrupt

    def started(self) -> None:
        """From now on a signal stops the broker through :meth:`wait` (before anything is
        announced: a caller may signal as soon as it reads the address)."""
        self.serving = True

    def wait(self, running: Callable[[], bool], died: str) -> None:
        while not self.requested.wait(0.5):
            if not running():
                raise click.ClickException(died)


def _serve_tansu(port: int, log_file: str | None, as_json: bool, stop: StopRequest) -> None:
    broker = EmbeddedBroker(port=port, log_path=log_file).start()
    try:
        stop.started()
        if as_json:
            line = {"bootstrap": broker.bootstrap, "pid": broker.pid, "log": str(broker.log_path)}
            click.echo(orjson.dumps(line))
        else:
            _announce(broker.bootstrap, f"log: {broker.log_path}")
            click.echo(
                "warning: in-memory broker for demos and tests; all data is lost when it "
                "stops. Press Ctrl-C to stop.",
                err=True,
            )
        stop.wait(broker.running, f"the broker exited unexpectedly; see {broker.log_path}")
    finally:
        broker.stop()


def _fetch(jars: KafkaJars, as_json: bool) -> None:
    if not jars.present and not as_json:
        find_maven()  # fails in one line before anything is printed
        click.echo(f"fetching Apache Kafka {jars.version} with Maven into {jars.home} ...")
    fetched = fetch_jars(jars)
    if as_json:
        line = {"kafka_version": jars.version, "libs": str(jars.libs), "fetched": fetched}
        click.echo(orjson.dumps(line))
    else:
        state = "fetched" if fetched else "already present"
        click.echo(f"Apache Kafka {jars.version}: {state} in {jars.libs}")


def _serve_kafka(
    jars: KafkaJars,
    nodes: int,
    data_dir: str | None,
    port: int | None,
    as_json: bool,
    stop: StopRequest,
) -> None:
    from prodcat.kafka.cluster import KafkaCluster

    find_java()
    jars.classpath()  # both fail in one line before anything is printed or started
    if not as_json:
        click.echo(f"starting Apache Kafka {jars.version}, {nodes} node(s) ...", err=True)
    cluster = KafkaCluster(jars, nodes=nodes, data_dir=data_dir, port=port or 0).start()
    try:
        stop.started()
        logs = [str(node.log_path) for node in cluster.nodes]
        if as_json:
            line = {
                "bootstrap": cluster.bootstrap,
                "pids": [node.process.pid for node in cluster.nodes if node.process],
                "logs": logs,
                "data_dir": str(cluster.base),
                "kafka_version": jars.version,
            }
            click.echo(orjson.dumps(line))
        else:
            kept = f"data kept in {cluster.base}" if data_dir else "data removed on stop"
            _announce(cluster.bootstrap, f"logs: {Path(logs[0]).parent.parent}/node-*; {kept}")
            click.echo("Press Ctrl-C to stop.", err=True)
        stop.wait(cluster.running, f"a Kafka node exited unexpectedly; logs: {logs}")
    finally:
        # Temporary data is deleted anyway: no need for the controlled shutdown's wait.
        cluster.stop(graceful=data_dir is not None)


def _announce(bootstrap: str, where: str) -> None:
    click.echo(f"broker ready: {bootstrap}   ({where})")
    click.echo(f"use it with:  export PRODCAT_BROKER={bootstrap}")
