"""A bundle loaded for serving: its ONNX sessions and identity, before any batching.

:class:`BundleModel` is a format-1 bundle (one graph, the micro-batcher's
:class:`~prodcat.worker.batcher.BatchModel`); :class:`SplitModel` is a format-2 bundle (a
session per encoder graph plus the head's, and its cascade), batched graph by graph by
:mod:`prodcat.worker.serving`. Both can answer one product synchronously (``probe``), which
is how a hot reload proves a new bundle serves before swapping it in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prodcat.contract.components import Product
from prodcat.model.bundle import ModelBundle
from prodcat.model.cascade import Cascade
from prodcat.model.graphs import SplitGraphs
from prodcat.model.inference import OnnxSession


def identity_of(bundle: ModelBundle) -> dict[str, str]:
    """name/version/fingerprint as written into every assignment."""
    manifest = bundle.manifest
    return {
        "name": str(manifest.get("name") or bundle.path.resolve().name),
        "version": str(manifest.get("version") or manifest.get("created") or "unknown"),
        "fingerprint": bundle.fingerprint,
    }


def answers(bundle: ModelBundle, decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decoded results, each naming the model that produced it (models can be swapped) and
    carrying its fitted ``review_threshold``."""
    identity = identity_of(bundle)
    threshold = bundle.review_threshold
    return [{**item, "model": identity, "review_threshold": threshold} for item in decoded]


class BundleModel:
    """The micro-batcher's view of a format-1 bundle and its ONNX session."""

    def __init__(self, bundle: ModelBundle, session: OnnxSession) -> None:
        self.bundle = bundle
        self.session = session

    @property
    def providers(self) -> list[str]:
        return self.session.providers

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        return self.bundle.featurize(product)

    def collate(self, features: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.bundle.collate(features)

    def infer(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        return answers(self.bundle, self.bundle.decode(self.session.run(batch)))

    def identity(self) -> dict[str, str]:
        return identity_of(self.bundle)

    def probe(self, product: Product) -> dict[str, Any]:
        (result,) = self.infer(self.collate([self.featurize(product)]))
        return result


class SplitModel:
    """A format-2 bundle: its graphs' sessions and its calibrated cascade (None: none)."""

    def __init__(self, bundle: ModelBundle, graphs: SplitGraphs) -> None:
        self.bundle = bundle
        self.graphs = graphs
        self.cascade = Cascade.from_manifest(bundle.manifest)
        self.modality = {e["slug"]: e["modality"] for e in bundle.manifest["encoders"]}

    @property
    def providers(self) -> list[str]:
        return self.graphs.providers

    def identity(self) -> dict[str, str]:
        return identity_of(self.bundle)

    def decode(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        return answers(self.bundle, self.bundle.decode(outputs))

    def probe(self, product: Product) -> dict[str, Any]:
        batch = self.bundle.collate([self.bundle.featurize(product)])
        probs = self.graphs.probs(batch)
        (result,) = self.decode(dict(zip(self.bundle.output_names, probs, strict=True)))
        return result


Model = BundleModel | SplitModel
