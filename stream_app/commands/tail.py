"""``prodcat tail``: watch a topic (assignments by default) as a live table or JSON lines."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import click
import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream_app.commands.kafka_cli import broker_option, connect
from stream_app.config import Settings
from stream_app.kafka import consumer

TABLE_ROWS = 25
POLL_MS = 500


@click.command()
@broker_option
@click.option("--topic", help="Topic to watch (default: setting topics.categories).")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message.")
@click.option("--max", "max_messages", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option("--group", help="Consume as this consumer group (commits offsets); default none.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this many seconds without a new message.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per message.")
@click.pass_obj
def command(
    settings: Settings,
    topic: str | None,
    from_beginning: bool,
    max_messages: int | None,
    group: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Print messages of a topic as they arrive, until Ctrl-C, --max or --timeout.

    JSON lines are {topic, partition, offset, key, value} with the value parsed. Without
    --from-beginning only new messages are shown.
    """
    bootstrap = connect(settings)
    topic = topic or settings.topics.categories
    started_ms = time.time() * 1000
    client, at_end = _subscribe(settings, bootstrap, topic, group, from_beginning)
    try:
        messages = _messages(client, max_messages, timeout, _replayed(at_end, started_ms))
        if as_json:
            for message in messages:
                click.echo(orjson.dumps(message))
        else:
            _live_table(messages, topic)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _subscribe(
    settings: Settings, bootstrap: str, topic: str, group: str | None, from_beginning: bool
) -> tuple[Any, set[int]]:
    """A consumer positioned as asked, and the partitions it positioned at their end."""
    from kafka import TopicPartition

    client = consumer(
        settings,
        bootstrap,
        group_id=group,
        enable_auto_commit=group is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    if group is not None:
        client.subscribe([topic])
        return client, set()
    partitions = client.partitions_for_topic(topic)
    if not partitions:
        client.close()
        raise click.ClickException(
            f"topic {topic!r} does not exist on {bootstrap}; create it with `prodcat topics`"
        )
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    client.assign(assigned)
    if from_beginning:
        client.seek_to_beginning(*assigned)
        return client, set()
    client.seek_to_end(*assigned)
    return client, set(partitions)


def _replayed(at_end: set[int], started_ms: float) -> Callable[[Any], bool]:
    """Whether a record is an old one replayed after seeking to the end.

    The embedded broker answers "latest" with the offset after the *first* record of the
    last batch (DESIGN.md: no correct latest offsets), so the rest of that batch would be
    shown as new. Until a partition yields a record produced after the tail started, its
    older records are such leftovers and are dropped.
    """
    caught_up: set[int] = set()

    def replayed(record: Any) -> bool:
        if record.partition not in at_end or record.partition in caught_up:
            return False
        if record.timestamp < started_ms:
            return True
        caught_up.add(record.partition)
        return False

    return replayed


def _messages(
    client: Any,
    max_messages: int | None,
    timeout: float | None,
    skip: Callable[[Any], bool],
) -> Iterator[dict]:
    """Messages as dicts, stopping after ``max_messages`` or ``timeout`` seconds of silence."""
    count = 0
    last = time.monotonic()
    while max_messages is None or count < max_messages:
        batches = client.poll(timeout_ms=POLL_MS, max_records=max_messages and max_messages - count)
        if not batches:
            if timeout is not None and time.monotonic() - last >= timeout:
                return
            continue
        last = time.monotonic()
        for record in (r for records in batches.values() for r in records):
            if skip(record):
                continue
            count += 1
            yield {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
                "value": _parse(record.value),
            }


def _parse(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


def _live_table(messages: Iterator[dict], topic: str) -> None:
    """A table of the latest messages, redrawn as they arrive (printed once when piped)."""
    recent: deque[dict] = deque(maxlen=TABLE_ROWS)
    seen = 0
    console = Console()
    with Live(console=console, auto_refresh=False, transient=True) as live:
        for message in messages:
            recent.append(message)
            seen += 1
            if console.is_terminal:
                live.update(_table(recent, topic, seen), refresh=True)
    console.print(_table(recent, topic, seen))


def _table(recent: deque[dict], topic: str, seen: int) -> Table:
    table = Table(title=f"{topic}: {seen} message(s) received", title_justify="left")
    table.add_column("p:offset", min_width=8, no_wrap=True)
    table.add_column("key", min_width=8, max_width=36, overflow="ellipsis", no_wrap=True)
    table.add_column("kind", min_width=10, no_wrap=True)
    table.add_column("summary", min_width=20, max_width=70, overflow="ellipsis", no_wrap=True)
    table.add_column("detail", min_width=10, overflow="ellipsis", no_wrap=True)
    for message in recent:
        kind, summary, detail = describe(message["value"])
        where = f"{message['partition']}:{message['offset']}"
        table.add_row(where, message["key"] or "", kind, summary, detail)
    return table


def describe(value: Any) -> tuple[str, str, str]:
    """(kind, summary, detail) of an assignment, product event, dead letter or other value."""
    if isinstance(value, dict) and "category_path" in value:
        path = " > ".join(step["label"] for step in value["category_path"])
        score = min(step["score"] for step in value["category_path"])
        review = "  NEEDS REVIEW" if value.get("needs_review") else ""
        return "assignment", path, f"min score {score:.2f}{review}"
    if isinstance(value, dict) and "title" in value:
        image = value.get("image") or {}
        photo = "photo (inline)" if "data" in image else "photo (url)" if image else "no photo"
        return "product", str(value["title"])[:80], photo
    if isinstance(value, dict) and "stage" in value:
        error = value.get("error") or {}
        return "dead letter", f"stage {value['stage']}", str(error.get("message", ""))[:120]
    return "other", str(value)[:80], ""
