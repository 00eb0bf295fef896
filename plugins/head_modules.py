"""Torch modules and losses of the built-in heads (training only; imported lazily)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as functional
from torch import nn


class MlpModule(nn.Module):
    """Optional LayerNorm, hidden Linear-ReLU-Dropout layers, then one Linear per level.

    With no hidden layers it is one linear classifier per level (the linear SVM's module).
    The input LayerNorm puts the fused encoders, whose scales differ a lot (an
    L2-normalised MiniLM vector next to raw CNN features), on one footing.
    """

    def __init__(
        self,
        input_dim: int,
        level_sizes: Sequence[int],
        hidden: Sequence[int],
        dropout: float,
        input_norm: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(input_dim)] if input_norm else []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        if not hidden and dropout:
            layers.append(nn.Dropout(dropout))
        self.trunk = nn.Sequential(*layers)
        self.levels = nn.ModuleList(nn.Linear(width, size) for size in level_sizes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shared = self.trunk(x)
        return tuple(level(shared) for level in self.levels)


def hinge_loss(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], margin: float
) -> torch.Tensor:
    """Multi-class hinge loss (Crammer-Singer style, as ``multi_margin_loss``) per level.

    Rows whose target is -1 (unknown at that level) are left out; a level with no known
    target contributes zero, still attached to the graph.
    """
    total = outputs[0].new_zeros(())
    for logits, target in zip(outputs, targets, strict=True):
        known = target >= 0
        per_row = functional.multi_margin_loss(
            logits, target.clamp(min=0), margin=margin, reduction="none"
        )
        total = total + (per_row * known).sum() / known.sum().clamp(min=1)
    return total


class EnsembleModule(nn.Module):
    """Averages its members' class probabilities per level.

    Each level's output is ``log(mean_k softmax(member_k))``: log-probabilities, so the
    usual softmax at decoding gives exactly the averaged probabilities and argmax is the
    soft vote. Computed with logsumexp, which is stable and exports to ONNX.

    Each forward keeps its members' own outputs (``last_member_outputs``) next to the
    averaged ones it returned (``last_outputs``), so the ensemble's loss can train every
    member on its own outputs even when the caller rebuilds the returned tuple.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        member_outputs = [tuple(member(x)) for member in self.members]
        log_count = math.log(len(member_outputs))
        levels = tuple(
            torch.logsumexp(
                torch.stack([functional.log_softmax(level, dim=-1) for level in per_level]), 0
            )
            - log_count
            for per_level in zip(*member_outputs, strict=True)
        )
        self.last_member_outputs, self.last_outputs = member_outputs, levels
        return levels
