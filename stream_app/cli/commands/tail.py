"""``prodcat tail``: watch a topic (assignments by default) as a live table or JSON lines.

Reads through :mod:`prodcat.kafka.assignments`, the helper downstream services use, so on
the assignments topic it shows each source event once, as a deduplicating consumer sees it.
The table is rich's, which measures text in terminal cells: Chinese labels and titles
(two cells a character) stay aligned with the rest.
"""

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

from prodcat.cli.options import broker_option, connect, json_option
from prodcat.core.settings import Settings
from prodcat.kafka.assignments import Record, poll_records, unique_assignments
from prodcat.kafka.clients import consumer

TABLE_ROWS = 25


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
@click.option(
    "--keep-duplicates",
    is_flag=True,
    help="On the assignments topic, also show repeated assignments of a source event "
    "(after a worker crash) and messages that are not valid assignments.",
)
@json_option(
    "One JSON line per message: {topic, partition, offset, timestamp_ms, key, headers, value}."
)
@click.pass_obj
def command(
    settings: Settings,
    topic: str | None,
    from_beginning: bool,
    max_messages: int | None,
    group: str | None,
    timeout: float | None,
    keep_duplicates: bool,
    as_json: bool,
) -> None:
    """Print messages of a topic as they arrive, until Ctrl-C, --max or --timeout.

    Without --from-beginning only new messages are shown. On the assignments topic each
    source event is shown once (as a deduplicating consumer sees it), unless
    --keep-duplicates.
    """
    bootstrap = connect(settings)
    topic = topic or settings.topics.categories
    started_ms = time.time() * 1000
    client, at_end = _subscribe(settings, bootstrap, topic, group, from_beginning)
    try:
        records = poll_records(
            client,
            max_messages=max_messages,
            idle_timeout_s=timeout,
            skip=_replayed(at_end, started_ms),
        )
        if topic == settings.topics.categories and not keep_duplicates:
            records = unique_assignments(records)
        if as_json:
            for record in records:
                click.echo(orjson.dumps(record.to_json()))
        else:
            _live_table(records, topic)
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
    last batch (it has no correct latest offsets), so the rest of that batch would be
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


def _live_table(records: Iterator[Record], topic: str) -> None:
    """A table of the latest messages, redrawn as they arrive (printed once when piped)."""
    recent: deque[Record] = deque(maxlen=TABLE_ROWS)
    seen = 0
    console = Console()
    with Live(console=console, auto_refresh=False, transient=True) as live:
        for record in records:
            recent.append(record)
            seen += 1
            if console.is_terminal:
                live.update(_table(recent, topic, seen), refresh=True)
    console.print(_table(recent, topic, seen))


def _table(recent: deque[Record], topic: str, seen: int) -> Table:
    table = Table(title=f"{topic}: {seen} message(s) received", title_justify="left")
    table.add_column("p:offset", min_width=8, no_wrap=True)
    table.add_column("key", min_width=8, max_width=36, overflow="ellipsis", no_wrap=True)
    table.add_column("kind", min_width=10, no_wrap=True)
    table.add_column("summary", min_width=20, max_width=70, overflow="ellipsis", no_wrap=True)
    table.add_column("detail", min_width=10, overflow="ellipsis", no_wrap=True)
    for record in recent:
        kind, summary, detail = describe(record.value)
        table.add_row(
            f"{record.partition}:{record.offset}", record.key or "", kind, summary, detail
        )
    return table


def describe(value: Any) -> tuple[str, str, str]:
    """(kind, summary, detail) of an assignment, product event, dead letter or other value."""
    if isinstance(value, dict) and "category_path" in value:
        path = " > ".join(step["label"] for step in value["category_path"])
        score = min(step["score"] for step in value["category_path"])
        review = "  NEEDS REVIEW" if value.get("needs_review") else ""
        locale = f"  {value['locale']}" if value.get("locale") else ""
        return "assignment", path, f"min score {score:.2f}{locale}{review}"
    if isinstance(value, dict) and "title" in value:
        image = value.get("image") or {}
        photo = "photo (inline)" if "data" in image else "photo (url)" if image else "no photo"
        return "product", str(value["title"])[:80], photo
    if isinstance(value, dict) and "stage" in value:
        error = value.get("error") or {}
        return "dead letter", f"stage {value['stage']}", str(error.get("message", ""))[:120]
    return "other", str(value)[:80], ""
