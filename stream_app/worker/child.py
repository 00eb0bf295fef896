"""``prodcat worker`` as a child process: start it, watch /ready and /metrics, stop it by PID.

Used by ``prodcat demo`` and by the tests that need real worker processes (end to end,
two workers in a group, crash recovery). The web port is chosen up front so the caller
knows where /ready is without parsing logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from prodcat.core.ports import free_port

PRODCAT = str(Path(sys.executable).with_name("prodcat"))


class WorkerFailed(RuntimeError):
    """The worker exited or never became ready; the message ends with its log's tail."""


@dataclass
class WorkerProcess:
    """``prodcat worker`` in a subprocess, with its web port and log file."""

    model: Path
    bootstrap: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    program: str = PRODCAT  # the prodcat executable (another installation's, in tests)
    cwd: Path | None = None  # default: ours, so it reads the same prodcat.toml
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        model = os.path.abspath(self.model)  # not resolve(): a symlink is how bundles swap
        command = [self.program, "worker", "--model", model, "--broker", self.bootstrap]
        return command + ["--web-port", str(self.port)]

    def start(self) -> Self:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        command = self.command()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ready(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/ready")
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def wait_ready(self, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.tail()}"
                )
            state = self.ready()
            if state:
                return state
            time.sleep(0.5)
        raise WorkerFailed(f"worker not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample of the worker's /metrics (0 when absent)."""
        _, body = self.get("/metrics")
        wanted = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in (labels or {}).items()) + "}" if labels else ""
        )
        for line in body.decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send ``sig`` and wait for the exit status (SIGKILL after the timeout)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])
