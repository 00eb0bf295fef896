"""``prodcat publish FILE``: publish products from a CSV or JSONL file as product events."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prodcat.cli.options import broker_option, connect, json_option
from prodcat.core.settings import Settings
from prodcat.kafka.clients import ensure_topics, producer
from prodcat.kafka.publisher import PublishSummary, publish_rows
from prodcat.sources import FORMATS, SourceError, SourceRow, detect_format, read_source

MAX_LISTED_PROBLEMS = 20


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@broker_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Input format (default: detected from the extension and CSV header).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many rows.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second.")
@click.option("--topic", help="Topic to publish to (default: setting topics.products).")
@click.option("--no-images", is_flag=True, help="Leave photos out (text-only events).")
@json_option("Print the summary as JSON, no progress.")
@click.pass_obj
def command(
    settings: Settings,
    file: Path,
    fmt: str | None,
    limit: int | None,
    rate: float | None,
    topic: str | None,
    no_images: bool,
    as_json: bool,
) -> None:
    """Publish every product in FILE to Kafka (key = product_id).

    FILE is fashion/catalog.csv (photos are sent inline), pricerunner or amazon_uk_toys
    products.csv, or JSONL with one product event per line. Rows that cannot become a valid
    event are reported with their line number and skipped; the exit status is 1 if any was.
    """
    try:
        fmt = fmt or detect_format(file)
        rows = read_source(file, fmt, inline_images=not no_images, limit=limit)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    bootstrap = connect(settings)
    topic = topic or settings.topics.products
    ensure_topics(settings, bootstrap, extra=(topic,))
    console = Console(stderr=True)
    client = producer(settings, bootstrap)
    try:
        with _progress(console, as_json) as progress:
            task = progress.add_task(f"{file.name} -> {topic}", total=_row_count(file, limit))

            def on_row(row: SourceRow, problem: str | None) -> None:
                progress.advance(task)
                if problem is not None and not as_json:
                    console.print(f"[yellow]line {row.line}: rejected: {problem}[/]")

            summary = publish_rows(client, rows, topic, rate=rate, on_row=on_row)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    _report(summary, as_json, console)


def _progress(console: Console, disabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disabled,
    )


def _row_count(file: Path, limit: int | None) -> int | None:
    """Data rows in the file (lines, less a CSV header), for the progress bar's total."""
    with open(file, "rb") as handle:
        lines = sum(1 for _ in handle)
    rows = lines if file.suffix.lower() in (".jsonl", ".ndjson") else lines - 1
    return min(rows, limit) if limit else rows


def _report(summary: PublishSummary, as_json: bool, console: Console) -> None:
    if as_json:
        click.echo(orjson.dumps(summary.as_dict()))
    else:
        console.print(
            f"sent {summary.sent}, rejected {summary.rejected}, failed {summary.failed} "
            f"in {summary.seconds:.1f} s ({summary.events_per_s:.0f} events/s)"
        )
        failures = [p for p in summary.problems if p[1].startswith("broker refused")]
        for line, reason in failures[:MAX_LISTED_PROBLEMS]:
            console.print(f"[red]line {line}: {reason}[/]")
    not_sent = summary.rejected + summary.failed
    if not_sent:
        raise click.ClickException(
            f"{not_sent} row(s) were not published (see the line numbers reported)"
        )
