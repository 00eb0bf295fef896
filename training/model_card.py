"""The model card (README.md of a bundle): what the model is, on what data, how good it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prodcat.model.bundle import MANIFEST_FILE

CURVE_FILE = "training.png"


def write_card(bundle: Path, metrics: dict[str, Any]) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    history = manifest["training"].get("history", [])
    if history:
        _plot_curve(history, bundle / CURVE_FILE)
    (bundle / "README.md").write_text(_card(manifest, metrics, bool(history)), encoding="utf-8")


def _plot_curve(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(6, 3.5))
    loss_ax.plot(epochs, [h["loss"] for h in history], color="tab:red", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss (sum over levels)")
    score_ax = loss_ax.twinx()
    score_ax.plot(epochs, [h["score"] for h in history], color="tab:blue", label="val F1")
    score_ax.set_ylabel("validation mean macro-F1")
    lines = [*loss_ax.get_lines(), *score_ax.get_lines()]
    loss_ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(levels: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| level | accuracy | macro-F1 | weighted-F1 | n |", "|---|---|---|---|---|"]
    for level, m in levels.items():
        rows.append(
            f"| {level} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
            f"{m['weighted_f1']:.4f} | {m['n']} |"
        )
    return rows


def _graphs(graphs: dict[str, Any], parity: dict[str, Any]) -> str:
    """Each graph with its precision and its own parity figure."""
    entries = {**graphs["encoders"], "head": graphs["head"]}
    checks = parity.get("graphs", {})
    return ", ".join(
        f"`{entry['file']}` {entry.get('precision', 'fp32')}"
        + (f" (parity {checks[name]['max_abs_diff']:.1e})" if name in checks else "")
        for name, entry in entries.items()
    )


def _cascade(manifest: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The text-first cascade: thresholds, what calibration found, and the test figures."""
    entry = manifest.get("cascade")
    if not entry:
        return []
    val = entry["validation"]
    lines = ["## Text-first cascade", ""]
    if not entry.get("thresholds"):
        return lines + [
            f"Calibration on {val['rows']} validation rows found no threshold within "
            f"{entry['tolerance'] * 100:.2g} points of always fusing: the worker always fuses.",
            "",
        ]
    lines += [
        f"The first stage (`{', '.join(entry['first'])}`, photo masked) decides a product with "
        "a photo when the served path's score at every level reaches the threshold; the rest "
        "pay for the photo. Calibrated on the validation rows with a title and a photo "
        f"({val['rows']}), tolerance {entry['tolerance'] * 100:.2g} accuracy points per level "
        "against always fusing.",
        "",
        "| level | threshold | validation: fused | cascade | drop |",
        "|---|---|---|---|---|",
    ]
    for level, threshold in entry["thresholds"].items():
        fused, cascade = val["accuracy"]["fused"][level], val["accuracy"]["cascade"][level]
        lines.append(
            f"| {level} | {threshold:.4f} | {fused:.4f} | {cascade:.4f} | "
            f"{(fused - cascade) * 100:.2f} pts |"
        )
    lines += [
        "",
        f"- Validation rows decided by the first stage: {val['decided_by_first_stage']:.1%}",
    ]
    test = metrics.get("cascade")
    if test:
        finest = manifest["levels"][-1]
        drop = metrics["levels"][finest]["accuracy"] - test["levels"][finest]["accuracy"]
        speed = test.get("items_per_s")
        lines.append(
            f"- Test split: {test['decided_by_text']:.1%} decided by text, {finest} accuracy "
            f"{test['levels'][finest]['accuracy']:.4f} "
            f"(cascade minus fused: {-drop * 100:+.2f} points)"
            + (f", its graphs {speed:.1f} items/s (featurizing excluded)" if speed else "")
        )
    poor = metrics.get("variants", {}).get("poor_titles", {}).get("cascade")
    if poor:
        finest = manifest["levels"][-1]
        lines.append(
            f"- Test split with poor titles: {poor['decided_by_text']:.1%} decided by the "
            f"title, {finest} accuracy {poor['levels'][finest]['accuracy']:.4f} as the cascade "
            "serves them"
        )
    return lines + [""]


