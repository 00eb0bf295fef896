"""``prodcat topics``: create prodcat's topics where missing, then list every topic."""

from __future__ import annotations

import click
import orjson
from rich.console import Console
from rich.table import Table

from prodcat.cli.options import broker_option, connect, json_option
from prodcat.core.settings import Settings
from prodcat.kafka.clients import admin_client, describe_topics, ensure_topics


@click.command()
@broker_option
@json_option("Print JSON {topic: partitions, ...}.")
@click.pass_obj
def command(settings: Settings, as_json: bool) -> None:
    """Create the products, categories, dead-letter and corrections topics; list all topics.

    Names and partition counts come from the [topics] settings; existing topics are kept.
    """
    bootstrap = connect(settings)
    ensure_topics(settings, bootstrap)
    admin = admin_client(settings, bootstrap)
    try:
        partitions = describe_topics(admin, sorted(admin.list_topics()))
    finally:
        admin.close()
    if as_json:
        click.echo(orjson.dumps(partitions))
        return
    roles = {
        settings.topics.products: "product events (input)",
        settings.topics.categories: "category assignments (output)",
        settings.topics.dlq: "dead letters",
        settings.topics.corrections: "reviewers' corrections (prodcat dashboard)",
    }
    table = Table(title=f"topics on {bootstrap}")
    for column in ("topic", "partitions", "role"):
        table.add_column(column)
    for name, count in partitions.items():
        table.add_row(name, str(count), roles.get(name, ""))
    Console().print(table)
