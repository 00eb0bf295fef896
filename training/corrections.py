"""Reviewers' corrections in training and evaluation: their labels win over the file's.

The corrections come from ``prodcat.kafka.corrections`` (the topic or a JSONL file) as
product id -> {level: label}. :func:`corrected_rows` applies them to a data file's rows
(``load_dataset`` does the same while reading); :func:`reviewed_eval_data` selects only the
reviewed products, for ``prodcat evaluate --corrections``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from prodcat.model.bundle import ModelBundle
from prodcat.sources import detect_format, read_source
from prodcat.sources.reader import SourceRow
from prodcat.training.datasets import OTHER
from prodcat.training.evaluate import EvalData

Corrections = Mapping[str, Mapping[str, str]]


def corrected_rows(rows: Iterable[SourceRow], corrections: Corrections) -> Iterator[SourceRow]:
    """The rows with each corrected product's labels replaced by the reviewer's."""
    for row in rows:
        if row.event is not None and corrections:
            fixed = corrections.get(str(row.event.get("product_id")))
            if fixed:
                row.labels = {**row.labels, **fixed}
        yield row


def reviewed_eval_data(
    bundle: ModelBundle, path: Path, corrections: Corrections
) -> tuple[EvalData | None, int]:
    """Every reviewed product of ``path`` with the reviewer's labels (whatever its split),
    and how many corrected products the file does not hold."""
    levels = bundle.levels
    lookup = [{label: i for i, label in enumerate(bundle.manifest["labels"][lv])} for lv in levels]
    rows = [
        row
        for row in corrected_rows(read_source(path, detect_format(path)), corrections)
        if row.event is not None
        and not row.error
        and str(row.event.get("product_id")) in corrections
        and all(row.labels.get(lv) for lv in levels)
    ]
    missing = len(corrections) - len({str(row.event["product_id"]) for row in rows if row.event})
    if not rows:
        return None, missing
    labels = [
        [
            table.get(row.labels[lv], table.get(OTHER, -1))
            for table, lv in zip(lookup, levels, strict=True)
        ]
        for row in rows
    ]
    description = {
        "path": str(Path(path).resolve()),
        "format": detect_format(path),
        "split": "reviewed",
        "with_images_only": False,
        "rows": len(rows),
    }
    products = [row.event for row in rows if row.event is not None]
    return EvalData(products, np.asarray(labels, dtype=np.int64), description), missing
