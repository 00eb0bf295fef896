"""Real Apache Kafka on loopback: one KRaft node or a small cluster, from the fetched jars.

What ``prodcat broker --engine kafka`` and the tests run when they need Kafka's semantics
(transactions, replication, failover, true offsets), which the embedded broker lacks. Every
node is a combined broker + controller JVM (KRaft, no ZooKeeper) on 127.0.0.1 ports the OS
picked, with a static quorum of all nodes. Its data lives in a temporary folder removed on
stop, or in ``data_dir``, kept, where a later start finds ``cluster.json`` (id, ports) and
runs the same cluster again without formatting.

Ready means: every running node, asked on its own, lists all the cluster's brokers (a node
binds its port before it serves, and the others list it up to a second before it answers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prodcat.kafka.jars import KafkaJars, KafkaSetupError, find_java
from prodcat.kafka.kraft import (
    HOST,
    JVM_FLAGS,
    LOG4J2,
    free_ports,
    node_properties,
    random_cluster_id,
)

STATE_FILE = "cluster.json"


@dataclass
class Node:
    """One JVM: its id, ports and folder (``server.properties``, ``server.log``, ``data/``)."""

    node_id: int
    port: int
    controller_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def errors(self, limit: int = 3) -> str:
        """The log's first ERROR lines (a failed start's cause is far above the tail)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        hits = [line.strip() for line in lines if " ERROR " in line or " FATAL " in line]
        return " | ".join(hits[:limit] or lines[-limit:]) or "no output"


