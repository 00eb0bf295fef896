"""Labelled data sets for training: records, label spaces, grouped splits, rare classes.

Rows come from :func:`prodcat.sources.read_source` (the same reader ``prodcat publish``
uses), so training sees exactly the product events the worker will see. Splits are grouped
(fashion: normalised title, pricerunner: cluster id, otherwise product id) because the same
product under another id or colour would otherwise leak from train into test and inflate
every metric. Group assignment hashes ``seed:group``, so it is reproducible, independent of
row order, and stable when rows are added.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prodcat.sources import detect_format, read_source, taxonomy_levels

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
OTHER = "other"
RareAction = Literal["merge", "drop"]
GROUPING = {
    "fashion": "normalised title",
    "pricerunner": "cluster_id",
    "lianshang_zh": "normalised title",
    "cdiscount_fr": "normalised title",
}


@dataclass
class Record:
    """One labelled product: the event, its label index per level and its split group."""

    product: dict[str, Any]
    labels: list[int]
    group: str
    line: int


@dataclass
class LabelSpace:
    """Class names per level and the category paths seen in the data (the taxonomy)."""

    levels: list[str]
    classes: dict[str, list[str]]
    paths: list[list[str]]

    def index(self, level: str, label: str) -> int:
        """The class index of ``label``, mapping unseen labels to ``other`` when it exists."""
        classes = self.classes[level]
        try:
            return classes.index(label)
        except ValueError:
            return classes.index(OTHER) if OTHER in classes else -1

    def sizes(self) -> list[int]:
        return [len(self.classes[level]) for level in self.levels]

    def to_json(self) -> dict[str, Any]:
        return {"levels": self.levels, "classes": self.classes, "paths": self.paths}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelSpace:
        return cls(list(data["levels"]), dict(data["classes"]), [list(p) for p in data["paths"]])


@dataclass
class DatasetOptions:
    """What to load and how to split; all of it goes into the manifest."""

    levels: list[str] | None = None
    with_images_only: bool = False
    limit: int | None = None
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    min_class_count: int = 5
    rare: RareAction = "merge"


@dataclass
class Dataset:
    path: Path
    fmt: str
    options: DatasetOptions
    records: list[Record]
    label_space: LabelSpace
    splits: dict[str, list[int]]
    report: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Record]:
        return [self.records[i] for i in self.splits[name]]

    def identity(self) -> dict[str, Any]:
        """What makes the loaded rows what they are (file state + filters): a cache key part."""
        stat = self.path.stat()
        return {
            "path": str(self.path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "fmt": self.fmt,
            "with_images_only": self.options.with_images_only,
            "limit": self.options.limit,
            "rows": [r.line for r in self.records],
        }

    def class_counts(self, split: str) -> dict[str, dict[str, int]]:
        """How many rows of ``split`` carry each label, per level (the dashboard's drift base)."""
        space = self.label_space
        counts = {level: Counter[str]() for level in space.levels}
        for i in self.splits[split]:
            for level, index in zip(space.levels, self.records[i].labels, strict=True):
                counts[level][space.classes[level][index]] += 1
        return {level: dict(sorted(c.items())) for level, c in counts.items()}

    def describe(self) -> dict[str, Any]:
        """The data set and split description stored in the manifest."""
        return {
            "path": str(self.path.resolve()),
            "format": self.fmt,
            "levels": self.label_space.levels,
            "with_images_only": self.options.with_images_only,
            "limit": self.options.limit,
            "rows": len(self.records),
            "split": {
                "seed": self.options.seed,
                "fractions": list(self.options.fractions),
                "grouping": GROUPING.get(self.fmt, "product_id"),
                "counts": {name: len(idx) for name, idx in self.splits.items()},
                "groups": {
                    name: len({self.records[i].group for i in idx})
                    for name, idx in self.splits.items()
                },
            },
            "class_counts": self.class_counts("train"),
            **self.report,
        }


def options_from_description(info: dict[str, Any]) -> DatasetOptions:
    """The options that reproduce a bundle's rows and split, from its manifest ``dataset``."""
    return DatasetOptions(
        levels=info["levels"],
        with_images_only=info["with_images_only"],
        limit=info["limit"],
        seed=info["split"]["seed"],
        fractions=tuple(info["split"]["fractions"]),
        min_class_count=info["rare_classes"]["threshold"],
        rare=info["rare_classes"]["action"],
    )


def load_dataset(
    path: str | Path,
    fmt: str | None = None,
    options: DatasetOptions | None = None,
    corrections: Mapping[str, Mapping[str, str]] | None = None,
) -> Dataset:
    """Read a data file, build the label space and the grouped splits.

    ``corrections`` maps product ids to reviewers' labels per level (see
    ``prodcat.training.corrections``): they win over the file's labels. A corrected product
    keeps its group's split, so corrections in train teach the model and those in val/test
    correct what it is scored against; one whose product is not among the rows read (not in
    the file, or filtered out by ``limit``/``with_images_only``) cannot be used (it carries
    no title or photo) and is counted in the report as ``not_in_data``.
    """
    options = options or DatasetOptions()
    path = Path(path)
    fmt = fmt or detect_format(path)
    known = taxonomy_levels(fmt)
    levels = options.levels or known
    unknown = sorted(set(levels) - set(known)) if known else []
    if unknown:
        raise ValueError(
            f"unknown level(s) {', '.join(unknown)} for {fmt}; known: {', '.join(known)}"
        )
    corrections = corrections or {}
    rows, skipped, levels, changed = _read_rows(path, fmt, levels, options, corrections)
    if not rows:
        raise ValueError(f"{path}: no usable labelled rows ({skipped})")
    rows, rare = _handle_rare(rows, levels, options)
    label_space = _label_space(rows, levels)
    records = [
        Record(
            product=event,
            labels=[label_space.index(level, labels[level]) for level in levels],
            group=group,
            line=line,
        )
        for line, event, labels, group in rows
    ]
    splits = split_groups([r.group for r in records], options.seed, options.fractions)
    report: dict[str, Any] = {"skipped": skipped, "rare_classes": rare}
    if corrections:
        report["corrections"] = _corrections_report(records, splits, corrections, changed)
    return Dataset(path, fmt, options, records, label_space, splits, report)


def _corrections_report(
    records: list[Record],
    splits: dict[str, list[int]],
    corrections: Mapping[str, Mapping[str, str]],
    changed: int,
) -> dict[str, Any]:
    """How many corrected products were used, in which split, and how many could not be."""
    used = {
        name: sum(1 for i in idx if records[i].product["product_id"] in corrections)
        for name, idx in splits.items()
    }
    return {
        "products": len(corrections),
        "used": used,
        "changed_labels": changed,
        "not_in_data": len(corrections) - sum(used.values()),
    }


Row = tuple[int, dict[str, Any], dict[str, str], str]


def _read_rows(
    path: Path,
    fmt: str,
    levels: list[str],
    options: DatasetOptions,
    corrections: Mapping[str, Mapping[str, str]],
) -> tuple[list[Row], dict[str, int], list[str], int]:
    """Usable rows, why the others were skipped (counted, never silently dropped), levels.

    A JSONL file names its levels per row: without ``levels`` the first labelled row's
    level names are used. A correction replaces the row's labels (and may label a row the
    file left unlabelled); the last value counts the rows whose labels one changed.
    """
    rows: list[Row] = []
    skipped: Counter[str] = Counter()
    changed = 0
    for row in read_source(path, fmt):
        if row.error or row.event is None:
            skipped["invalid"] += 1
            continue
        if not levels and row.labels:
            levels = list(row.labels)
        if options.with_images_only and not row.event.get("image"):
            skipped["no_image"] += 1
            continue
        labels = row.labels
        fixed = corrections.get(str(row.event.get("product_id")))
        if fixed:
            labels = {**row.labels, **fixed}
            if any(labels.get(lv) != row.labels.get(lv) for lv in levels):
                changed += 1
        if not levels or any(not labels.get(level) for level in levels):
            skipped["unlabelled"] += 1
            continue
        group = row.group or str(row.event.get("product_id") or row.line)
        rows.append((row.line, row.event, {lv: labels[lv] for lv in levels}, group))
        if options.limit and len(rows) >= options.limit:
            break
    return rows, dict(skipped), levels, changed


def _handle_rare(
    rows: list[Row], levels: list[str], options: DatasetOptions
) -> tuple[list[Row], dict[str, Any]]:
    """Merge classes rarer than the threshold into ``other`` per level, or drop their rows."""
    counts = {level: Counter(labels[level] for _, _, labels, _ in rows) for level in levels}
    rare = {
        level: {
            label: n for label, n in sorted(counts[level].items()) if n < options.min_class_count
        }
        for level in levels
    }
    report = {
        "threshold": options.min_class_count,
        "action": options.rare,
        "classes": {level: found for level, found in rare.items() if found},
    }
    if options.rare == "drop":
        kept = [r for r in rows if not any(r[2][lv] in rare[lv] for lv in levels)]
        report["rows_dropped"] = len(rows) - len(kept)
        return kept, report
    merged = [
        (line, event, {lv: OTHER if labels[lv] in rare[lv] else labels[lv] for lv in levels}, grp)
        for line, event, labels, grp in rows
    ]
    report["rows_merged"] = sum(
        1 for _, _, labels, _ in rows if any(labels[lv] in rare[lv] for lv in levels)
    )
    return merged, report


def _label_space(rows: list[Row], levels: list[str]) -> LabelSpace:
    classes = {level: sorted({labels[level] for _, _, labels, _ in rows}) for level in levels}
    paths = sorted({tuple(labels[level] for level in levels) for _, _, labels, _ in rows})
    return LabelSpace(levels, classes, [list(p) for p in paths])


def split_groups(
    groups: list[str], seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> dict[str, list[int]]:
    """Row indices per split; every row of a group lands in the same split."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    bounds = (fractions[0], fractions[0] + fractions[1])
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i, group in enumerate(groups):
        u = _unit(f"{seed}:{group}")
        name = "train" if u < bounds[0] else "val" if u < bounds[1] else "test"
        splits[name].append(i)
    return splits


def _unit(key: str) -> float:
    """A uniform number in [0, 1) derived from ``key``: the same key always gives the same."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
