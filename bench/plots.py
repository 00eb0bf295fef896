"""The bench's plots (PNG, in the docs page's img/ folder): throughput by batch size, the
latency CDF under load, and accuracy against speed for each way of serving the bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plots(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Every plot the results allow, as PNG files in ``folder``; name -> file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    if results.get("model_only"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for (precision, path, mode), series in model_series(results["model_only"]).items():
            sizes, rates = zip(*series, strict=True)
            ax.plot(sizes, rates, marker="o", label=f"model only, {path}, {precision}, {mode}")
        for key, style, label in (
            ("e2e", "-", "end to end (worker)"),
            ("e2e_fused", "--", "end to end (worker, cascade off)"),
            ("naive", ":", "naive baseline"),
        ):
            rate = (results.get(key) or {}).get("items_per_s")
            if rate:
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
    points = accuracy_points(results)
    if points:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        markers = "osD^vP*X"
        for index, (name, rate, accuracy) in enumerate(points):
            marker = "*" if name.startswith("worker") else markers[index % 6]
            ax.scatter(
                [rate], [accuracy * 100], s=90 if marker == "*" else 45, marker=marker, label=name
            )
        ax.set_xscale("log")
        labels = ("Accuracy against speed", "items/s (log)", "test accuracy, finest level (%)")
        made["accuracy"] = _save(fig, ax, labels, folder / "bench_accuracy_speed.png", outside=True)
    return made


def accuracy_points(results: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(label, items/s, finest-level test accuracy): each path of each bundle at the
    batcher's max batch size with featurising, and the worker end to end by path."""
    found = []
    own: dict[str, float] = {}  # path -> accuracy of the benchmarked bundle
    for row in results.get("accuracy") or []:
        accuracy, rate = row.get("accuracy"), row.get("featurised_items_per_s")
        if not accuracy or not rate:
            continue
        finest = list(accuracy.values())[-1]
        if row["bundle"] == results["model"]["path"]:
            own[row["path"]] = finest
        found.append((f"{Path(row['bundle']).name} {row['path']}, model", rate, finest))
    cascade = bool(results.get("e2e_fused"))
    for key, path in (("e2e", "cascade" if cascade else "fused"), ("e2e_fused", "fused")):
        rate = (results.get(key) or {}).get("items_per_s")
        if rate and path in own:
            found.append((f"worker end to end, {path}", rate, own[path]))
    return found


def model_series(
    points: Sequence[dict[str, Any]],
) -> dict[tuple[str, str, str], list[tuple[int, float]]]:
    """(precision, path, mode) -> [(batch size, items/s)], sorted by batch size."""
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for p in points:
        key = (p["precision"], p.get("path", "fused"), p["mode"])
        series.setdefault(key, []).append((p["batch_size"], p["items_per_s"]))
    return {k: sorted(v) for k, v in series.items()}


def _save(
    fig: Any, ax: Any, labels: tuple[str, str, str], path: Path, outside: bool = False
) -> Path:
    import matplotlib.pyplot as plt

    title, xlabel, ylabel = labels
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        where = {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)} if outside else {}
        ax.legend(fontsize=7, **where)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
