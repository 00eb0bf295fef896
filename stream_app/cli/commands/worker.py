"""``prodcat worker``: classify product events from Kafka until SIGTERM/Ctrl-C.

The model is loaded and checked (plugins present, fingerprints equal, ONNX session created)
before anything connects to Kafka, so a wrong bundle fails in a second with one line. A
broker must be configured; ``--embedded`` starts an in-memory one for the worker's lifetime
(demos only: its data dies with the worker).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import click

from prodcat.cli.options import broker_option, model_option, require_broker, serving_broker
from prodcat.contract.manager import get_plugin_manager
from prodcat.contract.registry import PluginError
from prodcat.core.ports import free_port
from prodcat.core.settings import Settings, SettingsError
from prodcat.model.bundle import BundleError
from prodcat.model.inference import InferenceSetupError

if TYPE_CHECKING:
    from prodcat.worker.models import Model


@click.command()
@model_option("Model bundle folder (default: the model_dir setting, models/default).")
@broker_option
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of /metrics, /health, /ready on the web host (0 = any free port).",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="With no broker configured, start an in-memory broker for the worker's lifetime "
    "(demos and experiments: its topics die with the worker).",
)
@click.pass_obj
def command(
    settings: Settings, model_dir: str | None, web_port: int | None, embedded: bool
) -> None:
    """Consume `products`, classify each event, publish to `categories` or `products.dlq`.

    The broker comes from --broker / PRODCAT_BROKER / `broker` in prodcat.toml; without
    one the worker refuses to start unless --embedded is given.
    """
    require_broker(settings, embedded=embedded)
    settings = _with_web_port(settings, web_port)
    model_dir = model_dir or settings.model_dir
    try:
        model = _load(model_dir, settings)
    except (BundleError, InferenceSetupError, PluginError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    from prodcat.worker.exactly_once import (
        EXACTLY_ONCE,
        TransactionsUnsupported,
        require_transactions,
    )

    exactly_once = settings.worker.processing_guarantee == EXACTLY_ONCE
    try:
        if exactly_once and not settings.broker:
            require_transactions(settings, "", embedded=True)  # before starting a broker
        with serving_broker(settings, embedded=embedded) as bootstrap:
            if exactly_once:
                require_transactions(settings, bootstrap, embedded=False)
            _run(settings, bootstrap, model, model_dir)
    except TransactionsUnsupported as exc:
        raise click.ClickException(str(exc)) from None


def _with_web_port(settings: Settings, web_port: int | None) -> Settings:
    worker = settings.worker
    port = worker.web_port if web_port is None else web_port
    if port == 0:
        port = free_port(worker.web_host)
    return dataclasses.replace(settings, worker=dataclasses.replace(worker, web_port=port))


def _load(model_dir: str, settings: Settings) -> Model:
    from prodcat.worker.runtime import load_model

    return load_model(model_dir, settings, get_plugin_manager())


def _run(settings: Settings, bootstrap: str, model: Model, model_dir: str) -> None:
    import faust

    from prodcat.worker.app import create_app
    from prodcat.worker.runtime import Runtime

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = Runtime(settings, model, get_plugin_manager())
    worker_app = create_app(settings, bootstrap, runtime, model_dir)
    identity = model.identity()
    review = settings.worker.review_threshold
    click.echo(
        f"worker: model {identity['name']} ({identity['fingerprint']}) on "
        f"{', '.join(model.providers)}; broker {bootstrap}; needs_review under "
        + (f"{review:g} (setting)" if review is not None else f"{model.bundle.review_threshold:g}")
        + f"; http://{settings.worker.web_host}:{settings.worker.web_port}/ready",
        err=True,
    )
    faust_worker = faust.Worker(worker_app.app, loglevel=settings.log_level, loop=loop)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
