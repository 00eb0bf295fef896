"""The benchmark harness in --quick mode on a small real bundle: shape of what it writes.

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
from bundles import photo_bundle
from repo import REPO_ROOT

from bench.report import END, START, update_docs

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
    "cascade_e2e_items_per_s",
    "fused_e2e_items_per_s",
    "cascade_over_fused_e2e",
)
OTHER_SECTION = "## Training quality\n\nHand-written table the bench must keep.\n"


@pytest.fixture(scope="module")
def small_bundle(data_dir: Path) -> Path:
    """hashgram titles + EfficientNet-Lite0 photos with a cascade, evaluated (cached)."""
    return photo_bundle(data_dir)


@pytest.mark.usefixtures("kafka_jars")  # the guarantees section runs on Apache Kafka
def test_quick_run_writes_consistent_results_and_keeps_other_docs(
    small_bundle: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text(f"# Benchmarks\n\n{OTHER_SECTION}", encoding="utf-8")
    results_dir = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--model", str(small_bundle), "--quick"]
        + ["--out", "smoke", "--results-dir", str(results_dir), "--write-docs", str(docs)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
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
    assert "![accuracy against speed](img/bench_accuracy_speed.png)" in page
    for plot in ("bench_latency_cdf", "bench_throughput", "bench_accuracy_speed"):
        assert (docs.parent / "img" / f"{plot}.png").stat().st_size > 0, plot


def _consistent(r: dict[str, Any]) -> None:
    """The figures agree with each other and with the sections they come from."""
    assert r["e2e_over_model_only"] == pytest.approx(
        r["e2e_items_per_s"] / r["model_only_items_per_s"]
    )
    assert r["batched_over_naive"] == pytest.approx(r["e2e_items_per_s"] / r["naive_items_per_s"])
    assert r["cascade_e2e_items_per_s"] == r["e2e_items_per_s"] == r["e2e"]["items_per_s"]
    assert r["fused_e2e_items_per_s"] == r["e2e_fused"]["items_per_s"]
    assert r["cascade_over_fused_e2e"] == pytest.approx(
        r["cascade_e2e_items_per_s"] / r["fused_e2e_items_per_s"]
    )
    decided = r["e2e"]["decided_by"]
    assert sum(decided.values()) == r["e2e"]["items"]  # one decision per product
    assert r["cascade_text_share"] == pytest.approx(decided["text"] / r["e2e"]["items"])
    assert r["e2e_fused"]["decided_by"] == {"text": 0, "full": r["e2e_fused"]["items"]}
    assert 0 <= r["cascade_text_share"] <= 1 and -1 <= r["cascade_accuracy_drop"] <= 1
    max_batch = r["batcher"]["max_batch_size"]
    assert 1 <= r["batch_size_mean"] <= max_batch
    graphs = r["e2e"]["graphs"]
    assert set(graphs) == {"text_hashgram", "image_efficientnet_lite0", "head"}
    for figures in graphs.values():
        batches = figures["batch_size"]
        assert sum(batches["buckets"].values()) == batches["count"]
    fused_graphs = r["e2e_fused"]["graphs"]
    assert fused_graphs["head"]["batch_size"]["count"] > 0
    assert r["p99_bound_ms"] > r["batcher"]["max_delay_ms"]
    assert r["e2e_cpu_ms_per_item"] == r["e2e"]["cpu_ms_per_item"] > 0
    assert r["e2e_cpu_over_model_only_cpu"] == pytest.approx(
        r["e2e_cpu_ms_per_item"] / r["model_only_cpu_ms_per_item"]
    )
    points = {(p["path"], p["mode"], p["batch_size"]) for p in r["model_only"]}
    expected = {
        (path, mode, size)
        for path in ("fused", "cascade", "text")
        for mode in ("precomputed", "featurised")
        for size in r["plan"]["batch_sizes"]
    }
    assert points == expected
    assert {p["precision"] for p in r["model_only"]} == {r["model"]["precision"]} == {"fp32"}
    assert [level["load"] for level in r["latency"]] == [0.25, 0.5, 0.75]
    for level in r["latency"]:
        assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert level["items"] == len(level["latencies_ms"])
    assert r["p99_ms_at_50pct"] == r["latency"][1]["p99_ms"]
    assert [row["path"] for row in r["accuracy"]] == ["fused", "cascade", "text"]
    for row in r["accuracy"]:
        assert set(row["accuracy"]) == {"masterCategory", "subCategory", "articleType"}
        assert all(0 <= a <= 1 for a in row["accuracy"].values())
        assert row["ms_per_item"] > 0
    image = r["image_path"]
    decode = image["decode"]
    assert decode["draft_size"] == 224 and decode["enlarged_size"] == [1792, 1792]
    assert decode["mean_input_diff"] < 0.05
    assert image["int8"]["cosine_mean"] > 0.9
    assert image["cache"]["on"]["hit_ratio"] == pytest.approx(0.5)
    assert image["cache"]["off"]["hit_ratio"] is None
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


def test_gpu_staging_converts_the_graphs_to_fp16(small_bundle: Path, tmp_path: Path) -> None:
    """bench/gpu.sh prepare: float16 graphs, re-fingerprinted, answering like the original."""
    import numpy as np

    from bench.data import photo_products
    from bench.gpu_stage import stage
    from prodcat.model.bundle import ModelBundle
    from prodcat.model.graphs import open_graphs

    staged = stage(small_bundle, tmp_path / "model")
    original = ModelBundle.load(small_bundle)
    assert staged.precision == "fp16" and staged.fingerprint != original.fingerprint
    assert staged.manifest["training"]["fp16_from"] == original.fingerprint
    assert not (tmp_path / "model" / "metrics.json").exists()  # the original's figures
    data = Path(original.manifest["dataset"]["path"])
    products = photo_products(data, 32, original)
    answers = [
        open_graphs(b).probs(b.collate([b.featurize(dict(p)) for p in products]))
        for b in (original, staged)
    ]
    for fp32, fp16 in zip(*answers, strict=True):
        assert np.mean(fp32.argmax(axis=1) == fp16.argmax(axis=1)) >= 0.95
        assert np.max(np.abs(fp32 - fp16)) < 0.05
    sizes = [
        sum(f.stat().st_size for f in root.rglob("*.onnx"))
        for root in (small_bundle, tmp_path / "model")
    ]
    assert sizes[1] < sizes[0] * 0.6
