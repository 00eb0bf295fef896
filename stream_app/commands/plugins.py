"""``prodcat plugins``: what is installed, what each plugin provides, and what failed.

The first thing to run when a model refuses to load or a plugin seems ignored: it shows
the distribution and version behind every component, plugins that failed to import (with
their error), and component names claimed by two plugins.
"""

from __future__ import annotations

from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from stream_app.plugin_manager import DISABLE_ENV, PLUGINS_ENV, get_plugin_manager


def report() -> dict[str, Any]:
    """Everything the command shows, as JSON-able data."""
    manager = get_plugin_manager()
    return {
        "plugins": manager.plugins(),
        "failed": [failure.to_json() for failure in manager.failures()],
        "conflicts": {
            key: [info.plugin for info in infos] for key, infos in manager.conflicts().items()
        },
    }


def _render(data: dict[str, Any], console: Console) -> None:
    table = Table(title="prodcat plugins", show_lines=True)
    for column in ("plugin", "distribution", "hooks", "components"):
        table.add_column(column)
    for plugin in data["plugins"]:
        dist = f"{plugin['distribution'] or '-'} {plugin['version'] or ''}".strip()
        components = "\n".join(
            f"{c['kind']} [bold]{c['name']}[/bold] v{c['version']}" for c in plugin["components"]
        )
        table.add_row(plugin["name"], dist, "\n".join(plugin["hooks"]), components or "-")
    console.print(table)
    for failure in data["failed"]:
        console.print(f"[red]failed[/red] {failure['name']}: {failure['error']}", highlight=False)
    for key, providers in data["conflicts"].items():
        console.print(f"[red]conflict[/red] {key} registered by {', '.join(providers)}")
    if not data["plugins"]:
        console.print(f"no plugins loaded (check {PLUGINS_ENV} / {DISABLE_ENV})")


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def command(as_json: bool) -> None:
    """List loaded plugins, their hooks and components with versions, and failed plugins.

    Choose plugins with PRODCAT_PLUGINS (only these entry-point or distribution names)
    and PRODCAT_DISABLE_PLUGINS (skip these).
    """
    data = report()
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _render(data, Console())
