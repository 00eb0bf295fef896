"""``prodcat broker``: run the embedded in-memory Kafka-protocol broker until Ctrl-C/SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
import orjson

from prodcat.cli.options import json_option
from prodcat.kafka.embedded import BrokerError, EmbeddedBroker


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9092,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks any free port.",
)
@click.option("--log-file", type=click.Path(dir_okay=False), help="Where the broker logs go.")
@json_option("Print one JSON line {bootstrap, pid, log} once the broker is ready.")
def command(port: int, log_file: str | None, as_json: bool) -> None:
    """Run the embedded broker (Tansu) on 127.0.0.1 until Ctrl-C or SIGTERM.

    It keeps everything in memory: topics and messages are gone when it stops. Point other
    commands at it with --broker or PRODCAT_BROKER.
    """
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    try:
        broker = EmbeddedBroker(port=port, log_path=log_file).start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if as_json:
            line = {"bootstrap": broker.bootstrap, "pid": broker.pid, "log": str(broker.log_path)}
            click.echo(orjson.dumps(line))
        else:
            click.echo(f"broker ready: {broker.bootstrap}   (log: {broker.log_path})")
            click.echo(f"use it with:  export PRODCAT_BROKER={broker.bootstrap}")
            click.echo(
                "warning: in-memory broker for demos and tests; all data is lost when it "
                "stops. Press Ctrl-C to stop.",
                err=True,
            )
        while not stop.wait(0.5):
            if not broker.running():
                raise click.ClickException(f"the broker exited unexpectedly; see {broker.log_path}")
    finally:
        broker.stop()
    if not as_json:
        click.echo("broker stopped")
