"""A bundle's graphs on ONNX Runtime, driven batch by batch (no asyncio, no torch).

What evaluation, calibration, the naive baseline, the benchmarks and the reload probe run:
:class:`WholeGraph` for a format-1 bundle, :class:`SplitGraphs` for format 2. Both answer
``probs(batch)`` (featurizer inputs in, probabilities per level out, by the full path);
SplitGraphs also exposes its parts, so a caller can run each encoder only on the rows that
have its modality and ask the head several questions (text only, everything) about the
same embeddings. The worker batches the same sessions its own way
(``prodcat.worker.serving``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from prodcat.contract.components import MASK_INPUT, Encoder
from prodcat.contract.pipeline import input_name
from prodcat.model.bundle import ModelBundle, embedding_name
from prodcat.model.cascade import Cascade, chosen_scores
from prodcat.model.decoding import best_paths
from prodcat.model.inference import OnnxSession, create_session

Batch = Mapping[str, np.ndarray]


class WholeGraph:
    """Format 1: one session from featurizer inputs to probabilities."""

    split = False

    def __init__(
        self,
        bundle: ModelBundle,
        providers: str = "cpu",
        threads: int = 2,
        graph: Path | None = None,
    ) -> None:
        """``graph``: another file of the same graph (a quantised copy), else the bundle's."""
        self.bundle = bundle
        self.session = create_session(graph or bundle.graph_path("model"), providers, threads)

    @property
    def providers(self) -> list[str]:
        return self.session.providers

    def probs(self, batch: Batch) -> list[np.ndarray]:
        outputs = self.session.run(batch)
        return [outputs[name] for name in self.bundle.output_names]


def trim_feeds(encoder: Encoder, slug: str, feeds: Batch) -> dict[str, np.ndarray]:
    """An encoder graph's feeds (``<slug>__<input>``) cut by the encoder's ``trim``."""
    prefix = input_name(slug, "")
    inner = encoder.trim({name.removeprefix(prefix): array for name, array in feeds.items()})
    return {prefix + name: array for name, array in inner.items()}


class SplitGraphs:
    """Format 2: a session per encoder graph and one for the head graph."""

    split = True

    def __init__(self, bundle: ModelBundle, providers: str = "cpu", threads: int = 2) -> None:
        self.bundle = bundle
        self.slugs = list(bundle.pipeline.slugs)
        entries = bundle.manifest["graphs"]["encoders"]
        self.dims = {slug: int(entries[slug]["dim"]) for slug in self.slugs}
        self._trims = {
            slug: encoder
            for slug, encoder in zip(self.slugs, bundle.pipeline.encoders, strict=True)
            if entries[slug].get("sequence_inputs")
        }
        self.encoders: dict[str, OnnxSession] = {
            slug: create_session(bundle.graph_path(slug), providers, threads) for slug in self.slugs
        }
        self.head = create_session(bundle.graph_path("head"), providers, threads)

    @property
    def providers(self) -> list[str]:
        return self.head.providers

    def sessions(self) -> dict[str, OnnxSession]:
        """Graph name (encoder slug or ``head``) -> session."""
        return {**self.encoders, "head": self.head}

    def encoder_feeds(self, slug: str, batch: Batch) -> dict[str, np.ndarray]:
        """``slug``'s graph inputs from a batch, cut to their longest sequence if it has any."""
        feeds = {name: batch[name] for name in self.encoders[slug].input_names}
        encoder = self._trims.get(slug)
        return trim_feeds(encoder, slug, feeds) if encoder is not None else feeds

    def embed(self, slug: str, batch: Batch) -> np.ndarray:
        """``slug``'s embeddings of every row of ``batch`` (its graph inputs by name)."""
        return self.encoders[slug].run(self.encoder_feeds(slug, batch))[embedding_name(slug)]

    def embed_present(
        self, batch: Batch, slugs: Sequence[str] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(embeddings, masks) per encoder, each graph run only on rows with its modality.

        Rows without it get zeros, which the head ignores (their mask is 0).
        """
        embeddings, masks = {}, {}
        for slug in slugs or self.slugs:
            mask = np.asarray(batch[input_name(slug, MASK_INPUT)], dtype=np.float32)
            rows = np.flatnonzero(mask > 0)
            out = np.zeros((len(mask), self.dims[slug]), dtype=np.float32)
            if len(rows):
                graph_inputs = self.encoders[slug].input_names
                out[rows] = self.embed(slug, {name: batch[name][rows] for name in graph_inputs})
            embeddings[slug], masks[slug] = out, mask
        return embeddings, masks

    def head_probs(
        self, embeddings: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The head's probabilities per level; encoders left out of ``masks`` count as missing."""
        rows = len(next(iter(embeddings.values())))
        feeds: dict[str, np.ndarray] = {}
        for slug in self.slugs:
            feeds[embedding_name(slug)] = embeddings.get(slug, _zeros(rows, self.dims[slug]))
            feeds[input_name(slug, MASK_INPUT)] = masks.get(slug, np.zeros(rows, np.float32))
        outputs = self.head.run(feeds)
        return [outputs[name] for name in self.bundle.output_names]

    def probs(self, batch: Batch) -> list[np.ndarray]:
        """The full path: every present modality's encoder, then the head."""
        return self.head_probs(*self.embed_present(batch))

    def first_stage_probs(self, batch: Batch, cascade: Cascade) -> list[np.ndarray]:
        """The cascade's first stage for every row: its encoders, the later ones masked."""
        return self.head_probs(*self.embed_present(batch, cascade.first))

    def cascade_probs(
        self, batch: Batch, cascade: Cascade, paths: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """The cascade on a batch, as the worker runs it per product: (probs, decided by text).

        The first stage answers every row; the later encoders and the head run again only
        for the rows it does not decide. ``paths``: the taxonomy's path index.
        """
        embeddings, masks = self.embed_present(batch, cascade.first)
        probs = self.head_probs(embeddings, masks)
        later = cascade.later(self.slugs)
        present = {slug: np.asarray(batch[input_name(slug, MASK_INPUT)]) > 0 for slug in self.slugs}
        confident = cascade.stops(chosen_scores(probs, paths, best_paths(probs, paths)))
        decided = cascade.applies(present) & confident
        rows = np.flatnonzero(~decided & np.any([present[s] for s in later], axis=0))
        if len(rows):
            sub = {name: np.asarray(values)[rows] for name, values in batch.items()}
            more, more_masks = self.embed_present(sub, later)
            rest = {s: embeddings[s][rows] for s in cascade.first}
            rest_masks = {s: masks[s][rows] for s in cascade.first}
            answered = self.head_probs(rest | more, rest_masks | more_masks)
            for level, part in zip(probs, answered, strict=True):
                level[rows] = part
        return probs, decided


def _zeros(rows: int, dim: int) -> np.ndarray:
    return np.zeros((rows, dim), dtype=np.float32)


def open_graphs(
    bundle: ModelBundle, providers: str = "cpu", threads: int = 2
) -> WholeGraph | SplitGraphs:
    """The right runner for the bundle's format."""
    kind = SplitGraphs if bundle.split else WholeGraph
    return kind(bundle, providers, threads)
