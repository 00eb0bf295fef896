"""``prodcat dashboard``: the web page for the people who own the catalogue.

Live assignments with photos, a review queue whose decisions go to the corrections topic
(and from there into ``prodcat train --corrections``), drift against the training
distribution and the workers' throughput, latency and dead letters. Bound to 127.0.0.1
and read-only unless ``[dashboard] review_tokens`` are set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import click
import orjson

from prodcat.cli.options import broker_option, connect, model_option
from prodcat.core.settings import Settings
from prodcat.kafka.clients import ensure_topics


@click.command()
@broker_option
@model_option(
    "Model bundle the workers serve: its taxonomy (the reviewers' choices) and "
    "training split (the drift baseline). Default: the model_dir setting."
)
@click.option("--host", help="Address to listen on (default: [dashboard] host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port to listen on (default: [dashboard] port)."
)
@click.option(
    "--worker-metrics",
    "worker_metrics",
    multiple=True,
    metavar="URL",
    help="A worker's /metrics URL, repeatable; a name with several addresses is scraped at "
    "each (default: [dashboard] worker_metrics).",
)
@click.pass_obj
def command(
    settings: Settings,
    model_dir: str | None,
    host: str | None,
    port: int | None,
    worker_metrics: tuple[str, ...],
) -> None:
    """Serve the dashboard: live feed, review queue, drift, worker health."""
    from prodcat.dashboard.server import serve

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    options = settings.dashboard
    changes: dict[str, Any] = {"host": host or options.host, "port": port or options.port}
    if worker_metrics:
        changes["worker_metrics"] = list(worker_metrics)
    settings = dataclasses.replace(settings, dashboard=dataclasses.replace(options, **changes))
    manifest = read_manifest(Path(model_dir or settings.model_dir))
    bootstrap = connect(settings)
    ensure_topics(settings, bootstrap)
    reviewing = "reviews need a token" if options.review_tokens else "read-only (no review_tokens)"
    click.echo(
        f"dashboard: http://{settings.dashboard.host}:{settings.dashboard.port}/ "
        f"(broker {bootstrap}; {reviewing})",
        err=True,
    )
    try:
        asyncio.run(serve(settings, bootstrap, manifest))
    except OSError as exc:
        raise click.ClickException(f"cannot serve the dashboard: {exc}") from None


def read_manifest(model: Path) -> dict[str, Any]:
    """The bundle's manifest: all the dashboard needs of a model (no ONNX session)."""
    path = model / "manifest.json"
    try:
        manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise click.ClickException(
            f"no model bundle at {model} (no manifest.json): pass --model or train one"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not {"levels", "taxonomy"} <= set(manifest):
        raise click.ClickException(f"{path} is not a prodcat model manifest")
    return manifest
