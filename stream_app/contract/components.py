"""The component contract: what preprocessors, encoders and heads are.

Plugins register component *classes*; a model's manifest names each component with its
config, and the same classes are instantiated with that config in training and in the
worker. Everything here is numpy-only: torch is imported lazily inside ``build_module``
so that the serving worker never imports it.

A *product* is the decoded product event (a dict shaped by ``schemas/product-event``).
Preprocessors may add transient keys starting with an underscore, for example
``_image`` (a decoded RGB ``PIL.Image``) or ``_image_bytes`` (bytes fetched from a URL).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

Product = dict[str, Any]
MASK_INPUT = "mask"
MODALITIES = ("text", "image", "tabular")
IMAGE_KEY = "_image"  # the decoded RGB PIL.Image that image encoders read
IMAGE_BYTES_KEY = "_image_bytes"  # raw image bytes fetched from the event's URL


class ComponentError(Exception):
    """A component could not handle one product; the worker dead-letters that event.

    ``stage`` is the component's name, so the dead letter says which plugin refused.
    """

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class InputSpec:
    """One model input of one item: the batch axis is added in front of ``shape``."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(data["name"], data["dtype"], tuple(data["shape"]))

    def empty(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=self.dtype)


def fingerprint_of(payload: Any) -> str:
    """A short, stable hash of any JSON-able value (sorted keys, so order never matters)."""
    blob = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


class Component:
    """Base for all components: a dotted name, a version and a JSON-able config.

    Subclasses set ``name``, ``version`` and ``defaults``; a config given at construction
    is merged over the defaults and unknown keys are refused, so a typo never passes
    silently into a model's fingerprint.

    ``added_defaults``: config keys added after a version was released, each with the value
    that reproduces the behaviour from before it existed. A key holding that value is left
    out of the fingerprint, so models built before the key existed keep matching; a model
    whose manifest lacks the key is rebuilt with that value, so the default of a new key may
    be a new behaviour.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    defaults: ClassVar[dict[str, Any]] = {}
    added_defaults: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown config key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.config: dict[str, Any] = {**self.defaults, **config}

    def fingerprint(self) -> str:
        config = {
            key: value
            for key, value in self.config.items()
            if key not in self.added_defaults or value != self.added_defaults[key]
        }
        return fingerprint_of({"name": self.name, "version": self.version, "config": config})

    def describe(self) -> dict[str, Any]:
        """The component as a manifest entry."""
        return {
            "name": self.name,
            "version": self.version,
            "config": self.config,
            "fingerprint": self.fingerprint(),
        }

    def error(self, message: str) -> ComponentError:
        return ComponentError(self.name, message)

    # Assets: files a featurizer needs at serving time (a tokenizer), shipped in the bundle.
    def export_assets(self, dest: Path) -> None:
        """Copy the files this component needs into ``dest`` (a folder in the bundle)."""

    def load_assets(self, src: Path) -> None:
        """Use the files previously written by ``export_assets`` from ``src``."""


class Preprocessor(Component):
    """Transforms a product before featurizing (normalise text, decode an image...)."""

    def process(self, product: Product) -> Product:
        raise NotImplementedError


class Encoder(Component):
    """Turns a product into numpy inputs (``featurize``) and, for training, a torch module.

    ``featurize`` returns one array per entry of ``input_spec()``, each with exactly that
    dtype and shape; one entry is always ``mask`` (float32, shape ``()``): 1.0 when the
    modality is present, 0.0 when missing (then the other arrays are zeros).
    ``build_module()`` returns a ``torch.nn.Module`` whose ``forward`` takes those inputs
    as keyword arguments with a leading batch axis (mask excluded) and returns a
    ``(batch, output_dim)`` float tensor.
    """

    modality: ClassVar[str] = "text"
    # Inputs whose last axis is a sequence padded at the end, where the module ignores the
    # padding: the encoder's graph (bundle format 2) takes that axis at any length, and
    # ``trim`` may cut a batch to its longest real sequence: the same answer, less work.
    sequence_inputs: ClassVar[tuple[str, ...]] = ()

    def input_spec(self) -> list[InputSpec]:
        raise NotImplementedError

    def trim(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of this encoder's inputs (by input name, batch axis first) cut to what
        its rows use; only called for a graph exported with ``sequence_inputs`` dynamic."""
        return batch

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def missing(self) -> dict[str, np.ndarray]:
        """The inputs of a product without this modality: zeros and mask 0."""
        return {spec.name: spec.empty() for spec in self.input_spec()}

    def has_modality(self, product: Product) -> bool:
        """Whether ``featurize`` would find this encoder's modality in the (preprocessed)
        product. The worker asks before featurizing an encoder it may not need; override it
        with a cheap check (the default featurizes)."""
        return bool(self.featurize(product)[MASK_INPUT] > 0)

    def build_module(self) -> Any:
        raise NotImplementedError

    @property
    def frozen(self) -> bool:
        """True when the module has no trainable weights, so its output can be cached."""
        return False

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "modality": self.modality,
            "output_dim": self.output_dim,
            "inputs": [spec.to_json() for spec in self.input_spec()],
        }


def mask_spec() -> InputSpec:
    """The ``mask`` input every encoder declares beside its own inputs."""
    return InputSpec(MASK_INPUT, "float32", ())


def present(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` plus the mask of a present modality (1.0, float32, shape ``()``).

    What an encoder's ``featurize`` returns when its modality is there; ``missing()``
    covers the other case.
    """
    return {**arrays, MASK_INPUT: np.array(1.0, dtype=np.float32)}


class Head(Component):
    """Maps the fused vector to logits, one tensor per taxonomy level.

    ``build_module(input_dim, level_sizes)`` returns a module whose ``forward(x)`` returns a
    tuple of ``(batch, level_size)`` tensors; ``loss(outputs, targets)`` returns the summed
    training loss over levels (targets: list of int64 class-index tensors, -1 = unknown).
    """

    def build_module(self, input_dim: int, level_sizes: list[int]) -> Any:
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any) -> Any:
        import torch.nn.functional as functional

        total = 0
        for logits, target in zip(outputs, targets, strict=True):
            total = total + functional.cross_entropy(logits, target, ignore_index=-1)
        return total
