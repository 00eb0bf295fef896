"""A bundle's answers over a list of products, by every path at once, with ONNX Runtime.

Evaluation and the cascade's calibration ask the same bundle several questions about the
same rows: the full answer, the answer from the title alone (the cascade's first stage, the
text-only ablation), from the photo alone. With a split bundle (format 2) each encoder graph
runs once per row that has its modality and the head answers every question from those
embeddings; a format-1 bundle runs its one graph once per question with the other
modalities fed as missing. Products are featurized and run in chunks, so memory stays
bounded whatever the number of rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from prodcat.contract.pipeline import Pipeline
from prodcat.model.bundle import ModelBundle
from prodcat.model.cascade import Cascade
from prodcat.model.decoding import path_index
from prodcat.model.graphs import SplitGraphs, WholeGraph

FULL = "fused"
CASCADE = "cascade"


@dataclass
class PathProbs:
    """Probabilities per level of each named path, and what each row had."""

    probs: dict[str, list[np.ndarray]]  # path name -> per level (rows, classes)
    present: dict[str, np.ndarray]  # encoder slug -> bool per row
    seconds: dict[str, float] = field(default_factory=dict)  # featurize, graphs, cascade
    runs: dict[str, int] = field(default_factory=dict)  # rows each graph ran on
    decided: np.ndarray | None = None  # with a cascade: rows its first stage decided

    def __getitem__(self, path: str) -> list[np.ndarray]:
        return self.probs[path]


def run_paths(
    bundle: ModelBundle,
    graphs: WholeGraph | SplitGraphs,
    products: Sequence[dict[str, Any]],
    paths: Mapping[str, Sequence[str]],
    batch_size: int = 32,
    threads: int = 2,
    desc: str = "evaluate",
    cascade: Cascade | None = None,
) -> PathProbs:
    """``paths``: name -> the encoder slugs that path uses (``fused`` = all is always run).

    With ``cascade`` (split bundles), each batch is also run through the cascade as the
    worker runs it (``cascade`` path, its own timing, and which rows it decided by text).
    """
    pipeline = bundle.pipeline
    taxonomy = path_index(
        bundle.manifest["taxonomy"]["paths"],
        [bundle.manifest["labels"][lv] for lv in bundle.levels],
    )
    decided: list[np.ndarray] = []
    wanted = {FULL: list(pipeline.slugs), **{k: list(v) for k, v in paths.items()}}
    parts: dict[str, list[list[np.ndarray]]] = {name: [] for name in wanted}
    if cascade is not None:
        parts[CASCADE] = []
    present: dict[str, list[np.ndarray]] = {slug: [] for slug in pipeline.slugs}
    seconds: dict[str, float] = {}
    runs: dict[str, int] = {}
    n = len(products)
    with ThreadPoolExecutor(threads) as pool, tqdm(total=n, desc=desc, unit="item") as bar:
        for start in range(0, n, batch_size):
            chunk = products[start : start + batch_size]
            began = time.perf_counter()
            items, _ = pipeline.featurize_many(chunk, pool)
            batch = pipeline.collate(items)
            _add(seconds, "featurize", time.perf_counter() - began)
            for slug, mask_name in pipeline.mask_names().items():
                present[slug].append(batch[mask_name] > 0)
            clock = (seconds, runs)
            if isinstance(graphs, SplitGraphs):
                answers = _split_answers(graphs, batch, wanted, clock)
            else:
                answers = _whole_answers(graphs, pipeline, batch, wanted, clock)
            if cascade is not None and isinstance(graphs, SplitGraphs):
                began = time.perf_counter()
                probs, stopped = graphs.cascade_probs(batch, cascade, taxonomy)
                _add(seconds, CASCADE, time.perf_counter() - began)
                answers[CASCADE] = probs
                decided.append(stopped)
            for name, probs in answers.items():
                parts[name].append(probs)
            bar.update(len(chunk))
    return PathProbs(
        {
            name: [np.concatenate(level) for level in zip(*p, strict=True)]
            for name, p in parts.items()
        },
        {slug: np.concatenate(p) for slug, p in present.items()},
        seconds,
        runs,
        np.concatenate(decided) if decided else None,
    )


Clock = tuple[dict[str, float], dict[str, int]]  # seconds and rows run, by graph


def _split_answers(
    graphs: SplitGraphs, batch: dict[str, np.ndarray], wanted: Mapping[str, list[str]], clock: Clock
) -> dict[str, list[np.ndarray]]:
    seconds, runs = clock
    embeddings, masks = {}, {}
    for slug in graphs.slugs:
        began = time.perf_counter()
        one, mask = graphs.embed_present(batch, [slug])
        embeddings[slug], masks[slug] = one[slug], mask[slug]
        _add(seconds, slug, time.perf_counter() - began)
        _add(runs, slug, int(np.count_nonzero(masks[slug])))
    answers = {}
    for name, slugs in wanted.items():
        began = time.perf_counter()
        answers[name] = graphs.head_probs(embeddings, {s: masks[s] for s in slugs})
        _add(seconds, f"head:{name}", time.perf_counter() - began)
        _add(runs, f"head:{name}", len(masks[graphs.slugs[0]]))
    return answers


def _whole_answers(
    graphs: WholeGraph,
    pipeline: Pipeline,
    batch: dict[str, np.ndarray],
    wanted: Mapping[str, list[str]],
    clock: Clock,
) -> dict[str, list[np.ndarray]]:
    seconds, runs = clock
    answers = {}
    rows = len(next(iter(batch.values())))
    for name, kept in wanted.items():
        feeds = dict(batch)
        for slug in pipeline.slugs:
            if slug not in kept:
                for input_name, blank in pipeline.missing(slug).items():
                    feeds[input_name] = np.broadcast_to(blank, (rows, *blank.shape)).copy()
        began = time.perf_counter()
        answers[name] = graphs.probs(feeds)
        _add(seconds, f"model:{name}", time.perf_counter() - began)
        _add(runs, f"model:{name}", rows)
    return answers


def _add(totals: dict[str, Any], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0) + value
