"""The featurize pipeline shared by training and serving: preprocess chain, then encoders.

Training and the worker both run exactly this code on a product, so a model never sees
inputs at serving time that were built differently from the ones it was trained on.
Numpy only (no torch): the worker imports it.

Graph input naming: every encoder in a model gets a *slug* (its name with every run of
characters other than letters and digits replaced by ``_``: ``text.minilm`` ->
``text_minilm``; a second use of the same encoder gets ``_2``, ``_3``...). Each of its
inputs is fed to the ONNX graph as ``<slug>__<input name>``, for example
``text_minilm__input_ids`` and ``text_minilm__mask``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np

from prodcat.contract.components import (
    MASK_INPUT,
    ComponentError,
    Encoder,
    InputSpec,
    Preprocessor,
    Product,
)

SEPARATOR = "__"
T = TypeVar("T")
log = logging.getLogger(__name__)


def slug_of(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def assign_slugs(names: Sequence[str]) -> list[str]:
    """One unique slug per encoder, in order; repeated names get ``_2``, ``_3``..."""
    seen: dict[str, int] = {}
    slugs = []
    for name in names:
        base = slug_of(name)
        seen[base] = seen.get(base, 0) + 1
        slugs.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return slugs


def input_name(slug: str, name: str) -> str:
    return f"{slug}{SEPARATOR}{name}"


class Pipeline:
    """Preprocessors then encoders; produces the flat, named inputs of the model graph."""

    def __init__(
        self,
        preprocessors: Sequence[Preprocessor],
        encoders: Sequence[Encoder],
        slugs: Sequence[str] | None = None,
    ) -> None:
        self.preprocessors = list(preprocessors)
        self.encoders = list(encoders)
        self.slugs = list(slugs) if slugs is not None else assign_slugs(e.name for e in encoders)
        self.specs = {
            slug: enc.input_spec() for slug, enc in zip(self.slugs, self.encoders, strict=True)
        }

    def inputs(self) -> list[tuple[str, str, InputSpec]]:
        """(graph input name, encoder slug, spec) for every input, in graph order."""
        return [
            (input_name(slug, spec.name), slug, spec)
            for slug in self.slugs
            for spec in self.specs[slug]
        ]

    def preprocess(self, product: Product) -> Product:
        product = dict(product)
        for step in self.preprocessors:
            product = _guarded(step.name, step.process, product)
        return product

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        """All graph inputs of one product (no batch axis); raises ComponentError."""
        return self.featurize_encoders(self.preprocess(product), self.slugs)

    def featurize_encoders(self, product: Product, slugs: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph inputs of the encoders ``slugs`` for an already preprocessed product.

        The worker featurizes an encoder only when its graph is to run (the text-first
        cascade may never need the photo's); training featurizes them all at once.
        """
        out: dict[str, np.ndarray] = {}
        for slug, encoder in zip(self.slugs, self.encoders, strict=True):
            if slug not in slugs:
                continue
            arrays = _guarded(encoder.name, encoder.featurize, product)
            for spec in self.specs[slug]:
                out[input_name(slug, spec.name)] = _checked(encoder.name, spec, arrays)
        return out

    def has_modality(self, product: Product, slug: str) -> bool:
        """Whether encoder ``slug`` finds its modality in the preprocessed product."""
        encoder = self.encoders[self.slugs.index(slug)]
        return bool(_guarded(encoder.name, encoder.has_modality, product))

    def featurize_many(
        self, products: Sequence[Product], pool: Executor
    ) -> tuple[list[dict[str, np.ndarray]], int]:
        """Featurize in parallel for offline work (training, evaluation).

        A product a component refuses is fed as all-missing and counted, so one corrupt
        photo neither aborts a training run nor shifts the rows against their labels.
        """

        def one(product: Product) -> dict[str, np.ndarray] | None:
            try:
                return self.featurize(product)
            except ComponentError as exc:
                log.debug("featurize failed in %s: %s", exc.stage, exc)
                return None

        results = list(pool.map(one, products))
        failed = sum(r is None for r in results)
        return [r if r is not None else self.blank() for r in results], failed

    def missing(self, slug: str) -> dict[str, np.ndarray]:
        """The graph inputs of ``slug`` for a product without that modality."""
        return {input_name(slug, spec.name): spec.empty() for spec in self.specs[slug]}

    def blank(self) -> dict[str, np.ndarray]:
        """Inputs of a product with every modality missing."""
        out: dict[str, np.ndarray] = {}
        for slug in self.slugs:
            out.update(self.missing(slug))
        return out

    def collate(self, items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Stack per-item inputs into a batch (leading axis), in graph order."""
        if not items:
            raise ValueError("cannot collate an empty batch")
        return {name: np.stack([item[name] for item in items]) for name, _, _ in self.inputs()}

    def mask_names(self) -> dict[str, str]:
        """Encoder slug -> name of its mask input."""
        return {slug: input_name(slug, MASK_INPUT) for slug in self.slugs}


def _guarded(stage: str, call: Callable[[Product], T], product: Product) -> T:
    """``call(product)``, turning a plugin's unexpected exception into its ComponentError.

    A plugin bug on one product (any exception, not only ComponentError) must refuse that
    product under the plugin's name, not stop the worker or be reported as ``internal``.
    """
    try:
        return call(product)
    except ComponentError:
        raise
    except Exception as exc:  # noqa: BLE001 - any plugin failure belongs to that plugin
        raise ComponentError(stage, f"{type(exc).__name__}: {exc}") from exc


def _checked(stage: str, spec: InputSpec, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The array for ``spec``, refusing a plugin output of the wrong dtype or shape."""
    if spec.name not in arrays:
        raise ComponentError(stage, f"featurize returned no {spec.name!r} input")
    array = np.asarray(arrays[spec.name])
    if array.shape != spec.shape:
        raise ComponentError(
            stage, f"input {spec.name!r} has shape {array.shape}, spec says {spec.shape}"
        )
    if array.dtype != np.dtype(spec.dtype):
        array = array.astype(spec.dtype, casting="same_kind")
    return array
