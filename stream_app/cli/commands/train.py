"""``prodcat train``: train a fusion model from plugins and write a model bundle.

The defaults train on every labelled fashion row, with or without a photo: frozen MiniLM
titles + frozen EfficientNet-Lite0 photos (both cached after the first run) fused by an MLP
head, photo rows shown three times per epoch, titles hidden or stripped of their category
words in training so that the photo matters (docs/benchmarks.md has the numbers).
Component options take ``name`` or ``name:{json config}``, for example
``--encoder 'text.hashgram:{"buckets": 65536}'``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import orjson
from click.core import ParameterSource

from prodcat.cli.options import broker_option, corrections_option, json_option, load_corrections
from prodcat.core.settings import Settings

DATASET_FILES = {
    "fashion": "fashion/catalog.csv",
    "pricerunner": "pricerunner/products.csv",
    "amazon_uk_toys": "amazon_uk_toys/products.csv",
    "lianshang_zh": "lianshang_zh/products.csv",
    "cdiscount_fr": "cdiscount_fr/products.csv",
}


def parse_component(value: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:{json}`` -> (name, config)."""
    name, _, config = value.partition(":")
    if not config:
        return name.strip(), {}
    try:
        parsed = json.loads(config)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: the config after ':' is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{value!r}: the config after ':' must be a JSON object")
    return name.strip(), parsed


def resolve_data(settings: Settings, data: str | None, dataset: str | None) -> Path:
    if data and dataset:
        raise click.UsageError("give --data or --dataset, not both")
    if data:
        return Path(data)
    path = settings.data_path() / DATASET_FILES[dataset or "fashion"]
    if not path.is_file():
        raise click.ClickException(
            f"{path} not found; set data_dir (PRODCAT_DATA_DIR) to the shared datasets folder"
        )
    return path


@click.command("train")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), help="Data file to train on.")
@click.option(
    "--dataset",
    type=click.Choice(sorted(DATASET_FILES)),
    help="A shared data set by name (default: fashion); lianshang_zh and cdiscount_fr train "
    "their recipe (encoders, head, settings) unless options say otherwise.",
)
@click.option("--levels", help="Comma-separated taxonomy levels (default: all of the format's).")
@click.option(
    "--with-images-only/--all-rows",
    default=False,
    show_default=True,
    help="Keep only rows with a photo (default: every labelled row; missing photos are masked).",
)
@click.option("--limit", type=int, help="Use only the first N usable rows.")
@click.option("--preprocessor", "preprocessors", multiple=True, help="name[:json]; repeatable.")
@click.option("--encoder", "encoders", multiple=True, help="name[:json]; repeatable.")
@click.option("--head", default="head.mlp", show_default=True, help="name[:json].")
@click.option("--epochs", type=int, default=8, show_default=True, help="Most epochs to train.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Rows per step.")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="AdamW learning rate.")
@click.option("--patience", type=int, default=6, show_default=True, help="Early-stop patience.")
@click.option(
    "--modality-dropout",
    type=float,
    default=0.25,
    show_default=True,
    help="Chance of hiding each modality of a training row, so missing ones are handled.",
)
@click.option(
    "--photo-oversample",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Show rows with a photo this many times per epoch.",
)
@click.option(
    "--category-word-dropout",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Chance of training a row on its title without the words that name a category.",
)
@click.option(
    "--title-dropout",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Chance of hiding a training row's title (rows with a photo).",
)
@click.option(
    "--min-class-count",
    type=int,
    default=5,
    show_default=True,
    help="Classes with fewer training rows are rare (see --rare).",
)
@click.option(
    "--rare",
    type=click.Choice(["merge", "drop"]),
    default="merge",
    show_default=True,
    help="Rare classes: merge into an 'other' class per level, or drop their rows.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of split and weights.")
@click.option("--device", help="torch device (default: cuda if available, else cpu).")
@click.option(
    "--quantize",
    is_flag=True,
    help="Ship int8 graphs: image encoders static (QDQ, per channel, calibrated on training "
    "photos), text encoders dynamic; the head stays float32. Format 1: the one graph, dynamic.",
)
@click.option(
    "--bundle-format",
    type=click.Choice(["1", "2"]),
    default="2",
    show_default=True,
    help="2: a graph per encoder plus a head graph, with the text-first cascade. 1: one "
    "graph, for workers of prodcat versions before bundle format 2.",
)
@click.option(
    "--cascade-tolerance",
    type=click.FloatRange(0, 1),
    default=0.002,
    show_default=True,
    help="Calibrate the text-first cascade so each level's validation accuracy stays at most "
    "this far (0.002 = 0.2 points) below always using the photo.",
)
@click.option(
    "--review-catch",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.75,
    show_default=True,
    help="Fit the needs_review threshold to flag this share of the validation split's wrong "
    "answers (more caught = more products to review).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Bundle folder (default: model_dir).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--no-eval", is_flag=True, help="Skip the test-split evaluation.")
