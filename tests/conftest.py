"""Shared pytest fixtures for prodcat's test suite.

The plugin-author fixtures (``plugin_manager``, ``register_plugin``, ``installed_plugin``)
come from prodcat's own pytest plugin, ``prodcat.testing``, as they do for any plugin
package's tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dockerfile import DOCKERFILE, Stage, parse_dockerfile

BROKEN_PLUGIN_ERROR = "ImportError: prodcat_broken needs libfoo, which is not installed"


@pytest.fixture
def broken_plugin(installed_plugin: Callable[..., Path]) -> Path:
    """An installed plugin (entry point ``broken``, version 2.3) whose import fails."""
    source = f"raise ImportError({BROKEN_PLUGIN_ERROR.removeprefix('ImportError: ')!r})\n"
    return installed_plugin("broken", "prodcat_broken", source, version="2.3")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data sets folder (setting ``data_dir`` / ``PRODCAT_DATA_DIR``)."""
    from prodcat.core.settings import load_settings

    path = load_settings().data_path()
    if not (path / "fashion" / "catalog.csv").is_file():
        message = f"data sets not found at {path}; set PRODCAT_DATA_DIR"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must never pass by skipping the real-data tests
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """A real embedded Tansu broker on a free port for the whole session; yields its bootstrap."""
    from prodcat.kafka.embedded import EmbeddedBroker

    with EmbeddedBroker(port=0) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def stages() -> list[Stage]:
    """The Dockerfile's stages, parsed (tests/dockerfile.py)."""
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def runtime(stages: list[Stage]) -> Stage:
    """The final stage: what actually runs."""
    return stages[-1]
