"""The command line as users run it: help everywhere, one-line errors, real broker round trips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

from prodcat.cli.main import COMMANDS, LazyGroup, cli
from prodcat.core.ports import free_port
from prodcat.core.settings import Settings
from prodcat.kafka.clients import ensure_topics, producer

PRODCAT = [sys.executable, "-m", "prodcat.cli.main"]
EXISTING = LazyGroup().list_commands(None)  # type: ignore[arg-type]


def run(args: list[str], env: dict[str, str] | None = None):
    """Invoke ``prodcat`` in-process with a clean prodcat environment."""
    base = {"PRODCAT_CONFIG": "/nonexistent/prodcat.toml", "PRODCAT_BROKER": ""}
    return CliRunner().invoke(cli, args, env=base | (env or {}), catch_exceptions=False)


def tail_from_start(bootstrap: str, topic: str, count: int, *extra: str, env=None):
    """``prodcat tail`` of the first ``count`` messages of ``topic``."""
    args = ["tail", "--broker", bootstrap, "--topic", topic, "--from-beginning"]
    return run([*args, "--max", str(count), "--timeout", "10", *extra], env)


def test_top_level_help_lists_the_commands() -> None:
    result = subprocess.run([*PRODCAT, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in ("broker", "topics", "publish", "tail"):
        assert name in result.stdout


@pytest.mark.parametrize("name", EXISTING)
def test_every_command_has_help(name: str) -> None:
    result = run([name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and name in result.output
    assert name in COMMANDS


@pytest.mark.parametrize("name", EXISTING)
def test_every_option_says_what_it_does(name: str) -> None:
    command = LazyGroup().get_command(None, name)  # type: ignore[arg-type]
    undocumented = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert undocumented == []


def test_publish_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = run(["publish", str(tmp_path / "nope.csv"), "--broker", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "no such file" in result.output and "Traceback" not in result.output


def test_publish_without_a_broker_says_how_to_get_one(data_dir: Path) -> None:
    result = run(["publish", str(data_dir / "pricerunner" / "products.csv")])
    assert result.exit_code == 1
    assert "--broker" in result.output and "prodcat broker" in result.output


def test_unreachable_broker_fails_fast(data_dir: Path) -> None:
    port = free_port()  # nobody listens there
    commands = [["publish", str(data_dir / "pricerunner" / "products.csv")], ["topics"], ["tail"]]
    env = os.environ | {"PRODCAT_CONFIG": "/nonexistent.toml"}
    processes = [  # run side by side: each gives up after ~5 s
        subprocess.Popen(
            [*PRODCAT, *args, "--broker", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in commands
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=30)  # only guards against a hang
        assert process.returncode == 1
        assert f"no Kafka broker answers at 127.0.0.1:{port}" in stderr
        assert "Traceback" not in stderr


@pytest.mark.integration
def test_publish_reports_a_malformed_row_and_sends_the_rest(
    embedded_broker: str, data_dir: Path, tmp_path: Path
) -> None:
    with open(data_dir / "pricerunner" / "products.csv", encoding="utf-8") as handle:
        header, first, second = (next(handle) for _ in range(3))
    path = tmp_path / "products.csv"
    path.write_text(header + first + "99,broken row\n" + second, encoding="utf-8")
    topic = "cli.malformed"
    result = run(["publish", str(path), "--broker", embedded_broker, "--topic", topic, "--json"])
    assert result.exit_code == 1
    summary = orjson.loads(result.stdout.splitlines()[0])
    assert (summary["sent"], summary["rejected"]) == (2, 1)
    assert summary["problems"] == [{"line": 3, "reason": "expected 7 columns, found 2"}]
    assert "were not published" in result.output

    tail = tail_from_start(embedded_broker, topic, 2, "--json")
    assert tail.exit_code == 0, tail.output
    lines = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert sorted(line["key"] for line in lines) == ["1", "2"]
    for line in lines:  # what users look for: when, and the event's id and trace
        assert line["timestamp_ms"] > 1_700_000_000_000
        assert set(line["headers"]) >= {"event_id", "traceparent", "content-type"}
        assert line["headers"]["event_id"] == line["value"]["event_id"]


@pytest.mark.parametrize(
    "variable", ["PRODCAT_DEBUG", "PRODCAT_WORKERS", "PRODCAT_PARTITIONS", "PRODCAT_TYPO"]
)
def test_stray_prodcat_variables_do_not_break_commands(variable: str) -> None:
    env = os.environ | {"PRODCAT_CONFIG": "/nonexistent.toml", variable: "1"}
    done = subprocess.run(
        [*PRODCAT, "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["plugins"]
    warned = f"ignoring {variable}" in done.stderr
    assert warned == (variable == "PRODCAT_TYPO")


def test_worker_without_a_broker_refuses_to_start(tmp_path: Path) -> None:
    result = run(["worker", "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert "no broker configured" in result.output and "--embedded" in result.output


def test_broker_short_option_and_json_help() -> None:
    for command in ("publish", "topics", "tail", "worker"):
        assert "-b, --broker HOST:PORT" in run([command, "--help"]).output
    broker_help = " ".join(run(["broker", "--help"]).output.split())
    assert "{bootstrap, pid, log}" in broker_help


def test_bench_writes_docs_only_when_asked() -> None:
    command = LazyGroup().get_command(None, "bench")  # type: ignore[arg-type]
    (docs,) = [p for p in command.params if p.name == "docs"]
    assert docs.opts == ["--write-docs"] and docs.default is None


@pytest.mark.integration
def test_topics_creates_and_lists(embedded_broker: str) -> None:
    result = run(
        ["topics", "--json"],
        env={"PRODCAT_BROKER": embedded_broker, "PRODCAT_TOPICS__CATEGORIES": "cli.categories"},
    )
    assert result.exit_code == 0, result.output
    listed = orjson.loads(result.stdout)
    assert listed["products"] == listed["cli.categories"] == listed["products.dlq"] == 4


@pytest.mark.integration
def test_tail_renders_a_table(embedded_broker: str, data_dir: Path) -> None:
    catalog = str(data_dir / "fashion" / "catalog.csv")
    topic = "cli.table"
    sent = run(
        [
            "publish",
            catalog,
            "--broker",
            embedded_broker,
            "--topic",
            topic,
            "--limit",
            "3",
            "--json",
        ]
    )
    assert sent.exit_code == 0, sent.output
    result = tail_from_start(embedded_broker, topic, 3, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "3 message(s) received" in result.output
    assert "Turtle Check Men Navy Blue Shirt" in result.output


@pytest.mark.integration
def test_broker_command_runs_until_sigterm() -> None:
    process = subprocess.Popen(
        [*PRODCAT, "broker", "--port", "0", "--json"], stdout=subprocess.PIPE, text=True
    )
    try:
        ready = orjson.loads(process.stdout.readline())  # type: ignore[union-attr]
        assert ready["bootstrap"].startswith("127.0.0.1:")
        in_use = run(["broker", "--port", ready["bootstrap"].rsplit(":", 1)[1]])
        assert in_use.exit_code == 1 and "already in use" in in_use.output
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(ready["pid"], 0)


@pytest.mark.integration
def test_tail_without_from_beginning_shows_only_new_messages(embedded_broker: str) -> None:
    settings = Settings(broker=embedded_broker)
    topic = "cli.new-only"
    ensure_topics(settings, embedded_broker, extra=(topic,))
    client = producer(settings, embedded_broker)
    for number in range(20):
        client.send(topic, key=f"old-{number}".encode(), value=b'{"title": "old"}')
    client.flush()
    tail = subprocess.Popen(
        [
            *PRODCAT,
            "tail",
            "--broker",
            embedded_broker,
            "--topic",
            topic,
            "--json",
            "--max",
            "3",
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    number = 0
    while tail.poll() is None and number < 200:  # keep publishing until tail has seen 3
        client.send(topic, key=f"new-{number}".encode(), value=b'{"title": "new"}').get(10)
        number += 1
        time.sleep(0.1)
    client.close()
    output, _ = tail.communicate(timeout=30)
    keys = [orjson.loads(line)["key"] for line in output.splitlines()]
    assert len(keys) == 3 and all(key.startswith("new-") for key in keys), keys
