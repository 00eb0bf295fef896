"""Writes a run's results: ``<name>.json`` + ``latest.json``, plots, docs/benchmarks.md.

The docs page is shared: the bench owns only the part between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` and rewrites just that, so hand-written sections (training quality,
profiling notes) stay as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
DOCS_TITLE = "# Benchmarks\n\n"


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


def plots(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Throughput per batch size and the latency CDF, as PNG files in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    if results.get("model_only"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for (precision, mode), series in _series(results["model_only"]).items():
            sizes, rates = zip(*series, strict=True)
            ax.plot(sizes, rates, marker="o", label=f"model only, {precision}, {mode}")
        for key, style in (("e2e", "-"), ("naive", ":")):
            rate = (results.get(key) or {}).get("items_per_s")
            if rate:
                label = "end to end (worker)" if key == "e2e" else "naive baseline"
                ax.axhline(rate, color="black", linestyle=style, label=label)
        ax.set_xscale("log", base=2)
        labels = ("Throughput by batch size", "batch size", "items/s")
        made["throughput"] = _save(fig, ax, labels, folder / "bench_throughput.png")
    if results.get("latency"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for level in results["latency"]:
            millis = level["latencies_ms"]
            fractions = [(i + 1) / len(millis) for i in range(len(millis))]
            ax.step(millis, fractions, where="post", label=f"{level['load']:.0%} load")
        bound = results.get("p99_bound_ms")
        if bound:
            ax.axvline(bound, color="black", linestyle=":", label="p99 bound")
        ax.axhline(0.99, color="grey", linewidth=0.5)
        ax.set_xscale("log")
        labels = ("Latency CDF under load", "publish -> assignment received (ms)", "fraction")
        made["latency"] = _save(fig, ax, labels, folder / "bench_latency_cdf.png")
    return made


def _save(fig: Any, ax: Any, labels: tuple[str, str, str], path: Path) -> Path:
    import matplotlib.pyplot as plt

    title, xlabel, ylabel = labels
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(points: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for p in points:
        series.setdefault((p["precision"], p["mode"]), []).append(
            (p["batch_size"], p["items_per_s"])
        )
    return {k: sorted(v) for k, v in series.items()}


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
    lines = [
        "## Speed (written by `prodcat bench`; regenerate, don't edit)",
        "",
        f"- **Command**: `{env['command']}` on {env['date']}",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
        f"load average at start {' / '.join(str(x) for x in m['load_average_at_start'])} "
        f"(shared machine: ratios, measured side by side, matter more than absolute figures)",
        f"- **Versions**: Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- **Model**: `{results['model']['path']}` ({results['model']['fingerprint']}); "
        f"provider {env['providers']}; batcher max_batch_size {b['max_batch_size']}, "
        f"max_delay_ms {b['max_delay_ms']:g}",
        "",
        "### Goals",
        "",
        "| goal | measured | met |",
        "| --- | --- | --- |",
        f"| end to end ≥ 0.8 × model only ({results['model']['precision']}, featurising "
        f"included, at the mean batch "
        f"the batcher formed: {_f(s['batch_size_mean'])}) | {_f(s['e2e_over_model_only'], 2)} "
        f"({_f(s['e2e_items_per_s'])} / {_f(s['model_only_items_per_s'])} items/s) "
        f"| {_yes(s['goals']['e2e_over_model_only >= 0.8'])} |",
        f"| micro-batched worker ≥ 1.5 × naive loop | {_f(s['batched_over_naive'], 2)} "
        f"({_f(s['e2e_items_per_s'])} / {_f(s['naive_items_per_s'])} items/s) "
        f"| {_yes(s['goals']['batched_over_naive >= 1.5'])} |",
        f"| p99 at 50% load ≤ max_delay_ms + 3 × one full batch "
        f"({b['max_delay_ms']:g} + 3 × {_f(s['full_batch_inference_ms'])} ms) "
        f"| {_f(s['p99_ms_at_50pct'])} ms ≤ {_f(s['p99_bound_ms'])} ms "
        f"| {_yes(s['goals']['p99_at_50pct <= bound'])} |",
        "",
        f"CPU per item, which the machine's load moves far less: model only "
        f"{_f(s.get('model_only_cpu_ms_per_item'))} ms, worker end to end "
        f"{_f(s.get('e2e_cpu_ms_per_item'))} ms (×{_f(s.get('e2e_cpu_over_model_only_cpu'), 2)}), "
        f"naive loop {_f(s.get('naive_cpu_ms_per_item'))} ms.",
        "",
    ]
    lines += _model_table(results.get("model_only"), images.get("throughput"), docs)
    lines += _stream_table(results)
    lines += _latency_table(results.get("latency"), images.get("latency"), docs)
    lines += _accuracy_table(results.get("accuracy"))
    lines += _guarantees_table(results.get("guarantees"))
    return "\n".join(lines)


def _model_table(points: Any, image: Path | None, docs: Path) -> list[str]:
    if not points:
        return []
    series = _series(points)
    keys = list(series)
    lines = [
        "### 1. Model-only ceiling (ONNX Runtime, items/s)",
        "",
        "`precomputed`: features made beforehand, inference only. `featurised`: featurise "
        "(worker's thread-pool size) + collate + inference per batch. int8: dynamic, "
        "per channel.",
        "",
        "| batch | " + " | ".join(f"{p} {mode}" for p, mode in keys) + " |",
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
    e2e, naive = results.get("e2e"), results.get("naive")
    if not e2e and not naive:
        return []
    lines = [
        "### 2-3. End to end (embedded broker, one worker process) vs the naive loop",
        "",
        "Products with the photo inline, published as fast as the producer goes after a "
        "warm-up burst; items/s from the first to the last outcome received.",
        "",
        "| pipeline | products | seconds | items/s | process CPU ms per item |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, part in (("worker (micro-batched)", e2e), ("naive kafka-python loop", naive)):
        if part:
            lines.append(
                f"| {name} | {part['items']} | {_f(part['seconds'])} | {_f(part['items_per_s'])} "
                f"| {_f(part.get('cpu_ms_per_item'))} |"
            )
    batches = (e2e or {}).get("batch_size")
    if batches and batches["count"]:
        lines += [
            "",
            f"Batches the worker's batcher formed: {batches['count']}, mean size "
            f"{_f(batches['mean'])}; mean inference per batch in the worker "
            f"{_f(e2e.get('inference_ms_mean'))} ms.",
            "",
            "| batch size ≤ | batches |",
            "| ---: | ---: |",
        ]
        lines += [f"| {_bucket(le)} | {n} |" for le, n in batches["buckets"].items() if n]
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


def _accuracy_table(rows: Any) -> list[str]:
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
        "| bundle | encoders | head | graph | accuracy per level | items/s (model) "
        "| items/s (featurised) | ms/item |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['bundle']}` | — | — | — | {r['error']} | | | |")
            continue
        acc = r["accuracy"]
        accuracy = " / ".join(f"{v:.3f}" for v in acc.values()) if acc else "not evaluated"
        lines.append(
            f"| `{Path(r['bundle']).name}` | {', '.join(r['encoders'])} | {r['head']} "
            f"| {r['precision']} | {accuracy} | {_f(r['items_per_s'])} "
            f"| {_f(r['featurised_items_per_s'])} | {_f(r['ms_per_item'], 2)} |"
        )
    levels = next((list(r["accuracy"]) for r in rows if r.get("accuracy")), [])
    if levels:
        lines += ["", f"Accuracy levels: {' / '.join(levels)}."]
    lines.append("")
    return lines


def _guarantees_table(found: Any) -> list[str]:
    if not found:
        return []
    lines = [
        "### 6. Exactly once vs at least once (Apache Kafka, one node, one worker)",
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


def _bucket(le: str) -> str:
    return le if le == "+Inf" else f"{float(le):g}"


def _f(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _yes(met: bool | None) -> str:
    return "not measured" if met is None else ("**yes**" if met else "**no**")


def _rel(path: Path, docs: Path) -> str:
    return Path(os.path.relpath(path.resolve(), docs.resolve().parent)).as_posix()