VARIANT_TITLES = {
    "full": "full input",
    "poor_titles": "poor titles (category words removed)",
    "no_title": "no title (photo only)",
    "no_photo": "no photo (title only)",
}


def _per_level(values: dict[str, float]) -> str:
    return ", ".join(f"{level} {value:.3f}" for level, value in values.items()) or "none"


def _variants(metrics: dict[str, Any]) -> list[str]:
    """Each evaluation variant per level: all rows and rows with a photo, ECE, review."""
    variants = metrics.get("variants") or {}
    if not variants:
        return []
    photo = metrics.get("n_with_photo")
    lines = [
        "",
        "### As shops send products: evaluation variants",
        "",
        "The same test rows with the title stripped of every word that names a category, "
        "without a title, and without a photo. Accuracy / macro-F1 on every row and on the "
        f"{photo} rows with a photo; ECE per level (master / sub / finest); errors flagged: "
        "the share of wrong answers (any level) `needs_review` flags at score "
        f"{variants['full']['review']['threshold']} (the bundle's unless evaluated with "
        "another), and the share of all rows it flags.",
        "",
        "| variant | level | accuracy | macro-F1 | with photo: accuracy | macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in variants.items():
        with_photo = result.get("with_photo", {}).get("levels", {})
        for level, m in result["levels"].items():
            p = with_photo.get(level)
            lines.append(
                f"| {VARIANT_TITLES.get(name, name)} | {level} | {m['accuracy']:.4f} | "
                f"{m['macro_f1']:.4f} | "
                + (f"{p['accuracy']:.4f} | {p['macro_f1']:.4f} |" if p else "— | — |")
            )
    lines += [
        "",
        "| variant | ECE per level | errors flagged | rows flagged |",
        "|---|---|---|---|",
    ]
    for name, result in variants.items():
        review = result["review"]
        caught = review["errors_flagged_any_level"]
        lines.append(
            f"| {VARIANT_TITLES.get(name, name)} | "
            f"{' / '.join(f'{v:.3f}' for v in result['ece_per_level'].values())} | "
            f"{'—' if caught is None else f'{caught:.1%}'} | {review['flagged']:.1%} |"
        )
    return lines


def _review(review: dict[str, Any] | None) -> list[str]:
    if not review:
        return []
    val = review["validation"]
    return [
        f"- `needs_review`: any level's score under {review['threshold']}, fitted to flag "
        f"{review['catch']:.0%} of the validation split's wrong answers (it flags "
        f"{val['errors_flagged']:.1%} of them, and {val['flagged']:.1%} of its rows)"
    ]


def _recipe(config: dict[str, Any]) -> str:
    """How the rows were shown in training: what makes the photo matter."""
    keys = (
        "photo_oversample",
        "category_word_dropout",
        "title_dropout",
        "modality_dropout",
        "view_weights",
        "schedule",
    )
    return "- Recipe: " + ", ".join(f"{k} {config[k]}" for k in keys if k in config)


def _title_only(training: dict[str, Any]) -> list[str]:
    """The classes no training row with a photo carried (learned from titles alone)."""
    classes = training.get("title_only_classes")
    if not classes:
        return []
    lines = [
        "## Classes learned from titles only",
        "",
        "No training row of these classes had a photo: the model knows them from titles "
        "alone, so a product of theirs with a poor or missing title is likely misfiled.",
        "",
    ]
    for level, names in classes.items():
        lines.append(f"- {level} ({len(names)}): {', '.join(names) or 'none'}")
    return lines + [""]


def _dataset_recipe(recipe: dict[str, Any] | None) -> list[str]:
    """The data set's recipe the bundle was trained with, and what the command overrode."""
    if not recipe:
        return []
    overridden = ", ".join(recipe["overridden"]) or "nothing"
    return [
        f"- Recipe `{recipe['dataset']}` (`prodcat train --dataset {recipe['dataset']}`): "
        f"{recipe['why']}; overridden on the command line: {overridden}"
    ]


def _card(manifest: dict[str, Any], metrics: dict[str, Any], curve: bool) -> str:
    data = manifest["dataset"]
    split = data["split"]
    training = manifest["training"]
    lines = [
        "# prodcat model",
        "",
        f"Fingerprint `{manifest['fingerprint']}`, created {manifest['created']}. "
        f"Serve it with `prodcat worker --model <this folder>`; the worker rebuilds the "
        "featurizers below from `manifest.json` and refuses to start if any differ.",
        "",
        "## Components",
        "",
        "| kind | name | version | from | config |",
        "|---|---|---|---|---|",
    ]
    for kind, entries in (
        ("preprocessor", manifest["preprocessors"]),
        ("encoder", manifest["encoders"]),
        ("head", [manifest["head"]]),
    ):
        for e in entries:
            origin = (
                f"{e.get('distribution') or e.get('plugin')} {e.get('distribution_version') or ''}"
            )
            lines.append(
                f"| {kind} | `{e['name']}` | {e['version']} | {origin.strip()} | "
                f"`{json.dumps(e['config'], sort_keys=True)}` |"
            )
    rare = data.get("rare_classes", {})
    lines += [
        "",
        "## Data",
        "",
        f"- Source: `{data['path']}` ({data['format']}), {data['rows']} rows"
        + (", rows with a photo only" if data.get("with_images_only") else ""),
        f"- Levels: {', '.join(manifest['levels'])} "
        f"({', '.join(str(o['size']) for o in manifest['outputs'])} classes)",
        f"- Split: {split['counts']} rows, grouped by {split['grouping']} "
        f"({split['groups']} groups), seed {split['seed']}",
        f"- Classes with fewer than {rare.get('threshold')} rows: {rare.get('action')} "
        f"({sum(len(v) for v in rare.get('classes', {}).values())} classes)",
        f"- Skipped rows: {data.get('skipped') or 'none'}",
        *_dataset_recipe(training.get("recipe")),
        "",
        "## Metrics (test split, ONNX Runtime, served taxonomy-consistent path)",
        "",
        *_table(metrics["levels"]),
    ]
    lines += _variants(metrics)
    speed = metrics.get("items_per_s")
    lines += [
        "",
        f"- Calibration (ECE per level, full input): {_per_level(metrics['ece_per_level'])}; "
        f"temperatures fitted on validation: {_per_level(training.get('temperatures') or {})}",
        f"- Throughput of the graph: {speed:.1f} items/s "
        f"(batch {metrics['throughput']['batch_size']}, {metrics['throughput']['threads']} "
        "CPU threads, featurizing excluded)"
        if speed
        else "- Throughput: not measured",
        f"- Parity ONNX vs torch{' (end to end)' if 'graphs' in manifest else ''}: max abs "
        f"diff {training['parity']['max_abs_diff']:.2e}, "
        f"argmax agreement {training['parity']['argmax_agreement']:.0%}",
    ]
    if "graphs" in manifest:
        lines.append(
            f"- Graphs (bundle format 2): {_graphs(manifest['graphs'], training['parity'])}"
        )
    if "quantization" in training:
        q = training["quantization"]
        methods = q.get("methods") or {"model": "dynamic int8 per channel"}
        lines.append(
            f"- int8 ({'; '.join(f'{k}: {v}' for k, v in methods.items())}): validation "
            f"accuracy change per level {[round(c, 4) for c in q.get('accuracy_change', [])]}"
        )
    lines += [
        f"- Best epoch {training.get('best_epoch')} of {len(training.get('history', []))} "
        f"(early stopping on validation mean macro-F1)",
        _recipe(training.get("config", {})),
        f"- Answer: the views fused / title / photo pooled as a weighted geometric mean, "
        f"weights {training.get('view_weights')}"
        + (" (chosen on validation)" if training.get("config", {}).get("fit_views") else ""),
        *_review(manifest.get("review")),
        "",
        *_title_only(training),
        *_cascade(manifest, metrics),
        "## Plots",
        "",
    ]
    if curve:
        lines.append(f"![training curve]({CURVE_FILE})")
    lines += [f"![{p}]({p})" for p in metrics.get("plots", [])]
    lines += [
        "",
        "## Limitations",
        "",
        "Only categories seen in training can be predicted; classes merged as `other` are "
        "predicted as `other`. Accuracy on rare classes is much lower than the averages above "
        "(see macro-F1).",
        "",
    ]
    return "\n".join(lines)