@corrections_option("Fold in")
@broker_option
@json_option("Print the summary as JSON.")
@click.pass_obj
def command(settings: Settings, **options: Any) -> None:
    """Train a model from plugins on a data set and write a model bundle."""
    from prodcat.contract.manager import PluginError
    from prodcat.training.datasets import DatasetOptions
    from prodcat.training.export import ExportError
    from prodcat.training.recipe import TrainSpec, run_training
    from prodcat.training.trainer import TrainConfig

    logging.basicConfig(level=settings.log_level)
    options, recipe = _components(options)
    spec = TrainSpec(
        data=resolve_data(settings, options["data"], options["dataset"]),
        out=Path(options["out"] or settings.model_dir),
        dataset=DatasetOptions(
            levels=options["levels"].split(",") if options["levels"] else None,
            with_images_only=options["with_images_only"],
            limit=options["limit"],
            min_class_count=options["min_class_count"],
            rare=options["rare"],
        ),
        preprocessors=options["preprocessors"],
        encoders=options["encoders"],
        head=options["head"],
        train=TrainConfig(
            epochs=options["epochs"],
            batch_size=options["batch_size"],
            lr=options["lr"],
            patience=options["patience"],
            modality_dropout=options["modality_dropout"],
            photo_oversample=options["photo_oversample"],
            category_word_dropout=options["category_word_dropout"],
            title_dropout=options["title_dropout"],
            seed=options["seed"],
            device=options["device"],
        ),
        quantize=options["quantize"],
        bundle_format=int(options["bundle_format"]),
        cascade_tolerance=options["cascade_tolerance"],
        review_catch=options["review_catch"],
        cache_dir=Path(settings.cache_dir),
        threads=settings.worker.featurize_threads,
        evaluate=not options["no_eval"],
        overwrite=options["overwrite"],
        corrections=load_corrections(settings, options["corrections"]),
        recipe=recipe,
    )
    try:
        summary = run_training(spec)
    except (ValueError, LookupError, FileExistsError, PluginError, ExportError) as exc:
        raise click.ClickException(str(exc)) from None
    if options["as_json"]:
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        _print(summary)


def _components(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Parsed component specs; a ``--dataset`` with a recipe (prodcat.training.
    dataset_recipes) fills every option not given on the command line from it."""
    from prodcat.training.dataset_recipes import apply_recipe, recipe_for
    from prodcat.training.recipe import DEFAULT_ENCODERS, DEFAULT_PREPROCESSORS

    context = click.get_current_context()
    given = {
        name
        for name in options
        if context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    }
    parsed = {
        **options,
        "preprocessors": [parse_component(p) for p in options["preprocessors"]]
        or list(DEFAULT_PREPROCESSORS),
        "encoders": [parse_component(e) for e in options["encoders"]] or list(DEFAULT_ENCODERS),
        "head": parse_component(options["head"]),
    }
    recipe = recipe_for(options["dataset"])
    if recipe is None:
        return parsed, None
    return apply_recipe(recipe, parsed, given)


def _print(summary: dict[str, Any]) -> None:
    click.echo(f"bundle {summary['bundle']} (fingerprint {summary['fingerprint']})")
    click.echo(f"best epoch {summary['best_epoch']}; rows {summary['dataset']['splits']}")
    if corrections := summary["dataset"].get("corrections"):
        click.echo(
            f"corrections: {corrections['products']} products, used per split "
            f"{corrections['used']}, {corrections['changed_labels']} labels changed; "
            f"{corrections['not_in_data']} not among the rows read (not in the file, or "
            "filtered out by --limit / --with-images-only): those are not used, a correction "
            "carries no title or photo"
        )
    for name in ("val", "test"):
        levels = summary.get(name, {}).get("levels", summary.get(name) if name == "val" else {})
        for level, m in (levels or {}).items():
            click.echo(
                f"{name:5} {level:20} acc {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}"
                f"  weighted-F1 {m['weighted_f1']:.4f}  n {m['n']}"
            )
    cascade = summary.get("test", {}).get("cascade")
    if cascade:
        finest = list(cascade["levels"])[-1]
        click.echo(
            f"cascade: {cascade['decided_by_text']:.1%} of test rows decided by text, "
            f"{finest} acc {cascade['levels'][finest]['accuracy']:.4f}"
        )
