"""``prodcat demo``: train if needed, start a broker and a worker, classify products live.

With no arguments on a fresh clone: trains a quick model into ``models/default`` when none
is there, starts the embedded broker and one worker process, publishes fashion products the
model never trained on (some without photo, a few malformed), prints each outcome as it
arrives and ends with events/s, latency percentiles, accuracy and dead letters by reason.
With ``--dashboard`` the web page runs beside them until Ctrl-C
(prodcat/demo/services.py).
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prodcat.cli.commands.train import resolve_data
from prodcat.cli.options import json_option, model_option, serving_broker
from prodcat.core.settings import Settings
from prodcat.demo.cells import pad_cells
from prodcat.demo.products import DemoProduct, malformed_events, unseen_products
from prodcat.demo.quick_model import have_model, train_quick_model, train_recipe_model
from prodcat.demo.services import DASHBOARD_RATE, DemoServices
from prodcat.demo.tally import Tally
from prodcat.kafka.clients import consumer as kafka_consumer
from prodcat.kafka.clients import producer as kafka_producer
from prodcat.model.bundle import BundleError, ModelBundle
from prodcat.training.dataset_recipes import RECIPES
from prodcat.worker.child import WorkerFailed


@click.command()
@model_option("Model bundle (default: the model_dir setting); trained when missing.")
@click.option(
    "--products",
    type=click.IntRange(1, 5000),
    default=300,
    show_default=True,
    help="How many unseen products to publish.",
)
@click.option(
    "--train-rows",
    type=click.IntRange(100),
    default=1000,
    show_default=True,
    help="Photo rows for the quick model, when one must be trained.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Give up waiting for outcomes after this many seconds.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Publish at this many events/s (default: all at once, a burst).",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Also serve `prodcat dashboard` (live feed, review queue, drift) and keep running "
    f"until Ctrl-C; products are then paced at {DASHBOARD_RATE:g}/s unless --rate says "
    "otherwise, and the corrections made are saved for `prodcat train --corrections`.",
)
@click.option(
    "--dataset",
    type=click.Choice(sorted(RECIPES)),
    help="Classify products of this text-only catalogue in its own language instead of "
    "fashion; its model (default folder: models/<dataset>) is trained with the data set's "
    "recipe when missing, as `prodcat train --dataset NAME` does.",
)
@json_option("Print only the summary, as JSON.")
@click.pass_obj
def command(
    settings: Settings,
    model_dir: str | None,
    dataset: str | None,
    products: int,
    train_rows: int,
    timeout_s: float,
    rate: float | None,
    dashboard: bool,
    as_json: bool,
) -> None:
    """Classify products live with a local broker and worker, then summarise."""
    console = Console(stderr=as_json, quiet=as_json)
    model = Path(
        model_dir or (Path(settings.model_dir).parent / dataset if dataset else settings.model_dir)
    )
    if not have_model(model):
        if dataset:
            console.print(f"[bold]No model in {model}[/]: training the {dataset} recipe.")
            train_recipe_model(settings, model, dataset, resolve_data(settings, None, dataset))
        else:
            console.print(
                f"[bold]No model in {model}[/]: training a quick one ({train_rows} photos)."
            )
            train_quick_model(settings, model, train_rows)
    try:
        manifest = ModelBundle.load(model).manifest
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    items = unseen_products(manifest, products)
    photos = any(e["modality"] == "image" for e in manifest["encoders"])
    items[len(items) // 2 : len(items) // 2] = malformed_events(items[0], photos)
    if dashboard and rate is None:
        rate = DASHBOARD_RATE
    try:
        with (
            serving_broker(settings, embedded=True) as bootstrap,
            DemoServices(settings, bootstrap, model, console, dashboard) as services,
        ):
            plan = DemoPlan(items, manifest["levels"], timeout_s, rate)
            tally = _stream(settings, bootstrap, plan, console)
            _report(console, tally.summary(), as_json, dashboard)
            if dashboard:
                services.hold()
    except WorkerFailed as exc:
        raise click.ClickException(str(exc)) from None
    if tally.outcomes < len(items):
        raise click.ClickException(
            f"only {tally.outcomes} of {len(items)} outcomes arrived within {timeout_s:g} s"
        )


@dataclass
class DemoPlan:
    items: list[DemoProduct]
    levels: list[str]
    timeout_s: float
    rate: float | None  # events/s; None = all at once


def _report(console: Console, summary: dict[str, Any], as_json: bool, dashboard: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(summary))
        return
    _print_summary(console, summary)
    if not dashboard:
        console.print(
            "Watch it in a browser, review and correct products: [bold]./run.sh demo "
            "--dashboard[/] (or `prodcat demo --dashboard`)"
        )


def _stream(settings: Settings, bootstrap: str, plan: DemoPlan, console: Console) -> Tally:
    """Publish (in a thread, paced by the rate) while printing outcomes as they arrive."""
    from kafka import TopicPartition

    tally = Tally(plan.levels, plan.rate)
    by_event = {_event_id(item): item for item in plan.items}
    by_key = {item.key: item for item in plan.items}
    consumer = kafka_consumer(settings, bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    parts = [
        TopicPartition(topic, p)
        for topic in (settings.topics.categories, settings.topics.dlq)
        for p in sorted(consumer.partitions_for_topic(topic) or [])
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning()  # fresh embedded topics; older runs' messages are filtered
    publisher = threading.Thread(target=_publish, args=(settings, bootstrap, plan, tally))
    publisher.start()
    deadline = time.monotonic() + plan.timeout_s
    try:
        while tally.outcomes < len(plan.items) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    _show(record, tally, by_event, by_key, console, settings)
    finally:
        publisher.join()
        consumer.close()
    return tally


def _publish(settings: Settings, bootstrap: str, plan: DemoPlan, tally: Tally) -> None:
    producer = kafka_producer(settings, bootstrap)
    started = time.monotonic()
    try:
        for n, item in enumerate(plan.items):
            if plan.rate:
                time.sleep(max(0.0, started + n / plan.rate - time.monotonic()))
            tally.sent(item.key)
            producer.send(settings.topics.products, key=item.key, value=item.value)
        producer.flush(60)
    finally:
        producer.close()


def _show(
    record: Any,
    tally: Tally,
    by_event: dict[str | None, DemoProduct],
    by_key: dict[bytes, DemoProduct],
    console: Console,
    settings: Settings,
) -> None:
    value = orjson.loads(record.value)
    now = time.time()
    if record.topic == settings.topics.categories:
        item = by_event.get(value["source_event_id"])
        if item is None:
            return  # an older run's assignment
        ok = tally.assignment(value, now, item.labels)
        path = " › ".join(c["label"] for c in value["category_path"])
        score = min(c["score"] for c in value["category_path"])
        mark = "[green]✓[/]" if ok else "[yellow]≈[/]"
        review = " [magenta](review)[/]" if value["needs_review"] else ""
        line = f"{mark} {score:4.2f} {escape(pad_cells(path, 45))} {escape(item.title)}{review}"
        console.print(line, no_wrap=True, overflow="ellipsis")
        return
    key = base64.b64decode(value["original"]["key"]) if value["original"]["key"] else None
    if key not in by_key:
        return
    reason = value["error"]["message"].split(" (")[0][:80]
    tally.dead_letter(key, value["stage"], reason, now)
    line = f"[red]✗ dead letter[/] [bold]{value['stage']}[/]: {reason}"
    console.print(line, no_wrap=True, overflow="ellipsis")


def _event_id(item: DemoProduct) -> str | None:
    try:
        return orjson.loads(item.value).get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="prodcat demo", show_header=False)
    table.add_row(
        "outcomes",
        f"{summary['outcomes']} ({summary['assigned']} assigned, "
        f"{summary['dead_letters']} dead letters)",
    )
    table.add_row("published", summary["published"])
    table.add_row("throughput", f"{summary['events_per_s']} events/s")
    decided = summary["decided_by"]
    table.add_row(
        "decided by", f"title alone {decided.get('text', 0)}, photo too {decided.get('full', 0)}"
    )
    for name, key in (
        ("latency end to end", "latency_ms"),
        ("  in the worker", "worker_latency_ms"),
    ):
        table.add_row(name, "  ".join(f"{k} {v:g} ms" for k, v in summary[key].items()))
    for level, accuracy in summary["accuracy"].items():
        table.add_row(f"accuracy {level}", "n/a" if accuracy is None else f"{accuracy:.1%}")
    for reason, count in summary["dead_letters_by_reason"].items():
        table.add_row("dead letter", f"{count} × {reason}")
    console.print(table)
