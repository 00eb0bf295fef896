"""``prodcat dashboard`` as a child process, for ``prodcat demo --dashboard`` and the tests.

The same life cycle as a worker child (:class:`~prodcat.worker.child.WorkerProcess`): a
port chosen up front, /ready polled, stopped by PID with SIGTERM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prodcat.worker.child import WorkerProcess


@dataclass
class DashboardProcess(WorkerProcess):
    """``prodcat dashboard`` on 127.0.0.1:``port``, scraping ``worker_metrics``."""

    worker_metrics: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        command = [self.program, "dashboard", "--model", os.path.abspath(self.model)]
        command += ["--broker", self.bootstrap, "--host", "127.0.0.1", "--port", str(self.port)]
        for url in self.worker_metrics:
            command += ["--worker-metrics", url]
        return command

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"
