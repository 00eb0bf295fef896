"""Chinese and French catalogues through the stream: published, classified, none dead-lettered.

Each catalogue's recipe (``prodcat train --dataset NAME``) is trained on its first rows by
the project's own training code and cached; a worker serves each bundle on its own topics.
The products published are test-split rows that training never saw, plus titles that
stress the text path: full-width forms, emoji, Chinese and Latin in one title, a title of
emoji alone. Every one must come back as an assignment carrying the event's locale.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import cached_bundle
from harness import publish, read_topic, topic_settings, worker_env

from prodcat.contract.components import fingerprint_of
from prodcat.kafka.clients import ensure_topics
from prodcat.model.bundle import ModelBundle
from prodcat.training.dataset_recipes import RECIPES, training_spec
from prodcat.training.datasets import load_dataset, options_from_description
from prodcat.worker.child import PRODCAT, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.training]

TRAIN_ROWS = 3000
PRODUCTS = 60
TIMEOUT_S = 300.0  # upper bound only
TRICKY_TITLES = [
    "ｉＰｈｏｎｅ１５　手机壳　全包防摔",
    "🎉新款😀女士纯棉短袖T恤🔥",
    "Apple苹果iPhone 15 Pro Max 256GB 手机 — coque téléphone",
    "Chaussures de randonnée été taille 42 🥾",
    "😀🎉🔥",
]
FILES = {"lianshang_zh": "lianshang_zh/products.csv", "cdiscount_fr": "cdiscount_fr/products.csv"}


def recipe_bundle(data_dir: Path, dataset: str) -> Path:
    """The data set's recipe trained on its first TRAIN_ROWS rows (cached)."""

    def spec(out: Path, features: Path) -> Any:
        made = training_spec(RECIPES[dataset], data_dir / FILES[dataset], out, features)
        made.dataset.limit = TRAIN_ROWS
        made.train.epochs = 4
        return made

    recipe = fingerprint_of(RECIPES[dataset].to_json())  # a changed recipe is retrained
    return cached_bundle(f"{dataset}-recipe-{TRAIN_ROWS}-{recipe}", spec)


def unseen(bundle: Path, count: int) -> list[dict[str, Any]]:
    """Test-split events of the bundle's own data set (its training never saw them)."""
    info = ModelBundle.load(bundle).manifest["dataset"]
    data = load_dataset(info["path"], info["format"], options_from_description(info))
    return [data.records[i].product for i in data.splits["test"][:count]]


@pytest.mark.parametrize("dataset", sorted(FILES))
def test_events_in_any_script_are_all_assigned_with_their_locale(
    dataset: str, data_dir: Path, embedded_broker: str, tmp_path: Path
) -> None:
    bundle = recipe_bundle(data_dir, dataset)
    events = unseen(bundle, PRODUCTS)
    locale = events[0]["locale"]
    events += [
        {**events[0], "product_id": f"tricky-{i}", "event_id": f"tricky-{i}", "title": title}
        for i, title in enumerate(TRICKY_TITLES)
    ]
    settings, topics = topic_settings(f"lang-{dataset}")
    ensure_topics(settings, embedded_broker)
    worker = WorkerProcess(
        bundle, embedded_broker, tmp_path / "worker.log", worker_env(tmp_path, topics, dataset)
    ).start()
    try:
        worker.wait_ready()
        publish(
            settings,
            embedded_broker,
            [
                (e["product_id"].encode(), orjson.dumps(e), f"00-{i + 1:032x}-00f067aa0ba902b7-01")
                for i, e in enumerate(events)
            ],
        )
        assignments = read_topic(
            settings, embedded_broker, topics["categories"], len(events), TIMEOUT_S
        )
        letters = read_topic(settings, embedded_broker, topics["dlq"], 1, 3)
    finally:
        code = worker.stop(signal.SIGTERM)
    assert code == 0, worker.tail()
    assert letters == [], [d["value"]["error"] for d in letters]
    by_product = {a["value"]["product_id"]: a["value"] for a in assignments}
    assert set(by_product) == {e["product_id"] for e in events}
    assert {a["locale"] for a in by_product.values()} == {locale}
    levels = ModelBundle.load(bundle).manifest["levels"]
    assert [c["level"] for c in by_product["tricky-0"]["category_path"]] == levels


def test_demo_classifies_chinese_products(data_dir: Path, tmp_path: Path) -> None:
    """`prodcat demo --dataset lianshang_zh` with its model present: assigned, summarised."""
    bundle = recipe_bundle(data_dir, "lianshang_zh")
    env = {**os.environ, "PRODCAT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PRODCAT_BROKER", None)
    command = [PRODCAT, "demo", "--dataset", "lianshang_zh", "--model", str(bundle)]
    done = subprocess.run(
        [*command, "--products", "30", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["assigned"] == 30 and summary["dead_letters"] == 3
    assert summary["accuracy"]["category"] >= 0.6


@pytest.mark.parametrize("dataset", sorted(FILES))
def test_publish_sends_the_files_as_published(
    dataset: str, data_dir: Path, embedded_broker: str
) -> None:
    """`prodcat publish FILE` on each layout: UTF-8 titles byte for byte, locale set."""
    from click.testing import CliRunner

    from prodcat.cli.main import cli
    from prodcat.sources import read_source

    settings, topics = topic_settings(f"publish-{dataset}")
    ensure_topics(settings, embedded_broker)
    path = data_dir / FILES[dataset]
    result = CliRunner().invoke(
        cli,
        ["publish", str(path), "--limit", "20", "--topic", topics["products"], "--json"],
        env={"PRODCAT_BROKER": embedded_broker},
    )
    assert result.exit_code == 0, result.output
    sent = read_topic(settings, embedded_broker, topics["products"], 20, 60)
    expected = {r.event["product_id"]: r.event for r in read_source(path, limit=20) if r.event}
    assert len(sent) == 20
    for message in sent:
        event = message["value"]
        assert event["title"] == expected[event["product_id"]]["title"]
        assert event["locale"] == expected[event["product_id"]]["locale"]
