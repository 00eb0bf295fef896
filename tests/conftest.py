"""Shared pytest fixtures for prodcat's test suite.

The plugin-author fixtures (``plugin_manager``, ``register_plugin``, ``installed_plugin``)
come from prodcat's own pytest plugin, ``prodcat.testing``, as they do for any plugin
package's tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dockerfile import DOCKERFILE, Stage, parse_dockerfile

if TYPE_CHECKING:
    from prodcat.kafka.jars import KafkaJars

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
def fashion(data_dir: Path) -> Path:
    """The fashion catalogue's CSV (a module may override it with its own ``fashion``)."""
    return data_dir / "fashion" / "catalog.csv"


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """A real embedded Tansu broker on a free port for the whole session; yields its bootstrap."""
    from prodcat.kafka.embedded import EmbeddedBroker

    with EmbeddedBroker(port=0) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def kafka_jars() -> KafkaJars:
    """The pinned Apache Kafka release, fetched (./run.sh runs the fetch), and Java to run it."""
    from prodcat.core.settings import load_settings
    from prodcat.kafka.jars import KafkaJars, KafkaSetupError, find_java

    jars = KafkaJars.pinned(load_settings().cache_dir)
    try:
        find_java()
        jars.classpath()
    except KafkaSetupError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))  # CI must run the real-Kafka tests
        pytest.skip(str(exc))
    return jars


@pytest.fixture(scope="session")
def kafka_broker(kafka_jars: KafkaJars) -> Iterator[str]:
    """A real single-node Apache Kafka (KRaft) for the whole session; yields its bootstrap."""
    from prodcat.kafka.cluster import KafkaCluster

    with KafkaCluster(kafka_jars) as cluster:
        yield cluster.bootstrap


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> str:
    """The streaming tests' broker: the embedded one, then real Apache Kafka."""
    return request.getfixturevalue(f"{'embedded' if request.param == 'tansu' else 'kafka'}_broker")


@pytest.fixture(scope="session")
def stages() -> list[Stage]:
    """The Dockerfile's stages, parsed (tests/dockerfile.py)."""
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def runtime(stages: list[Stage]) -> Stage:
    """The final stage: what actually runs."""
    return stages[-1]
