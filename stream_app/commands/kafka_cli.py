"""The ``--broker`` option and the connection check shared by commands that talk to Kafka."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from stream_app.config import Settings
from stream_app.kafka import BrokerUnreachable, wait_for_broker

F = TypeVar("F", bound=Callable[..., Any])

NO_BROKER = (
    "no broker configured: pass --broker HOST:PORT (or set PRODCAT_BROKER / `broker` in "
    "prodcat.toml), or start the embedded one in another terminal with `prodcat broker`"
)


def _set_broker(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Settings).broker = value


def broker_option(func: F) -> F:
    """Add ``--broker HOST:PORT``, which overrides the ``broker`` setting."""
    return click.option(
        "--broker",
        metavar="HOST:PORT",
        expose_value=False,
        callback=_set_broker,
        help="Kafka bootstrap address(es), comma-separated (default: setting `broker`).",
    )(func)


def connect(settings: Settings, timeout_s: float = 5.0) -> str:
    """The configured bootstrap address once a broker answers there, else a one-line error.

    There is deliberately no embedded fallback: a broker that dies with this command would
    lose the data it was given.
    """
    if not settings.broker:
        raise click.ClickException(NO_BROKER)
    try:
        wait_for_broker(settings.broker, timeout_s, settings)
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    return settings.broker
