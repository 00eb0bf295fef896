"""The demo's processes: a worker, and with ``--dashboard`` the web page, until Ctrl-C.

The dashboard gets a fresh review token; the link printed carries it in its fragment
(``#token=...``), which the browser never sends to a server, so one click signs the person
in. The embedded broker keeps everything in memory, so when the demo stops the decisions
made on the page are saved as JSONL for ``prodcat train --corrections FILE``.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
from rich.console import Console

from prodcat.core.ports import free_port, port_in_use
from prodcat.core.settings import Settings
from prodcat.dashboard.child import DashboardProcess
from prodcat.kafka.corrections import read_corrections_topic
from prodcat.worker.child import WorkerProcess

DASHBOARD_RATE = 5.0  # products/s when a person watches them arrive


class DemoServices:
    """Starts the worker (and the dashboard) on entry, stops them by PID on exit."""

    def __init__(
        self, settings: Settings, bootstrap: str, model: Path, console: Console, dashboard: bool
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.model = model
        self.console = console
        self.with_dashboard = dashboard
        self.folder = Path(settings.cache_dir) / "demo"
        self.worker: WorkerProcess | None = None
        self.dashboard: DashboardProcess | None = None
        self.token = secrets.token_urlsafe(16)

    def __enter__(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        group = {"PRODCAT_WORKER__GROUP_ID": f"prodcat-demo-{os.getpid()}"}
        log = self.folder / "worker.log"
        self.worker = WorkerProcess(self.model, self.bootstrap, log, env=group).start()
        self.console.print(f"worker starting (log: {log}) ...")
        try:
            if self.with_dashboard:
                self._start_dashboard()
            self.worker.wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.console.print("worker ready; publishing products")
        return self

    def _start_dashboard(self) -> None:
        assert self.worker is not None
        host, port = "127.0.0.1", self.settings.dashboard.port
        self.dashboard = DashboardProcess(
            self.model,
            self.bootstrap,
            self.folder / "dashboard.log",
            env={"PRODCAT_DASHBOARD__REVIEW_TOKENS": f"you:{self.token}"},
            port=free_port() if port_in_use(host, port) else port,
            worker_metrics=[f"http://127.0.0.1:{self.worker.port}/metrics"],
        ).start()
        self.dashboard.wait_ready()
        self.console.print(
            f"[bold]dashboard:[/] {self.dashboard.url}#token={self.token}  "
            "(open it: live feed, review queue, drift)",
            soft_wrap=True,  # a URL or command cut in two cannot be copied
        )

    def hold(self) -> None:
        """Keep serving until Ctrl-C or SIGTERM, then save the corrections made."""
        assert self.dashboard is not None
        self.console.print(
            f"\n[bold]The dashboard stays up:[/] {self.dashboard.url}#token={self.token}\n"
            "Open the review queue, fix a product, and watch the correction on the topic:\n"
            f"  prodcat tail --topic {self.settings.topics.corrections} --from-beginning "
            f"-b {self.bootstrap}\n"
            "Press Ctrl-C to stop (the corrections are then saved for the next training run).",
            soft_wrap=True,
        )
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.save_corrections()

    def save_corrections(self) -> Path:
        found = read_corrections_topic(self.settings, self.bootstrap, idle_s=1.0)
        path = self.folder / "corrections.jsonl"
        path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in found))
        self.console.print(
            f"{len(found)} corrections saved to {path}; fold them into the next model:\n"
            f"  prodcat train --corrections {path}",
            soft_wrap=True,
        )
        return path

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in (self.dashboard, self.worker):
            if process is not None and process.process is not None:
                process.stop()
