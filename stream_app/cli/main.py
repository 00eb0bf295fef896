"""The ``prodcat`` command line.

Each sub-command lives in its own module and is imported only when invoked, so
``prodcat --help`` and ``prodcat publish`` never pay for onnxruntime or torch.
Errors a user can fix are raised as :class:`click.ClickException` (one line, exit 1);
no traceback reaches the terminal unless ``PRODCAT_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from prodcat.core.redaction import redact_secrets_in_logs
from prodcat.core.settings import SettingsError, load_settings

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, short help shown by `prodcat --help` without importing the module)
    "broker": ("prodcat.cli.commands.broker", "Run the embedded Kafka-protocol broker."),
    "topics": ("prodcat.cli.commands.topics", "Create and list prodcat's topics."),
    "publish": ("prodcat.cli.commands.publish", "Publish products from a CSV/JSONL file."),
    "tail": ("prodcat.cli.commands.tail", "Watch category assignments as they arrive."),
    "plugins": ("prodcat.cli.commands.plugins", "List loaded plugins and their components."),
    "train": ("prodcat.cli.commands.train", "Train a model and write a model bundle."),
    "evaluate": ("prodcat.cli.commands.evaluate", "Evaluate a model bundle on a data set."),
    "worker": ("prodcat.cli.commands.worker", "Run the streaming classifier worker."),
    "demo": ("prodcat.cli.commands.demo", "Train if needed, then classify products live."),
    "dashboard": ("prodcat.cli.commands.dashboard", "Web page: live feed, review queue, drift."),
    "bench": ("prodcat.cli.commands.bench", "Run the benchmarks."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Settings file (default: ./prodcat.toml, or $PRODCAT_CONFIG).",
)
@click.version_option(package_name="prodcat")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """prodcat: classify product events from Kafka into category paths, live."""
    try:
        ctx.obj = load_settings(config_path)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    redact_secrets_in_logs(ctx.obj)  # before any command or library can log its options


def main() -> None:
    """Console-script entry point: run the CLI, turning unexpected errors into one line."""
    try:
        cli.main(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last-resort guard for a friendly CLI
        if os.environ.get("PRODCAT_DEBUG"):
            raise
        click.echo(
            f"Error: {type(exc).__name__}: {exc} (set PRODCAT_DEBUG=1 for details)", err=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
