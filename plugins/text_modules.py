"""Torch modules of the built-in text encoders (training only; imported by build_module)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as functional
from torch import nn

from prodcat.plugins.texthash import PAD_ID
from prodcat.plugins.torch_parts import FrozenParts


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (batch, seq, dim) over the positions where ``weights`` > 0.

    An all-zero row gives a zero vector rather than NaN, so a missing text stays finite.
    """
    weights = weights.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class HashgramBag(nn.Module):
    """fastText's embedding bag: the weighted mean of the hashed n-grams' embeddings.

    Written as Embedding + weighted sum rather than ``nn.EmbeddingBag`` because that is
    what exports cleanly to ONNX with a dynamic batch axis (a Gather and a ReduceSum).
    """

    def __init__(self, num_ids: int, dim: int, init_std: float | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_ids, dim, padding_idx=PAD_ID)
        if init_std is not None:  # else torch's N(0, 1)
            with torch.no_grad():
                self.embedding.weight.normal_(0.0, init_std)
                self.embedding.weight[PAD_ID].zero_()

    def forward(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # featurize already normalised the weights (sum or L2 norm 1; 0 for an empty text).
        return (self.embedding(ids) * weights.unsqueeze(-1)).sum(1)


def load_minilm(model_dir: Path) -> nn.Module:
    """The BERT body of MiniLM, offline, without its unused pooler.

    transformers' load report (it lists the pooler weights we leave out) and progress bar
    are silenced; a weight the model lacks is checked here instead and is an error.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModel.from_pretrained(
            str(model_dir),
            local_files_only=True,
            add_pooling_layer=False,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    if info["missing_keys"]:
        raise ValueError(f"text.minilm: {model_dir} lacks weights {info['missing_keys'][:3]}")
    return model


class MiniLMModule(FrozenParts):
    """all-MiniLM-L6-v2 with mean pooling over the attention mask, as sentence-transformers.

    The top ``trainable_layers`` transformer layers are fine-tuned; everything below (and
    the embeddings) is frozen, so ``trainable_layers=0`` is a fixed feature extractor.
    """

    def __init__(self, model_dir: Path, trainable_layers: int, normalize: bool) -> None:
        super().__init__()
        self.model = load_minilm(model_dir)
        layers = list(self.model.encoder.layer)
        if not 0 <= trainable_layers <= len(layers):
            raise ValueError(
                f"text.minilm: trainable_layers must be 0..{len(layers)}, got {trainable_layers}"
            )
        self.freeze(self.model.embeddings, *layers[: len(layers) - trainable_layers])
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = masked_mean(hidden, attention_mask)
        return functional.normalize(pooled, dim=-1) if self.normalize else pooled


class VectorInput(nn.Module):
    """The module of an encoder whose ``featurize`` already computed the embedding.

    The vector passes through unchanged (a plain copy in ONNX, to keep the output a graph
    node of its own); it has no weights, so training caches it like any frozen encoder.
    """

    def forward(self, sentence_vector: torch.Tensor) -> torch.Tensor:
        return sentence_vector * 1.0


class LstmModule(nn.Module):
    """The seed article's text encoder: word embeddings, a (bi)LSTM, mean over the words.

    It runs over the padded sequence (no packing, which does not export to ONNX) and
    averages the outputs at the real word positions only.
    """

    def __init__(
        self,
        num_ids: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_ids, embedding_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
        )

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.embedding(token_ids))
        return masked_mean(outputs, token_ids != PAD_ID)
