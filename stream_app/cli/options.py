"""Options and checks shared by the commands: ``--broker``/``-b``, ``--model``, ``--json``.

One definition each, so every command spells, documents and validates them the same way
(as faust's CLI does with its shared options).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from prodcat.core.settings import Settings
from prodcat.kafka.clients import BrokerUnreachable, ensure_topics, wait_for_broker

F = TypeVar("F", bound=Callable[..., Any])

BROKER_WAIT_S = 30.0
NO_BROKER = (
    "no broker configured: pass --broker HOST:PORT (or set PRODCAT_BROKER / `broker` in "
    "prodcat.toml), or start the embedded one in another terminal with `prodcat broker`"
)


def _set_broker(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Settings).broker = value


def broker_option(func: F) -> F:
    """Add ``--broker``/``-b HOST:PORT``, which overrides the ``broker`` setting."""
    return click.option(
        "--broker",
        "-b",
        metavar="HOST:PORT",
        expose_value=False,
        callback=_set_broker,
        help="Kafka bootstrap address(es), comma-separated (default: setting `broker`).",
    )(func)


def model_option(help_text: str) -> Callable[[F], F]:
    """``--model DIR``: the bundle folder (default: the ``model_dir`` setting)."""
    return click.option(
        "--model",
        "model_dir",
        type=click.Path(file_okay=False),
        default=None,
        help=help_text,
    )


def json_option(help_text: str) -> Callable[[F], F]:
    """``--json``: machine-readable output for scripts (passed as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


FROM_TOPIC = "@topic"  # --corrections without a file: read the corrections topic


def corrections_option(action: str) -> Callable[[F], F]:
    """``--corrections [FILE]``: reviewers' decisions from a JSONL file, or from the topic."""
    return click.option(
        "--corrections",
        "corrections",
        is_flag=False,
        flag_value=FROM_TOPIC,
        default=None,
        metavar="[FILE]",
        help=f"{action} reviewers' corrections (the latest per product; its label wins over "
        "the file's): from FILE (JSONL, e.g. `prodcat tail --topic categories.corrections "
        "--from-beginning --json`), or without FILE from the corrections topic on --broker.",
    )


def load_corrections(settings: Settings, source: str | None) -> dict[str, dict[str, str]]:
    """Product id -> reviewer's labels from ``--corrections`` ({} when not given)."""
    from prodcat.kafka.corrections import (
        CorrectionsError,
        latest_labels,
        read_corrections_file,
        read_corrections_topic,
    )

    if source is None:
        return {}
    try:
        if source == FROM_TOPIC:
            found = read_corrections_topic(settings, connect(settings))
        else:
            found = read_corrections_file(source)
    except (CorrectionsError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    return latest_labels(found)


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


def require_broker(settings: Settings, *, embedded: bool) -> None:
    """A one-line error unless a broker is configured or an embedded one may be started."""
    if not settings.broker and not embedded:
        raise click.ClickException(NO_BROKER.replace("or start", "pass --embedded, or start"))


@contextlib.contextmanager
def serving_broker(settings: Settings, *, embedded: bool) -> Iterator[str]:
    """The broker to serve from, answering and with prodcat's topics, for the block.

    With ``embedded`` and no broker configured, an in-memory broker is started for the
    block (the demo; ``prodcat worker --embedded``). Without it a missing broker is an
    error: a worker that silently served an in-memory broker would consume nothing, forever.
    """
    from prodcat.kafka.embedded import BrokerError, embedded_broker

    require_broker(settings, embedded=embedded)
    try:
        with contextlib.ExitStack() as stack:
            bootstrap = settings.broker or stack.enter_context(embedded_broker())
            wait_for_broker(bootstrap, BROKER_WAIT_S, settings)
            ensure_topics(settings, bootstrap)
            yield bootstrap
    except (BrokerError, BrokerUnreachable) as exc:
        raise click.ClickException(str(exc)) from None
