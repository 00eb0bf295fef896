"""``prodcat evaluate``: measure a model bundle on a data file with ONNX Runtime alone.

It runs the bundle exactly as the worker does (featurizers rebuilt from the manifest, the
exported graph, taxonomy-consistent decoding), so a good score here is a good score in
production, and it never imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import orjson

from prodcat.cli.options import json_option
from prodcat.core.settings import Settings


@click.command("evaluate")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Model bundle folder (default: model_dir).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A file in a supported data-set format (CSV layouts or product-event JSONL).",
)
@click.option(
    "--split",
    type=click.Choice(["auto", "all", "train", "val", "test"]),
    default="auto",
    show_default=True,
    help="auto: the bundle's test split when --data is its training file, else all rows.",
)
@click.option("--with-images-only/--all-rows", default=None, help="Keep only rows with a photo.")
@click.option("--limit", type=int, help="Evaluate only the first N selected rows.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Rows per ONNX call.")
@click.option("--out", type=click.Path(file_okay=False), help="Where metrics.json and plots go.")
@json_option("Print metrics.json.")
@click.pass_obj
def command(
    settings: Settings,
    model_dir: str | None,
    data: str,
    split: str,
    with_images_only: bool | None,
    limit: int | None,
    batch_size: int,
    out: str | None,
    as_json: bool,
) -> None:
    """Accuracy, macro/weighted-F1 per level, text/image ablation, the text-first cascade as
    served (accuracy, share decided by text, speed), ECE, confusion matrices and throughput
    of a model bundle; written to metrics.json.

    The default --out is <model>/eval-<data file stem>-<split>.
    """
    from prodcat.model.bundle import BundleError, ModelBundle
    from prodcat.sources import SourceError
    from prodcat.training.evaluate import evaluate_bundle, load_eval_data

    logging.basicConfig(level=settings.log_level)
    model = Path(model_dir or settings.model_dir)
    try:
        bundle = ModelBundle.load(model)
        rows = load_eval_data(bundle, Path(data), split, with_images_only, limit)
    except (BundleError, SourceError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    target = Path(out) if out else model / f"eval-{Path(data).stem}-{rows.description['split']}"
    metrics = evaluate_bundle(
        bundle, rows, target, batch_size=batch_size, threads=settings.worker.ort_threads
    )
    if as_json:
        click.echo(orjson.dumps(metrics, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{rows.description['rows']} rows ({rows.description['split']}); wrote {target}")
    cascade = metrics.get("cascade")
    variants = [("fused", metrics["levels"])]
    variants += [(name, result["levels"]) for name, result in metrics["ablation"].items()]
    variants += [("cascade", cascade["levels"])] if cascade else []
    for variant, levels in variants:
        for level, m in levels.items():
            click.echo(
                f"{variant:10} {level:20} acc {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}"
                f"  weighted-F1 {m['weighted_f1']:.4f}"
            )
    click.echo(f"ECE {metrics['ece']:.4f}; {metrics['items_per_s']:.1f} items/s (graph only)")
    if cascade:
        click.echo(
            f"cascade: {cascade['decided_by_text']:.1%} decided by text; "
            f"{cascade['items_per_s']:.1f} items/s (graphs only)"
        )
