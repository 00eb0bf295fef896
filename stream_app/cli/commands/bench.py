"""``prodcat bench``: the benchmark harness in bench/ (also ``python -m bench``).

bench/ lives in the source checkout, not in the installed distribution (a developer tool
that writes into docs/), so this command finds it next to stream_app/ and says so when it
is not there.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from rich.console import Console

from prodcat.cli.options import json_option, model_option
from prodcat.core.settings import REPO_ROOT, Settings

SECTION_HELP = "Run only this section (repeatable; default: all, in the order listed)."


@click.command()
@model_option("Model bundle to measure (default: the model_dir setting, models/default).")
@click.option("--quick", is_flag=True, help="A small run (seconds): for tests and smoke checks.")
@click.option("--out", "name", help="Results name: bench/results/<name>.json (default: a date).")
@click.option(
    "--section",
    "sections",
    multiple=True,
    type=click.Choice(["model", "e2e", "naive", "latency", "accuracy", "image", "guarantees"]),
    help=SECTION_HELP,
)
@click.option("--products", type=click.IntRange(10), help="Products per burst (default 1500).")
@click.option(
    "--batch-sizes", help="Comma-separated model-only batch sizes (default 1,2,4,...,256)."
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "int8"]),
    help="Model-only precisions of a format-1 bundle (repeatable; default both; int8 is "
    "quantised on the fly). A split bundle is measured as it ships.",
)
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(file_okay=False, exists=True),
    help="Another bundle for the accuracy-per-ms table (repeatable).",
)
@click.option(
    "--providers",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default="cpu",
    show_default=True,
    help="ONNX Runtime provider for every section (cuda: CUDA with I/O binding).",
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False, exists=True),
    help="Products: a fashion catalog.csv or product-event JSONL (default: the data set).",
)
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False),
    default=str(REPO_ROOT / "bench" / "results"),
    show_default=True,
    help="Folder of the results JSON (also written as latest.json).",
)
@click.option(
    "--write-docs",
    "docs",
    type=click.Path(dir_okay=False),
    is_flag=False,
    flag_value=str(REPO_ROOT / "docs" / "benchmarks.md"),
    default=None,
    help="Also rewrite the bench section of this page (default docs/benchmarks.md) and its "
    "plots (in the page's img/ folder). Without it only the JSON is written.",
)
@json_option("Print the results JSON on stdout.")
@click.pass_obj
def command(
    settings: Settings,
    model_dir: str | None,
    quick: bool,
    name: str | None,
    sections: tuple[str, ...],
    products: int | None,
    batch_sizes: str | None,
    precisions: tuple[str, ...],
    compare: tuple[str, ...],
    providers: str,
    data: str | None,
    results_dir: str,
    docs: str | None,
    as_json: bool,
) -> None:
    """Measure the model-only ceiling, end to end (with the cascade on and off), the naive
    baseline, latency, accuracy against speed, the image path's steps and (on Apache Kafka)
    exactly once vs at least once."""
    _import_bench()
    from bench import plots, report
    from bench.data import DataError
    from bench.run import SECTIONS, Plan, run
    from bench.stream import StreamBenchError
    from prodcat.kafka.embedded import BrokerError
    from prodcat.kafka.jars import KafkaSetupError
    from prodcat.model.bundle import BundleError

    model = Path(model_dir or settings.model_dir)
    if not (model / "manifest.json").is_file():
        raise click.ClickException(
            f"no model bundle in {model}; `./run.sh demo` (or `prodcat demo`) trains one there, "
            "or train the default recipe with `prodcat train`, or pass --model DIR"
        )
    preset = Plan.quick if quick else Plan.full
    plan = preset(
        model,
        Path(data) if data else settings.data_path() / "fashion" / "catalog.csv",
        sections=tuple(s for s in SECTIONS if s in sections) or None,
        products=products,
        batch_sizes=_sizes(batch_sizes),
        precisions=precisions or None,
        compare=tuple(Path(c) for c in compare) or None,
        providers=providers,
    )
    console = Console(stderr=True)
    try:
        results = run(settings, plan, console)
    except (BundleError, DataError, StreamBenchError, BrokerError, KafkaSetupError) as exc:
        raise click.ClickException(str(exc)) from None
    name = name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    written = report.write_json(results, Path(results_dir), name)
    if docs:
        page = Path(docs)
        images = plots.plots(results, page.parent / "img")
        report.update_docs(page, report.markdown(results, images, page))
        written.append(page)
    if as_json:
        click.echo(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_goals(console, results)
    console.print("wrote " + ", ".join(str(w) for w in written))


def _import_bench() -> None:
    if importlib.util.find_spec("bench") is None:
        if not (REPO_ROOT / "bench" / "run.py").is_file():
            raise click.ClickException(
                "prodcat bench needs a source checkout of prodcat (bench/ is not installed)"
            )
        sys.path.insert(0, str(REPO_ROOT))


def _sizes(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected numbers like 1,8,32") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be at least 1")
    return sizes


def _print_goals(console: Console, results: dict) -> None:
    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.2f}"

    console.print(
        f"model-only {show(results['model_only_items_per_s'])} items/s (at the batch formed), "
        f"end to end {show(results['e2e_items_per_s'])} "
        f"(cascade off: {show(results.get('fused_e2e_items_per_s'))}), "
        f"naive {show(results['naive_items_per_s'])}, "
        f"p99 at 50% {show(results['p99_ms_at_50pct'])} ms "
        f"(bound {show(results['p99_bound_ms'])})"
    )
    for goal, met in results["goals"].items():
        mark = "not measured" if met is None else ("met" if met else "MISSED")
        console.print(f"  {goal}: {mark}")
