"""``prodcat worker``: classify product events from Kafka until SIGTERM/Ctrl-C.

The model is loaded and checked (plugins present, fingerprints equal, ONNX session created)
before anything connects to Kafka, so a wrong bundle fails in a second with one line. With
no broker configured the embedded one is started for the worker's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from stream_app.broker import BrokerError, broker_for, free_port
from stream_app.bundle import BundleError
from stream_app.commands.kafka_cli import broker_option
from stream_app.config import Settings
from stream_app.inference import InferenceSetupError
from stream_app.kafka import BrokerUnreachable, ensure_topics, wait_for_broker
from stream_app.plugin_manager import PluginError, get_plugin_manager

if TYPE_CHECKING:
    from stream_app.classifier import BundleModel

BROKER_WAIT_S = 30.0
F = TypeVar("F", bound=Callable[..., Any])


def model_option(help_text: str) -> Callable[[F], F]:
    """``--model DIR``: the bundle folder (default: the ``model_dir`` setting)."""
    return click.option(
        "--model",
        "model_dir",
        type=click.Path(file_okay=False),
        default=None,
        help=help_text,
    )


@contextlib.contextmanager
def serving_broker(settings: Settings) -> Iterator[str]:
    """The configured broker, else an embedded one for the block; answering, topics created."""
    try:
        with broker_for(settings) as bootstrap:
            wait_for_broker(bootstrap, BROKER_WAIT_S, settings)
            ensure_topics(settings, bootstrap)
            yield bootstrap
    except (BrokerError, BrokerUnreachable) as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@model_option("Model bundle folder (default: the model_dir setting, models/default).")
@broker_option
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of /metrics, /health, /ready on the web host (0 = any free port).",
)
@click.pass_obj
def command(settings: Settings, model_dir: str | None, web_port: int | None) -> None:
    """Consume `products`, classify each event, publish to `categories` or `products.dlq`.

    With no broker configured (--broker, PRODCAT_BROKER) it starts the embedded one.
    """
    settings = _with_web_port(settings, web_port)
    model_dir = model_dir or settings.model_dir
    try:
        model = _load(model_dir, settings)
    except (BundleError, InferenceSetupError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    with serving_broker(settings) as bootstrap:
        _run(settings, bootstrap, model, model_dir)


def _with_web_port(settings: Settings, web_port: int | None) -> Settings:
    worker = settings.worker
    port = worker.web_port if web_port is None else web_port
    if port == 0:
        port = free_port(worker.web_host)
    return dataclasses.replace(settings, worker=dataclasses.replace(worker, web_port=port))


def _load(model_dir: str, settings: Settings) -> BundleModel:
    from stream_app.worker import load_model

    return load_model(model_dir, settings, get_plugin_manager())


def _run(settings: Settings, bootstrap: str, model: BundleModel, model_dir: str) -> None:
    import faust

    from stream_app.app import create_app
    from stream_app.worker import Runtime

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = Runtime(settings, model, get_plugin_manager())
    worker_app = create_app(settings, bootstrap, runtime, model_dir)
    identity = model.identity()
    click.echo(
        f"worker: model {identity['name']} ({identity['fingerprint']}) on "
        f"{', '.join(model.session.providers)}; broker {bootstrap}; "
        f"http://{settings.worker.web_host}:{settings.worker.web_port}/ready",
        err=True,
    )
    worker = faust.Worker(worker_app.app, loglevel=settings.log_level, loop=loop)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
