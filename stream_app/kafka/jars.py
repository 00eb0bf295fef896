"""The pinned Apache Kafka release: its jars (fetched once by Maven), and a Java to run them.

The release is the one ``deploy/kafka/pom.xml`` names (installed as package data,
``prodcat.kafka.maven``, so a wheel can fetch it too). ``fetch_jars`` runs Maven on that pom
and copies the broker's runtime classpath into ``<cache_dir>/kafka/<version>/libs``, with
Maven's own download cache beside it in ``<cache_dir>/kafka/m2``: everything stays in one
git-ignored folder, and a second fetch finds the folder and runs nothing. Missing Java,
Maven or jars are :class:`KafkaSetupError` with one line saying what to do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

MIN_JAVA = 17  # the Kafka 4.x broker is compiled for Java 17 (class file version 61)
FETCH_COMMAND = "prodcat broker --engine kafka --fetch"
FETCH_TIMEOUT_S = 900
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class KafkaSetupError(RuntimeError):
    """Java, Maven or the Kafka jars are missing or unusable; the message says what to do."""


def pom_path() -> Path:
    """The Maven project that pins the release (a real file: Maven needs a path)."""
    return Path(str(resources.files("prodcat.kafka.maven") / "pom.xml"))


def pinned_version(pom: Path | None = None) -> str:
    """``kafka.version`` from the pom: the one place the release is pinned."""
    root = ET.parse(pom or pom_path()).getroot()
    version = root.findtext("m:properties/m:kafka.version", namespaces=POM_NS)
    if not version:
        raise KafkaSetupError(f"{pom or pom_path()} names no kafka.version")
    return version.strip()


@dataclass(frozen=True)
class KafkaJars:
    """Where one Kafka release's jars live (or will, once fetched)."""

    version: str
    home: Path  # <cache_dir>/kafka/<version>

    @classmethod
    def pinned(cls, cache_dir: str | Path) -> KafkaJars:
        version = pinned_version()
        return cls(version, Path(cache_dir).expanduser().resolve() / "kafka" / version)

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def maven_repository(self) -> Path:
        return self.home.parent / "m2"

    @property
    def present(self) -> bool:
        """Fetched completely (the folder is renamed into place only after Maven succeeded)."""
        return (self.libs / f"kafka_2.13-{self.version}.jar").is_file()

    def classpath(self) -> str:
        """The ``-cp`` argument, or :class:`KafkaSetupError` naming the fetch command."""
        if not self.present:
            raise KafkaSetupError(
                f"Apache Kafka {self.version} is not fetched yet (no jars in {self.libs}); "
                f"run `{FETCH_COMMAND}` once (Maven, about 45 MB from Maven Central)"
            )
        return f"{self.libs}/*"


def fetch_jars(jars: KafkaJars) -> bool:
    """Fetch the release's jars with Maven unless present; True when something was fetched."""
    if jars.present:
        return False
    mvn = find_maven()
    partial = jars.home / f"libs.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom_path()),
        f"-Dmaven.repo.local={jars.maven_repository}",
        f"-Dkafka.version={jars.version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KafkaSetupError(f"Maven did not finish in {FETCH_TIMEOUT_S} s") from None
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
        errors = [line for line in output.splitlines() if "ERROR" in line][:2]
        detail = " | ".join(errors) or output.strip()[-300:] or "no output"
        raise KafkaSetupError(f"Maven could not fetch Apache Kafka {jars.version}: {detail}")
    shutil.rmtree(jars.libs, ignore_errors=True)
    partial.rename(jars.libs)
    return True


def find_maven() -> str:
    """The ``mvn`` on PATH, or :class:`KafkaSetupError` saying how to get it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(
            "Maven (mvn) not found on PATH; install it (Debian: apt-get install maven) and "
            f"run `{FETCH_COMMAND}` again"
        )
    return mvn


def find_java() -> str:
    """A ``java`` of version MIN_JAVA or newer: ``$JAVA_HOME/bin/java``, else PATH's."""
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java")] if home else []
    candidates += [found] if (found := shutil.which("java")) else []
    for java in candidates:
        version = java_version(java)
        if version is None:
            continue
        if version < MIN_JAVA:
            raise KafkaSetupError(
                f"{java} is Java {version}; Apache Kafka needs Java {MIN_JAVA} or newer "
                "(set JAVA_HOME to one)"
            )
        return java
    raise KafkaSetupError(
        f"no java found (looked at $JAVA_HOME and PATH); install Java {MIN_JAVA}+ "
        "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    )


def java_version(java: str) -> int | None:
    """The major version ``java -version`` reports (8 for "1.8.0"), None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major
