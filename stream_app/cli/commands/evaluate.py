"""``prodcat evaluate``: measure a model bundle on a data file with ONNX Runtime alone.

It runs the bundle exactly as the worker does (featurizers rebuilt from the manifest, the
exported graph, taxonomy-consistent decoding), so a good score here is a good score in
production, and it never imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import orjson

from prodcat.cli.options import broker_option, corrections_option, json_option, load_corrections
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
@corrections_option("Score against")
@broker_option
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
    corrections: str | None,
    as_json: bool,
) -> None:
    """Accuracy, macro/weighted-F1 per level, on the full input and as shops send products
    (variants: poor titles without the words that name a category, no title, no photo; each
    also on the rows with a photo), ECE per level, the share of wrong answers needs_review
    flags, the text-first cascade as served (accuracy, share decided by text, speed),
    confusion matrices and throughput of a model bundle; written to metrics.json.

    The default --out is <model>/eval-<data file stem>-<split>. With --corrections the
    reviewers' labels win, and metrics.json gains `reviewed`: the scores on the reviewed
    products of the data file alone, whatever their split.
    """
    from prodcat.model.bundle import BundleError, ModelBundle
    from prodcat.sources import SourceError
    from prodcat.training.evaluate import evaluate_bundle, load_eval_data

    logging.basicConfig(level=settings.log_level)
    model = Path(model_dir or settings.model_dir)
    reviewed_labels = load_corrections(settings, corrections)
    try:
        bundle = ModelBundle.load(model)
        rows = load_eval_data(
            bundle, Path(data), split, with_images_only, limit, corrections=reviewed_labels
        )
    except (BundleError, SourceError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    target = Path(out) if out else model / f"eval-{Path(data).stem}-{rows.description['split']}"
    threads = settings.worker.ort_threads
    metrics = evaluate_bundle(
        bundle,
        rows,
        target,
        batch_size=batch_size,
        threads=threads,
        review_threshold=settings.worker.review_threshold,
    )
    if reviewed_labels:
        metrics["reviewed"] = _reviewed(bundle, Path(data), reviewed_labels, batch_size, threads)
        (target / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    if as_json:
        click.echo(orjson.dumps(metrics, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{rows.description['rows']} rows ({rows.description['split']}); wrote {target}")
    cascade = metrics.get("cascade")
    click.echo(f"{'variant':12} {'level':20} {'all rows':>19}  {'rows with a photo':>19}")
    blocks = [(name, v["levels"], v.get("with_photo")) for name, v in metrics["variants"].items()]
    blocks += [("cascade", cascade["levels"], None)] if cascade else []
    for variant, levels, with_photo in blocks:
        for level, m in levels.items():
            photo = (with_photo or {}).get("levels", {}).get(level)
            click.echo(
                f"{variant:12} {level:20} acc {m['accuracy']:.4f} F1 {m['macro_f1']:.4f}"
                + (f"  acc {photo['accuracy']:.4f} F1 {photo['macro_f1']:.4f}" if photo else "")
            )
    for name, v in metrics["variants"].items():
        caught = v["review"]["errors_flagged_any_level"]
        click.echo(
            f"{name:12} ECE {' / '.join(f'{e:.3f}' for e in v['ece_per_level'].values())}; "
            f"needs_review flags {v['review']['flagged']:.1%} of rows"
            + ("" if caught is None else f", {caught:.1%} of the wrong answers")
        )
    click.echo(f"{metrics['items_per_s']:.1f} items/s (graph only)")
    if cascade:
        click.echo(
            f"cascade: {cascade['decided_by_text']:.1%} decided by text; "
            f"{cascade['items_per_s']:.1f} items/s (graphs only)"
        )
    if "reviewed" in metrics:
        reviewed = metrics["reviewed"]
        click.echo(
            f"reviewed products: {reviewed['rows']} in the data, "
            f"{reviewed['not_in_data']} corrected products not in it"
        )
        for level, accuracy in reviewed["accuracy"].items():
            click.echo(f"{'reviewed':10} {level:20} acc {accuracy:.4f}")


def _reviewed(
    bundle: Any, data: Path, labels: dict[str, dict[str, str]], batch_size: int, threads: int
) -> dict[str, Any]:
    """Accuracy per level on the data file's reviewed products, with the reviewers' labels."""
    from prodcat.training.corrections import reviewed_eval_data
    from prodcat.training.evaluate import evaluate_bundle

    rows, missing = reviewed_eval_data(bundle, data, labels)
    if rows is None:
        return {"rows": 0, "not_in_data": missing, "accuracy": {}}
    metrics = evaluate_bundle(bundle, rows, None, batch_size=batch_size, threads=threads)
    return {
        "rows": rows.description["rows"],
        "not_in_data": missing,
        "accuracy": {level: m["accuracy"] for level, m in metrics["levels"].items()},
        "levels": metrics["levels"],
    }
