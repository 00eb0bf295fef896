"""Torch building blocks shared by the built-in encoder modules (training only).

Imported only by the ``*_modules`` files, which ``build_module`` imports lazily: the worker
never loads this.
"""

from __future__ import annotations

from torch import nn


class FrozenParts(nn.Module):
    """A module whose pretrained parts can be frozen.

    Frozen parts get no gradients and stay in eval mode even while the rest trains, so
    dropout and batch-norm statistics never change them: a fully frozen encoder is then a
    pure function of its inputs, which is what lets training cache its features.
    """

    def __init__(self) -> None:
        super().__init__()
        self._frozen_parts: list[nn.Module] = []

    def freeze(self, *parts: nn.Module) -> None:
        for part in parts:
            part.requires_grad_(False)
            part.eval()
            self._frozen_parts.append(part)

    def train(self, mode: bool = True) -> FrozenParts:
        super().train(mode)
        for part in self._frozen_parts:
            part.eval()
        return self
