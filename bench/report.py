"""Writes a run's results: ``<name>.json`` + ``latest.json``, plots, docs/benchmarks.md.

The docs page is shared: the bench owns only the part between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` and rewrites just that, so hand-written sections (training quality,
profiling notes) stay as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.plots import model_series

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
DOCS_TITLE = "# Benchmarks\n\n"
ENLARGED = "8× on each side, in memory"


def write_json(results: dict[str, Any], folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    written = []
    for file in (folder / f"{name}.json", folder / "latest.json"):
        tmp = file.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(file)
        written.append(file)
    return written


def update_docs(docs: Path, section: str) -> None:
    """Replace the bench's part of ``docs`` (create the page or append the part if absent)."""
    text = docs.read_text(encoding="utf-8") if docs.is_file() else DOCS_TITLE
    block = f"{START}\n{section.strip()}\n{END}"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text, encoding="utf-8")


def markdown(results: dict[str, Any], images: dict[str, Path], docs: Path) -> str:
    """The bench's section of docs/benchmarks.md."""
    s = env = results
    m = env["machine"]
    b = results["batcher"]
    goals = s["goals"]
    lines = [
        "## Speed (written by `prodcat bench`; regenerate, don't edit)",
        "",
        f"- **Command**: `{env['command']}` on {env['date']}",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
        f"load average at start {' / '.join(str(x) for x in m['load_average_at_start'])} "
        f"(shared machine: ratios, measured side by side, matter more than absolute figures)",
        f"- **Versions**: Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- **Model**: `{results['model']['path']}` ({results['model']['fingerprint']}, "
        f"{results['model']['precision']}); provider {env['providers']}; batcher "
        f"max_batch_size {b['max_batch_size']}, max_delay_ms {b['max_delay_ms']:g}; "
        f"{results['plan'].get('distinct_products', 'n/a')} distinct products "
        "(the test split's rows with a photo when the data file is the bundle's)",
        "",
        "### Goals",
        "",
        "| goal | measured | met |",
        "| --- | --- | --- |",
    ]
    if s.get("cascade_e2e_items_per_s"):
        lines += [
            f"| worker with the cascade ≥ 3 × always fusing, end to end "
            f"| {_f(s['cascade_over_fused_e2e'], 2)} ({_f(s['cascade_e2e_items_per_s'])} / "
            f"{_f(s['fused_e2e_items_per_s'])} items/s; "
            f"{_f(_pct(s['cascade_text_share']))}% decided by text) "
            f"| {_yes(goals['cascade_over_fused_e2e >= 3'])} |",
            f"| cascade ≤ 0.3 points below always fusing (test split, finest level) "
            f"| {_f(_pct(s['cascade_accuracy_drop']), 2)} points "
            f"| {_yes(goals['cascade_accuracy_drop <= 0.003'])} |",
        ]
    lines += [
        f"| end to end ≥ 0.8 × model only ({results['model']['precision']}, featurising "
        f"included, at the mean batch the batcher formed: {_f(s['batch_size_mean'])}) "
        f"| {_f(s['e2e_over_model_only'], 2)} "
        f"({_f(s['e2e_items_per_s'])} / {_f(s['model_only_items_per_s'])} items/s) "
        f"| {_yes(goals['e2e_over_model_only >= 0.8'])} |",
        f"| micro-batched worker ≥ 1.5 × naive loop (always fusing, one message at a time) "
        f"| {_f(s['batched_over_naive'], 2)} "
        f"({_f(s['e2e_items_per_s'])} / {_f(s['naive_items_per_s'])} items/s; the worker "
        f"always fusing: {_f(s.get('fused_over_naive'), 2)}) "
        f"| {_yes(goals['batched_over_naive >= 1.5'])} |",
        f"| p99 at 50% load ≤ max_delay_ms + 3 × one full batch "
        f"({b['max_delay_ms']:g} + 3 × {_f(s['full_batch_inference_ms'])} ms) "
        f"| {_f(s['p99_ms_at_50pct'])} ms ≤ {_f(s['p99_bound_ms'])} ms "
        f"| {_yes(goals['p99_at_50pct <= bound'])} |",
        "",
        f"CPU per item, which the machine's load moves far less: model only "
        f"{_f(s.get('model_only_cpu_ms_per_item'))} ms, worker end to end "
        f"{_f(s.get('e2e_cpu_ms_per_item'))} ms (×{_f(s.get('e2e_cpu_over_model_only_cpu'), 2)})"
        + (
            f", the worker always fusing {_f(s.get('fused_e2e_cpu_ms_per_item'))} ms"
            if s.get("cascade_e2e_items_per_s")
            else ""
        )
        + f", naive loop {_f(s.get('naive_cpu_ms_per_item'))} ms.",
        "",
    ]
    lines += _model_table(results.get("model_only"), images.get("throughput"), docs)
    lines += _stream_table(results)
    lines += _latency_table(results.get("latency"), images.get("latency"), docs)
    lines += _accuracy_table(results.get("accuracy"), images.get("accuracy"), docs)
    lines += image_path_table(results.get("image_path"))
    lines += _guarantees_table(results.get("guarantees"))
    return "\n".join(lines)


