"""``tabular.attributes``: structured attributes (gender, colour, season...) as learned embeddings.

Each configured field becomes one integer id: 0 when the value is missing, otherwise its
position in the field's vocabulary (when one is configured; unseen values share one
out-of-vocabulary id) or a stable hash bucket. Hashing needs no fitting step, so the
encoder works on any catalogue; a vocabulary makes ids readable and collision-free.
Featurizing is numpy-only: it runs in the serving worker, which has no torch.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from prodcat import Encoder, InputSpec, Product, mask_spec

IDS_INPUT = "attribute_ids"


class AttributeEncoder(Encoder):
    """Per-field embeddings of ``product["attributes"]``, concatenated, then a small MLP."""

    name = "tabular.attributes"
    version = "1"
    modality = "tabular"
    description = "Structured product attributes as hashed or vocabulary ids per field"
    defaults = {
        "fields": ["gender", "baseColour", "season", "usage"],
        "buckets": 64,
        "vocab": {},
        "embedding_dim": 8,
        "hidden_dim": 64,
        "output_dim": 32,
        "dropout": 0.1,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        fields, vocab = self.config["fields"], self.config["vocab"]
        if not fields or len(set(fields)) != len(fields):
            raise ValueError(f"{self.name}: fields must be a non-empty list without repeats")
        if self.config["buckets"] < 2:
            raise ValueError(f"{self.name}: buckets must be at least 2 (id 0 means missing)")
        stray = sorted(set(vocab) - set(fields))
        if stray:
            raise ValueError(f"{self.name}: vocab given for unknown field(s) {', '.join(stray)}")
        self._index = {
            field: {_clean(value): i for i, value in enumerate(values)}
            for field, values in vocab.items()
        }

    def table_sizes(self) -> list[int]:
        """Embedding rows per field: missing + vocabulary + out-of-vocabulary, or buckets."""
        return [
            len(self._index[field]) + 2 if field in self._index else self.config["buckets"]
            for field in self.config["fields"]
        ]

    def value_id(self, field: str, value: Any) -> int:
        text = _clean(value)
        if not text:
            return 0
        index = self._index.get(field)
        if index is not None:
            return 1 + index.get(text, len(index))
        digest = hashlib.blake2b(f"{field}\x1f{text}".encode(), digest_size=8).digest()
        return 1 + int.from_bytes(digest, "little") % (self.config["buckets"] - 1)

    def input_spec(self) -> list[InputSpec]:
        return [InputSpec(IDS_INPUT, "int64", (len(self.config["fields"]),)), mask_spec()]

    @property
    def output_dim(self) -> int:
        return int(self.config["output_dim"])

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        attributes = product.get("attributes")
        if not isinstance(attributes, dict):
            return self.missing()
        ids = np.array(
            [self.value_id(field, attributes.get(field)) for field in self.config["fields"]],
            dtype=np.int64,
        )
        if not ids.any():
            return self.missing()
        return {IDS_INPUT: ids, "mask": np.array(1.0, dtype=np.float32)}

    def build_module(self) -> Any:
        from prodcat_attributes.module import AttributeModule  # torch: training only

        return AttributeModule(
            self.table_sizes(),
            self.config["embedding_dim"],
            self.config["hidden_dim"],
            self.output_dim,
            self.config["dropout"],
        )


def _clean(value: Any) -> str:
    """Case- and spacing-insensitive text of a value; '' for missing ones."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split()).lower()
