"""Configuration of a KRaft node: its server.properties, log4j config, JVM flags, ids, ports.

Tuned for loopback clusters of 1 to a few nodes on small machines (tests, `prodcat broker
--engine kafka`), not for production: docs/operations.md has the production settings.
"""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

HOST = "127.0.0.1"
JVM_FLAGS = (
    "-Xms64m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",  # C1 only: half the start-up CPU on small machines
    "-Djava.awt.headless=true",
    "-Dlog4j2.shutdownHookEnabled=false",  # else log4j stops logging halfway through shutdown
)
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d{ISO8601}] %p %m (%c{1.})%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def node_properties(
    node_id: int, nodes: int, port: int, controller_port: int, voters: str, data: Path
) -> dict[str, str]:
    """server.properties of one broker + controller node of an ``nodes``-node cluster.

    Replication follows the cluster's size: internal topics (offsets, transactions) get
    replication min(nodes, 3) and min ISR 2 from three nodes on, else a single node could
    never start a transaction. Fewer partitions of the internal topics and no initial
    rebalance delay make a fresh cluster's first group join and transaction quick.
    """
    replicas = min(nodes, 3)
    min_isr = 2 if nodes >= 3 else 1
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data),
        "auto.create.topics.enable": "false",  # as in production: a typo fails loudly
        "num.partitions": "1",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
        "log.cleaner.threads": "1",
        "log.segment.bytes": str(16 * 2**20),
        # Kafka's default is 1 MiB; prodcat sends events up to [kafka] max_message_bytes
        # (4 MiB), and the tests send larger ones on purpose, as the embedded broker accepts
        "message.max.bytes": str(16 * 2**20),
        # a dead broker is fenced (and its partitions move) after 4.5 s instead of 9 s
        "broker.session.timeout.ms": "4500",
        "broker.heartbeat.interval.ms": "1000",
    }


def random_cluster_id() -> str:
    """22 characters of URL-safe base64, as Kafka's ``random-uuid``; never starting with
    '-' (the storage tool would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open until all are picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
