"""``prodcat plugins``: what is installed, what each plugin provides, and what failed.

The first thing to run when a model refuses to load or a plugin seems ignored: it shows
the distribution and version behind every component, plugins that failed to import (with
their error), and component names claimed by two plugins. Component names are printed whole
on any terminal width: users copy them into ``--encoder``.
"""

from __future__ import annotations

from typing import Any

import click
import orjson

from prodcat.cli.options import json_option
from prodcat.contract.manager import DISABLE_ENV, PLUGINS_ENV, get_plugin_manager


def report() -> dict[str, Any]:
    """Everything the command shows, as JSON-able data."""
    manager = get_plugin_manager()
    return {
        "plugins": manager.plugins(),
        "failed": [failure.to_json() for failure in manager.failures()],
        "conflicts": {
            key: [info.plugin for info in infos] for key, infos in manager.conflicts().items()
        },
        "unknown": manager.unknown_selection,
    }


def _render(data: dict[str, Any]) -> None:
    for plugin in data["plugins"]:
        dist = f"{plugin['distribution'] or 'not installed'} {plugin['version'] or ''}".strip()
        click.secho(plugin["name"], bold=True, nl=False)
        click.echo(f"  ({dist}; hooks: {', '.join(plugin['hooks']) or 'none'})")
        for component in plugin["components"]:
            click.echo(f"  {component['kind']:<12} ", nl=False)
            click.secho(component["name"], bold=True, nl=False)
            click.echo(f"  v{component['version']}  {component['description']}".rstrip())
    for failure in data["failed"]:
        click.echo(click.style("failed", fg="red") + f" {failure['name']}: {failure['error']}")
    for key, providers in data["conflicts"].items():
        click.echo(
            click.style("conflict", fg="red") + f" {key} registered by {', '.join(providers)}"
        )
    if not data["plugins"]:
        click.echo(f"no plugins loaded (check {PLUGINS_ENV} / {DISABLE_ENV})")


@click.command("plugins")
@json_option("Print machine-readable JSON.")
def command(as_json: bool) -> None:
    """List loaded plugins, their hooks and components with versions, and failed plugins.

    Choose plugins with PRODCAT_PLUGINS (only these entry-point or distribution names)
    and PRODCAT_DISABLE_PLUGINS (skip these). Exits 1 when PRODCAT_PLUGINS names a plugin
    that is not installed.
    """
    data = report()
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _render(data)
    if data["unknown"]:
        raise click.ClickException(
            f"{PLUGINS_ENV} names {', '.join(data['unknown'])}, which no installed plugin "
            "provides; run `prodcat plugins` without it to see the installed names"
        )