class KafkaCluster:
    """``nodes`` KRaft nodes for a ``with`` block (or ``start()`` ... ``stop()``).

    ``port`` fixes node 1's client port (0: any free port). ``kill``/``restart`` SIGKILL a
    node and start it again on its ports and data, for failover tests.
    """

    def __init__(
        self,
        jars: KafkaJars,
        nodes: int = 1,
        data_dir: str | Path | None = None,
        port: int = 0,
        heap: str = "512m",
        startup_timeout_s: float = 120.0,
    ) -> None:
        if nodes < 1:
            raise KafkaSetupError("a cluster needs at least one node")
        self.jars = jars
        self.nodes: list[Node] = []
        self.size = nodes
        self.data_dir = Path(data_dir).resolve() if data_dir else None
        self.port = port
        self.heap = heap
        self.startup_timeout_s = startup_timeout_s
        self.cluster_id = ""
        self._temporary: Path | None = None
        self._java = ""

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def base(self) -> Path:
        folder = self.data_dir or self._temporary
        assert folder is not None, "cluster not started"
        return folder

    def start(self) -> KafkaCluster:
        """Format (unless ``data_dir`` holds this cluster already), launch, wait until ready.

        Interrupted or failed, it stops whatever it started (KeyboardInterrupt included).
        """
        self._java = find_java()
        classpath = self.jars.classpath()
        try:
            self._start(classpath)
        except BaseException:
            self.stop(graceful=False)
            raise
        return self

    def _start(self, classpath: str) -> None:
        if self.data_dir and (self.data_dir / STATE_FILE).is_file():
            self._load_state()
            self._launch_all(classpath)
            return
        retries = 0 if self.port or self.data_dir else 2  # a picked port can be taken
        while True:
            self._prepare()
            self._format(classpath)
            self._save_state()
            try:
                self._launch_all(classpath)
                return
            except KafkaSetupError as exc:
                if "Address already in use" not in str(exc) or not retries:
                    raise
                self.stop(graceful=False)
                retries -= 1

    def _launch_all(self, classpath: str) -> None:
        for node in self.nodes:
            self._launch(node, classpath)
        self.wait_ready()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Until every running node lists all brokers; :class:`KafkaSetupError` if a node
        exits or the time is up."""
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        wanted = {node.node_id for node in self.nodes}
        seen: set[int] = set()
        with _quiet_client_logs():
            while time.monotonic() < deadline:
                for node in self.nodes:
                    if node.process is not None and not node.alive():
                        raise KafkaSetupError(
                            f"Kafka node {node.node_id} exited with {node.process.returncode} "
                            f"while starting: {node.errors()} (log: {node.log_path})"
                        )
                seen = self._brokers_listed_by_all()
                if seen >= wanted:
                    return
                time.sleep(0.25)
        raise KafkaSetupError(
            f"Kafka not ready after {timeout_s or self.startup_timeout_s:.0f} s (brokers "
            f"listed by all: {sorted(seen)}); logs: {self.nodes[0].log_path.parent.parent}"
        )

    def _brokers_listed_by_all(self) -> set[int]:
        from kafka import KafkaAdminClient

        seen: set[int] | None = None
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=[node.bootstrap],
                    request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                    client_id="prodcat-kafka-probe",
                )
            except Exception:  # noqa: BLE001 - not answering yet
                return set()
            try:
                brokers = admin.describe_cluster()["brokers"]
                ids = {int(b["broker_id"]) for b in brokers if not b.get("is_fenced")}
            except Exception:  # noqa: BLE001 - not serving yet
                return set()
            finally:
                admin.close()
            seen = ids if seen is None else seen & ids
        return seen or set()

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (0-based), as a crashed machine would stop."""
        node = self.nodes[index]
        if node.process is not None and node.alive():
            node.process.kill()
            node.process.wait()

    def restart(self, index: int) -> None:
        """Start node ``index`` again on its ports and data, and wait until it serves."""
        self._launch(self.nodes[index], self.jars.classpath())
        self.wait_ready()

    def running(self) -> bool:
        return bool(self.nodes) and all(node.alive() for node in self.nodes)

    def stop(self, graceful: bool = True) -> None:
        """Stop every node (SIGTERM: controlled shutdown; SIGKILL when not ``graceful`` or
        after 30 s) and remove a temporary data folder."""
        running = [node for node in self.nodes if node.alive()]
        for node in running:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + 30
        for node in running:
            assert node.process is not None
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def _prepare(self) -> None:
        """Fresh folders, ports and configuration for every node."""
        if self.data_dir is None:
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = Path(tempfile.mkdtemp(prefix="prodcat-kafka-"))
        elif self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise KafkaSetupError(
                f"--data-dir {self.data_dir} is not empty and holds no {STATE_FILE}; "
                "give an empty or new folder"
            )
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = random_cluster_id()
        ports = free_ports(2 * self.size)
        if self.port:
            ports[0] = self.port
        self.nodes = [
            Node(i + 1, ports[2 * i], ports[2 * i + 1], self.base / f"node-{i + 1}")
            for i in range(self.size)
        ]
        self._write_configuration()

    def _save_state(self) -> None:
        """What a later start with the same ``data_dir`` needs (written once formatted)."""
        state = {
            "cluster_id": self.cluster_id,
            "kafka_version": self.jars.version,
            "nodes": [[n.node_id, n.port, n.controller_port] for n in self.nodes],
        }
        (self.base / STATE_FILE).write_text(json.dumps(state, indent=1))

    def _load_state(self) -> None:
        assert self.data_dir is not None
        state = json.loads((self.data_dir / STATE_FILE).read_text())
        if len(state["nodes"]) != self.size:
            raise KafkaSetupError(
                f"{self.data_dir} holds a {len(state['nodes'])}-node cluster; start it with "
                f"--nodes {len(state['nodes'])} or give another --data-dir"
            )
        self.cluster_id = state["cluster_id"]
        self.nodes = [
            Node(i, port, controller, self.data_dir / f"node-{i}")
            for i, port, controller in state["nodes"]
        ]
        self._write_configuration()  # the same ports; the jars' folder may have moved

    def _write_configuration(self) -> None:
        (self.base / "log4j2.properties").write_text(LOG4J2)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        for node in self.nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            properties = node_properties(
                node.node_id,
                self.size,
                node.port,
                node.controller_port,
                voters,
                node.folder / "data",
            )
            text = "".join(f"{key}={value}\n" for key, value in properties.items())
            (node.folder / "server.properties").write_text(text)

    def _java_command(self, node: Node, classpath: str, main: str) -> list[str]:
        return [
            self._java,
            f"-Xmx{self.heap}",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.base / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.folder}",
            "-cp",
            classpath,
            main,
        ]

    def _format(self, classpath: str) -> None:
        """Write each node's metadata (cluster id, node id), all nodes at once."""
        running = []
        for node in self.nodes:
            command = self._java_command(node, classpath, "kafka.tools.StorageTool") + [
                "format",
                "--cluster-id",
                self.cluster_id,
                "--config",
                str(node.folder / "server.properties"),
            ]
            running.append((node, subprocess.Popen(command, stdout=subprocess.PIPE, text=True)))
        for node, process in running:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                detail = " | ".join(output.strip().splitlines()[-2:])
                raise KafkaSetupError(f"formatting Kafka node {node.node_id} failed: {detail}")

    def _launch(self, node: Node, classpath: str) -> None:
        with open(node.log_path, "ab") as log_file:
            command = self._java_command(node, classpath, "kafka.Kafka")
            node.process = subprocess.Popen(
                [*command, str(node.folder / "server.properties")],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=node.folder,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, who stop the nodes
            )

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(graceful=self.data_dir is not None)  # temporary data: no need to wait


@contextlib.contextmanager
def _quiet_client_logs():  # type: ignore[no-untyped-def]
    """kafka-python logs every refused connection at ERROR while a node starts: hush it."""
    logger = logging.getLogger("kafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