def _model_table(points: Any, image: Path | None, docs: Path) -> list[str]:
    if not points:
        return []
    series = model_series(points)
    keys = list(series)
    lines = [
        "### 1. Model-only ceiling (ONNX Runtime, items/s)",
        "",
        "`precomputed`: features made beforehand, inference only. `featurised`: featurise "
        "(worker's thread-pool size) + collate + inference per batch. Paths of a split "
        "bundle: `fused` runs every encoder the product has, `cascade` the title first and "
        "the photo only for the products it does not decide, `text` the title alone. int8 "
        "of a format-1 bundle: dynamic, per channel, made on the fly.",
        "",
        "| batch | " + " | ".join(f"{path} {p} {mode}" for p, path, mode in keys) + " |",
        "| ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    sizes = sorted({size for v in series.values() for size, _ in v})
    for size in sizes:
        cells = [_f(dict(series[k]).get(size)) for k in keys]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines.append("")
    if image:
        lines += [f"![throughput by batch size]({_rel(image, docs)})", ""]
    return lines


def _stream_table(results: dict[str, Any]) -> list[str]:
    e2e, fused, naive = results.get("e2e"), results.get("e2e_fused"), results.get("naive")
    if not e2e and not naive:
        return []
    lines = [
        "### 2-3. End to end (embedded broker, one worker process) vs the naive loop",
        "",
        "Products with the photo inline, published as fast as the producer goes after a "
        "warm-up burst; items/s from the first to the last outcome received, over three "
        "bursts per pipeline, the pipelines taking turns.",
        "",
        "| pipeline | products | seconds | items/s | process CPU ms per item | decided by text |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    named = (
        ("worker (micro-batched)" + (", cascade on" if fused else ""), e2e),
        ("worker (micro-batched), cascade off", fused),
        ("naive kafka-python loop (always fusing)", naive),
    )
    for name, part in named:
        if part:
            decided = part.get("decided_by") or {}
            total = sum(decided.values())
            share = f"{decided.get('text', 0) / total:.1%}" if total else "—"
            lines.append(
                f"| {name} | {part['items']} | {_f(part['seconds'])} | {_f(part['items_per_s'])} "
                f"| {_f(part.get('cpu_ms_per_item'))} | {share} |"
            )
    lines.append("")
    for name, part in named[:2]:
        if part and part.get("graphs"):
            lines += [
                f"Batches each graph's batcher formed ({name}):",
                "",
                "| graph | batches | mean size | mean inference ms |",
                "| --- | ---: | ---: | ---: |",
            ]
            for graph, figures in part["graphs"].items():
                batches = figures["batch_size"]
                lines.append(
                    f"| `{graph}` | {batches['count']} | {_f(batches['mean'])} "
                    f"| {_f(figures['inference_ms_mean'])} |"
                )
            lines.append("")
    return lines


def _latency_table(levels: Any, image: Path | None, docs: Path) -> list[str]:
    if not levels:
        return []
    lines = [
        "### 4. Latency under load (publish -> assignment received)",
        "",
        "In the worker: from the event's consumption to its assignment being built (the "
        "assignment's `latency_ms`); the rest is the broker hops, both ways.",
        "",
        "| load | offered /s | published /s | products | p50 ms | p95 ms | p99 ms "
        "| in the worker p50 / p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in levels:
        lines.append(
            f"| {r['load']:.0%} | {_f(r['offered_per_s'])} | {_f(r['published_per_s'])} "
            f"| {r['items']} | {_f(r['p50_ms'])} | {_f(r['p95_ms'])} | {_f(r['p99_ms'])} "
            f"| {_f(r.get('worker_p50_ms'))} / {_f(r.get('worker_p99_ms'))} |"
        )
    lines.append("")
    if image:
        lines += [f"![latency CDF]({_rel(image, docs)})", ""]
    return lines


def _accuracy_table(rows: Any, image: Path | None, docs: Path) -> list[str]:
    if not rows:
        return []
    lines = [
        "### 5. Accuracy per millisecond",
        "",
        "Test-split accuracy as recorded with each bundle (`prodcat train` / `prodcat "
        "evaluate`); speed as in item 1 at the batcher's max batch size, in the graph the "
        "bundle ships. Add a bundle with `prodcat bench --section accuracy --compare DIR` "
        "(repeatable).",
        "",
        "| bundle | path | encoders | head | graphs | accuracy per level | items/s (model) "
        "| items/s (featurised) | ms/item |",
        "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['bundle']}` | — | — | — | — | {r['error']} | | | |")
            continue
        acc = r["accuracy"]
        accuracy = " / ".join(f"{v:.3f}" for v in acc.values()) if acc else "not evaluated"
        lines.append(
            f"| `{Path(r['bundle']).name}` | {r.get('path', 'fused')} | "
            f"{', '.join(r['encoders'])} | {r['head']} "
            f"| {r['precision']} | {accuracy} | {_f(r['items_per_s'])} "
            f"| {_f(r['featurised_items_per_s'])} | {_f(r['ms_per_item'], 2)} |"
        )
    levels = next((list(r["accuracy"]) for r in rows if r.get("accuracy")), [])
    if levels:
        lines += ["", f"Accuracy levels: {' / '.join(levels)}."]
    lines.append("")
    if image:
        lines += [f"![accuracy against speed]({_rel(image, docs)})", ""]
    return lines


def _guarantees_table(found: Any) -> list[str]:
    if not found:
        return []
    lines = [
        "### 7. Exactly once vs at least once (Apache Kafka, one node, one worker)",
        "",
        "Burst as in 2; latency at half the at-least-once throughput, publish -> outcome "
        "visible (exactly once: to a read_committed reader, i.e. once its transaction "
        "commits).",
        "",
        "| guarantee | items/s | process CPU ms per item | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in ("at_least_once", "exactly_once"):
        burst, latency = found[mode]["burst"], found[mode]["latency"]
        lines.append(
            f"| {mode.replace('_', ' ')} | {_f(burst['items_per_s'])} "
            f"| {_f(burst.get('cpu_ms_per_item'))} | {_f(latency['p50_ms'])} "
            f"| {_f(latency['p95_ms'])} | {_f(latency['p99_ms'])} |"
        )
    ratio = found["exactly_once_over_at_least_once"]
    lines += [
        "",
        f"Exactly once / at least once: throughput ×{_f(ratio['items_per_s'], 2)}, CPU per "
        f"item ×{_f(ratio['cpu_ms_per_item'], 2)}, p50 latency ×{_f(ratio['p50_ms'], 2)}.",
        "",
    ]
    return lines


def image_path_table(image: Any) -> list[str]:
    """Item 6: each step of the cheaper image path, before and after."""
    if not image:
        return []
    d = image["decode"]
    lines = [
        "### 6. The image path, step by step",
        "",
        f"Decode + encoder input per photo ({d['photos']} photos; enlarged: {ENLARGED}, "
        f"{d['enlarged_size'][0]}×{d['enlarged_size'][1]} pixels), full decode against "
        f"draft mode (`image.decode` `draft_size` {d['draft_size']}):",
        "",
        "| photos | full decode ms (CPU) | draft mode ms (CPU) |",
        "| --- | ---: | ---: |",
    ]
    for name in ("original", "enlarged"):
        lines.append(
            f"| {name} | {_f(d[f'{name}_full_ms'], 2)} ({_f(d[f'{name}_full_cpu_ms'], 2)}) "
            f"| {_f(d[f'{name}_draft_ms'], 2)} ({_f(d[f'{name}_draft_cpu_ms'], 2)}) |"
        )
    lines += [
        "",
        f"Encoder input, draft against full decode of the enlarged photos: mean absolute "
        f"difference {d['mean_input_diff']:.4f}, largest {d['max_input_diff']:.3f} "
        "(inputs span [-1, 1]).",
        "",
    ]
    q = image.get("int8")
    if q:
        lines += [
            f"Image encoder graph `{q['graph']}` at batch {q['batch_size']} (shipped "
            f"{q['shipped']}), against a static int8 copy (QDQ, per channel, calibrated on "
            "other bench photos):",
            "",
            "| graph | items/s | CPU ms per item |",
            "| --- | ---: | ---: |",
            *(
                f"| {p} | {_f(q[p]['items_per_s'])} | {_f(q[p]['cpu_ms_per_item'], 2)} |"
                for p in ("fp32", "int8")
            ),
            "",
            f"Embedding cosine int8 to fp32: mean {q['cosine_mean']:.4f}, "
            f"min {q['cosine_min']:.4f}.",
            "",
        ]
    c = image.get("cache")
    if c:
        lines += [
            f"Image embedding cache, the worker's runtime without Kafka, cascade off, "
            f"{c['products']} products (each photo twice, the second time republished):",
            "",
            "| cache | items/s | CPU ms per item | hit ratio |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {name} | {_f(c[name]['items_per_s'])} | "
                f"{_f(c[name]['cpu_ms_per_item'], 2)} | "
                f"{_share(c[name]['hit_ratio'])} |"
                for name in ("off", "on")
            ),
            "",
        ]
    return lines


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def _f(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _yes(met: bool | None) -> str:
    return "not measured" if met is None else ("**yes**" if met else "**no**")


def _rel(path: Path, docs: Path) -> str:
    return Path(os.path.relpath(path.resolve(), docs.resolve().parent)).as_posix()
