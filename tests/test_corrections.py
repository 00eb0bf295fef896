"""Reviewers' corrections: the event, reading them back, and their labels winning in training
and evaluation (real fashion rows, a real small model)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import orjson
import pytest
from bundles import hashgram_bundle
from click.testing import CliRunner

from prodcat.cli.main import cli
from prodcat.core.events import EventError, load_schema, make_correction, validate
from prodcat.core.redaction import secret_values
from prodcat.core.settings import Settings
from prodcat.kafka.clients import ensure_topics, producer
from prodcat.kafka.corrections import (
    CorrectionsError,
    latest_labels,
    read_corrections_file,
    read_corrections_topic,
)
from prodcat.sources import read_source
from prodcat.training.datasets import DatasetOptions, load_dataset

EXAMPLE = load_schema("assignment")["examples"][0]
LIMIT = 200


def correction(product_id: str, labels: list[str], at: str = "2026-11-28T14:00:00.000Z") -> dict:
    assignment = copy.deepcopy(EXAMPLE) | {"product_id": product_id}
    value = make_correction(assignment, new_labels=labels, reviewer="alice", queue="audit")
    return value | {"decided_at": at}


def test_a_decision_is_accept_or_correct_and_always_valid() -> None:
    same = [step["label"] for step in EXAMPLE["category_path"]]
    accepted = make_correction(EXAMPLE, new_labels=same, reviewer="bob", queue="needs_review")
    assert accepted["decision"] == "accept" and accepted["old_path"] == EXAMPLE["category_path"]
    fixed = make_correction(EXAMPLE, new_labels=[*same[:2], "Tshirts"], reviewer="b", queue="feed")
    assert fixed["decision"] == "correct" and fixed["new_path"][2]["label"] == "Tshirts"
    assert fixed["correction_id"] != accepted["correction_id"]
    with pytest.raises(EventError, match="needs 3 labels"):
        make_correction(EXAMPLE, new_labels=same[:2], reviewer="b", queue="feed")
    with pytest.raises(EventError):
        validate("correction", fixed | {"queue": "whenever"})


def test_latest_decision_per_product_wins() -> None:
    early = correction("p1", ["Apparel", "Topwear", "Shirts"], "2026-11-28T10:00:00Z")
    late = correction("p1", ["Apparel", "Topwear", "Tshirts"], "2026-11-28T11:00:00+00:00")
    other = correction("p2", ["Footwear", "Shoes", "Heels"])
    labels = latest_labels([late, early, other])
    assert labels["p1"]["articleType"] == "Tshirts" and labels["p2"]["masterCategory"] == "Footwear"


def test_corrections_file_takes_corrections_or_tail_records(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    one, two = correction("p1", ["A", "B", "C"]), correction("p2", ["A", "B", "D"])
    path.write_bytes(orjson.dumps(one) + b"\n\n" + orjson.dumps({"offset": 3, "value": two}))
    assert read_corrections_file(path) == [one, two]
    path.write_bytes(orjson.dumps(one) + b"\n" + b'{"product_id": "p3"}\n')
    with pytest.raises(CorrectionsError, match="line 2"):
        read_corrections_file(path)


def test_review_tokens_are_secrets_but_reviewer_names_are_not() -> None:
    settings = Settings()
    settings.dashboard.review_tokens = ["alice:s3cret-token", "bare-token"]
    assert secret_values(settings) == {"s3cret-token", "bare-token"}
    assert settings.redacted()["dashboard"]["review_tokens"] == ["alice:***", "***"]


@pytest.mark.integration
def test_corrections_are_read_back_from_the_topic(embedded_broker: str) -> None:
    settings = Settings()
    settings.topics.corrections = "test.corrections"
    ensure_topics(settings, embedded_broker)
    sent = [correction(f"p{n}", ["A", "B", "C"]) for n in range(3)]
    client = producer(settings, embedded_broker)
    for value in sent:
        client.send(
            settings.topics.corrections, key=value["product_id"].encode(), value=orjson.dumps(value)
        )
    client.send(settings.topics.corrections, key=b"junk", value=b'{"not": "a correction"}')
    client.flush(30)
    client.close()
    found = read_corrections_topic(settings, embedded_broker, idle_s=2.0)
    assert sorted(c["correction_id"] for c in found) == sorted(c["correction_id"] for c in sent)


def test_a_correction_wins_over_the_catalogue_label(fashion: Path) -> None:
    rows = [r for r in read_source(fashion, "fashion") if r.event is not None][:LIMIT]
    target = rows[7]
    truth = target.labels["articleType"]
    fixed = {**target.labels, "articleType": "Jeans" if truth != "Jeans" else "Shirts"}
    corrections = {target.event["product_id"]: fixed, "not-in-the-file": dict(fixed)}
    data = load_dataset(fashion, "fashion", DatasetOptions(limit=LIMIT), corrections)
    (record,) = [r for r in data.records if r.product["product_id"] == target.event["product_id"]]
    classes = data.label_space.classes["articleType"]
    assert classes[record.labels[2]] in (fixed["articleType"], "other")
    report = data.report["corrections"]
    assert report["products"] == 2 and report["not_in_data"] == 1
    assert sum(report["used"].values()) == 1 and report["changed_labels"] == 1
    counts = data.class_counts("train")
    assert sum(counts["articleType"].values()) == len(data.splits["train"])
    assert data.describe()["class_counts"] == counts  # recorded in manifests: drift baseline


def test_evaluate_reports_accuracy_on_reviewed_products(
    data_dir: Path, fashion: Path, tmp_path: Path
) -> None:
    bundle = hashgram_bundle(data_dir, "rel-hashgram-a")
    rows = [r for r in read_source(fashion, "fashion") if r.event is not None][:5]
    path = tmp_path / "corrections.jsonl"
    lines = [
        correction(
            r.event["product_id"],
            [r.labels[lv] for lv in json.loads((bundle / "manifest.json").read_text())["levels"]],
        )
        for r in rows
    ]
    lines.append(correction("not-in-the-file", ["A", "B", "C"]))
    path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in lines))
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(bundle),
            "--data",
            str(fashion),
            "--limit",
            "40",
            "--corrections",
            str(path),
            "--out",
            str(tmp_path / "eval"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    reviewed = json.loads((tmp_path / "eval" / "metrics.json").read_text())["reviewed"]
    assert reviewed["rows"] == 5 and reviewed["not_in_data"] == 1
    assert set(reviewed["accuracy"]) == {"masterCategory", "subCategory", "articleType"}
    assert all(0 <= a <= 1 for a in reviewed["accuracy"].values())


@pytest.mark.training
def test_train_folds_corrections_into_the_labels(fashion: Path, tmp_path: Path) -> None:
    rows = [r for r in read_source(fashion, "fashion") if r.event is not None][:LIMIT]
    fixed = [rows[3].labels[lv] for lv in ("masterCategory", "subCategory", "articleType")]
    path = tmp_path / "corrections.jsonl"
    path.write_bytes(
        orjson.dumps(correction(rows[3].event["product_id"], [*fixed[:2], "Jeans"]))
        + b"\n"
        + orjson.dumps(correction("not-in-the-file", fixed))
        + b"\n"
    )
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(fashion),
            "--all-rows",
            "--limit",
            str(LIMIT),
            "--encoder",
            "text.hashgram",
            "--epochs",
            "1",
            "--no-eval",
            "--out",
            str(out),
            "--corrections",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 not among the rows read" in result.output
    report = json.loads((out / "manifest.json").read_text())["dataset"]["corrections"]
    assert report["products"] == 2 and sum(report["used"].values()) == 1
    assert report["not_in_data"] == 1
