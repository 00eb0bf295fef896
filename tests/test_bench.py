"""The benchmark harness in --quick mode on a tiny real bundle: shape of what it writes.

Behaviour only (keys present, numbers positive and consistent with each other, the docs
page's other sections kept); never timings: speed is what the harness reports, not what
a test asserts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from repo import REPO_ROOT

from bench.report import END, START, update_docs
from prodcat.core.settings import Settings
from prodcat.model.bundle import BundleError, ModelBundle

pytestmark = [pytest.mark.integration, pytest.mark.training]

REQUIRED = (
    "model_only_items_per_s",
    "e2e_items_per_s",
    "naive_items_per_s",
    "e2e_over_model_only",
    "batched_over_naive",
    "p99_ms_at_50pct",
    "p99_bound_ms",
    "batch_size_mean",
)
OTHER_SECTION = "## Training quality\n\nHand-written table the bench must keep.\n"


@pytest.fixture(scope="module")
def tiny_bundle(data_dir: Path) -> Path:
    """Hashgram titles + MLP on 200 fashion photo rows, evaluated (cached between runs)."""
    from prodcat.training.datasets import DatasetOptions
    from prodcat.training.recipe import TrainSpec, run_training
    from prodcat.training.trainer import TrainConfig

    cache = REPO_ROOT / Settings().cache_dir
    out = cache / "test-bundles" / "bench-hashgram-200"
    try:
        ModelBundle.load(out)
        if (out / "metrics.json").is_file():
            return out
    except BundleError:
        pass
    run_training(
        TrainSpec(
            data=data_dir / "fashion" / "catalog.csv",
            out=out,
            dataset=DatasetOptions(with_images_only=True, limit=200, min_class_count=3),
            encoders=[("text.hashgram", {"buckets": 4096})],
            train=TrainConfig(epochs=3, batch_size=32, patience=3, lr=3e-3),
            cache_dir=cache / "features",
            overwrite=True,
        )
    )
    return out


@pytest.mark.usefixtures("kafka_jars")  # the guarantees section runs on Apache Kafka
def test_quick_run_writes_consistent_results_and_keeps_other_docs(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text(f"# Benchmarks\n\n{OTHER_SECTION}", encoding="utf-8")
    results_dir = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--model", str(tiny_bundle), "--quick"]
        + ["--out", "smoke", "--results-dir", str(results_dir), "--write-docs", str(docs)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((results_dir / "smoke.json").read_text())
    assert json.loads((results_dir / "latest.json").read_text()) == results
    for key in REQUIRED:
        assert isinstance(results[key], float) and results[key] > 0, key
    for key in ("machine", "versions", "command", "date"):
        assert results[key], key
    _consistent(results)

    page = docs.read_text(encoding="utf-8")
    assert OTHER_SECTION in page
    assert page.count(START) == 1 and page.count(END) == 1
    assert "![latency CDF](img/bench_latency_cdf.png)" in page
    assert (docs.parent / "img" / "bench_latency_cdf.png").stat().st_size > 0
    assert (docs.parent / "img" / "bench_throughput.png").stat().st_size > 0


def _consistent(r: dict[str, Any]) -> None:
    """The figures agree with each other and with the sections they come from."""
    assert r["e2e_over_model_only"] == pytest.approx(
        r["e2e_items_per_s"] / r["model_only_items_per_s"]
    )
    assert r["batched_over_naive"] == pytest.approx(r["e2e_items_per_s"] / r["naive_items_per_s"])
    max_batch = r["batcher"]["max_batch_size"]
    assert 1 <= r["batch_size_mean"] <= max_batch
    batches = r["e2e"]["batch_size"]
    assert sum(batches["buckets"].values()) == batches["count"] > 0
    assert r["p99_bound_ms"] > r["batcher"]["max_delay_ms"]
    assert r["e2e_cpu_ms_per_item"] == r["e2e"]["cpu_ms_per_item"] > 0
    assert r["e2e_cpu_over_model_only_cpu"] == pytest.approx(
        r["e2e_cpu_ms_per_item"] / r["model_only_cpu_ms_per_item"]
    )
    points = {(p["precision"], p["mode"], p["batch_size"]) for p in r["model_only"]}
    sizes = r["plan"]["batch_sizes"]
    expected = {
        (precision, mode, size)
        for precision in ("fp32", "int8")
        for mode in ("precomputed", "featurised")
        for size in sizes
    }
    assert points == expected
    assert [level["load"] for level in r["latency"]] == [0.25, 0.5, 0.75]
    for level in r["latency"]:
        assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert level["items"] == len(level["latencies_ms"])
    assert r["p99_ms_at_50pct"] == r["latency"][1]["p99_ms"]
    (own,) = r["accuracy"]
    assert set(own["accuracy"]) == {"masterCategory", "subCategory", "articleType"}
    assert all(0 <= a <= 1 for a in own["accuracy"].values())
    assert own["ms_per_item"] > 0
    eos, alo = r["guarantees"]["exactly_once"], r["guarantees"]["at_least_once"]
    assert r["guarantees"]["exactly_once_over_at_least_once"]["items_per_s"] == pytest.approx(
        eos["burst"]["items_per_s"] / alo["burst"]["items_per_s"]
    )
    assert 0 < eos["latency"]["p50_ms"] <= eos["latency"]["p99_ms"]


def test_docs_section_is_replaced_in_place(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold\n{END}\n\n{OTHER_SECTION}")
    update_docs(page, "new figures")
    text = page.read_text()
    assert "old" not in text and "new figures" in text
    assert text.index("intro") < text.index(START) < text.index(END) < text.index(OTHER_SECTION)


def test_docs_section_is_appended_to_a_page_without_one(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\n{OTHER_SECTION}")
    update_docs(page, "figures")
    text = page.read_text()
    assert text.startswith(f"# Benchmarks\n\n{OTHER_SECTION}")
    assert text.rstrip().endswith(f"{START}\nfigures\n{END}")
