"""The ``prodcat`` command line.

Each sub-command lives in its own module and is imported only when invoked, so
``prodcat --help`` and ``prodcat publish`` never pay for onnxruntime or torch.
Errors a user can fix are raised as :class:`click.ClickException` (one line, exit 1);
no traceback reaches the terminal unless ``PRODCAT_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from stream_app.config import SettingsError, load_settings
from stream_app.redaction import redact_secrets_in_logs

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, short help shown by `prodcat --help` without importing the module)
    "broker": ("stream_app.commands.broker", "Run the embedded Kafka-protocol broker."),
    "topics": ("stream_app.commands.topics", "Create and list prodcat's topics."),
    "publish": ("stream_app.commands.publish", "Publish products from a CSV/JSONL file."),
    "tail": ("stream_app.commands.tail", "Watch category assignments as they arrive."),
    "plugins": ("stream_app.commands.plugins", "List loaded plugins and their components."),
    "train": ("stream_app.commands.train", "Train a model and write a model bundle."),
    "evaluate": ("stream_app.commands.evaluate", "Evaluate a model bundle on a data set."),
    "worker": ("stream_app.commands.worker", "Run the streaming classifier worker."),
    "demo": ("stream_app.commands.demo", "Train if needed, then classify products live."),
    "bench": ("stream_app.commands.bench", "Run the benchmarks."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in COMMANDS.items() if _module_exists(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


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
    except SystemExit:
        raise
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
