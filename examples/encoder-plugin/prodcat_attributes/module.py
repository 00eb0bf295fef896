"""The torch side of ``tabular.attributes`` (imported only by ``build_module``, in training)."""

from __future__ import annotations

import torch
from torch import nn


class AttributeModule(nn.Module):
    """One embedding table per field (row 0 = missing, kept at zero), concatenated, then an MLP."""

    def __init__(
        self,
        table_sizes: list[int],
        embedding_dim: int,
        hidden_dim: int,
        output_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, embedding_dim, padding_idx=0) for size in table_sizes
        )
        self.mlp = nn.Sequential(
            nn.Linear(len(table_sizes) * embedding_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, attribute_ids: torch.Tensor) -> torch.Tensor:
        parts = [table(attribute_ids[:, i]) for i, table in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1))
