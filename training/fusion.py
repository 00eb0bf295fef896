"""The fusion model: encoders' modules, masked and concatenated, fed to the head.

For each encoder the fused vector holds ``layer_norm(module(inputs)) * mask`` followed,
after all encoders, by the masks themselves, so the head knows which modalities were
present rather than mistaking a missing photo for a black one. The per-encoder LayerNorm
puts every modality on the same scale: without it the 1,280 EfficientNet features drowned
the unit-norm MiniLM vector, and the fused model did worse on articleType than the
title alone (0.887 vs 0.964 accuracy on the fashion photos). Modality dropout zeroes a present
modality's mask per item during training (never every modality of an item), which teaches
the head to answer from the title alone or the photo alone.

Out of training (validation, export, serving) the model answers from several views: the
head on the fused vector, on the title alone and on the photo alone (each view's
modalities kept, the others masked), pooled as a weighted geometric mean of their
probabilities (a weighted mean of log-probabilities, ``view_weights`` over the views a row
has), then divided per level by a temperature; both are fitted on the validation split
(``training.answer_fit``). A head trained with modality dropout is good at each view;
pooling them keeps the fused answer from throwing away what the title alone knows (fused
fell 0.8 points below the title alone on articleType before). Geometric rather than
arithmetic pooling because a view that is sure a class is wrong vetoes it: with a title
that no longer names the category, an arithmetic mean let a confident wrong title outvote
the fused view (the fashion test rows with a photo, weights 1 / 2 / 0.5: articleType with
poor titles 84.9% arithmetic, 88.4% geometric; full input 96.6% and 97.0%).

Frozen encoders are not run during training: their outputs are precomputed once
(``training.features``) and passed in as ``cached``. The exported graph
(:class:`ExportGraph`) runs the full model, frozen encoders included, so the worker feeds it
raw featurizer inputs and gets per-level probabilities (softmax) back, with no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prodcat.contract.components import MASK_INPUT, Encoder, Head
from prodcat.contract.pipeline import assign_slugs
from prodcat.training.prefix_cache import PREFIX_INPUT

FUSED_VIEW = "fused"


class FusionModel(nn.Module):
    def __init__(
        self,
        encoders: Sequence[Encoder],
        head: Head,
        level_sizes: Sequence[int],
        modality_dropout: float = 0.0,
        slugs: Sequence[str] | None = None,
        view_weights: Mapping[str, float] | None = None,
    ) -> None:
        """``view_weights``: ``fused`` and modality names (``text``, ``image``) -> weight of
        that view in the answer; None or only ``fused``: the fused view alone."""
        super().__init__()
        self.slugs = list(slugs) if slugs is not None else assign_slugs(e.name for e in encoders)
        views = _views(encoders, view_weights or {FUSED_VIEW: 1.0})
        self.view_names = [name for name, _, _ in views]
        self.view_weights = [weight for _, _, weight in views]
        self.register_buffer("view_keep", torch.tensor([keep for _, keep, _ in views]), False)
        self.register_buffer("temperatures", torch.ones(len(level_sizes)))
        self.frozen = {slug: enc.frozen for slug, enc in zip(self.slugs, encoders, strict=True)}
        self.encoders = nn.ModuleDict(
            {slug: enc.build_module() for slug, enc in zip(self.slugs, encoders, strict=True)}
        )
        for slug, module in self.encoders.items():
            if self.frozen[slug]:
                module.eval()
                module.requires_grad_(False)
        self.norms = nn.ModuleDict(
            {
                slug: nn.LayerNorm(enc.output_dim)
                for slug, enc in zip(self.slugs, encoders, strict=True)
            }
        )
        self.input_dim = sum(enc.output_dim for enc in encoders) + len(encoders)
        self.head = head.build_module(self.input_dim, list(level_sizes))
        self.modality_dropout = modality_dropout

    def train(self, mode: bool = True) -> FusionModel:
        """Frozen encoders stay in eval mode (no dropout or batch-norm updates) always."""
        super().train(mode)
        for slug, module in self.encoders.items():
            if self.frozen[slug]:
                module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def embed(self, slug: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One encoder's output from its raw inputs (mask excluded)."""
        kwargs = {k: v for k, v in inputs.items() if k != MASK_INPUT}
        return self.encoders[slug](**kwargs)

    def forward(
        self,
        raw: Mapping[str, Mapping[str, torch.Tensor]],
        masks: Mapping[str, torch.Tensor],
        cached: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Logits per level. ``raw[slug]``: inputs of encoders not in ``cached``."""
        cached = cached or {}
        embeddings = {}
        for slug in self.slugs:
            if slug in cached:
                embeddings[slug] = cached[slug]
            elif PREFIX_INPUT in raw[slug]:
                embeddings[slug] = self._from_prefix(slug, raw[slug][PREFIX_INPUT], masks[slug])
            else:
                embeddings[slug] = self.embed(slug, raw[slug])
        return self.fuse(embeddings, masks)

    def _from_prefix(self, slug: str, prefix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder's trainable suffix on its cached prefix output (training only), run
        on the rows that have the modality; zeros elsewhere (masked in the fusion)."""
        present = mask > 0
        out = prefix.new_zeros((len(prefix), self.norms[slug].normalized_shape[0]))
        if bool(present.any()):
            out[present] = self.encoders[slug].trainable_suffix(prefix[present]).float()
        return out

    def fuse(
        self, embeddings: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        """Training: the head's logits on the fused vector (modality dropout applied).
        Otherwise: the views' weighted mean log-probabilities, over the temperatures."""
        mask = torch.stack([masks[slug].float() for slug in self.slugs], dim=1)
        normed = [self.norms[slug](embeddings[slug].float()) for slug in self.slugs]
        if self.training:
            if self.modality_dropout > 0:
                mask = _drop_modalities(mask, self.modality_dropout)
            return self._head(normed, mask)
        if len(self.view_weights) == 1:
            logits = self._head(normed, mask)
        else:
            logits = self._mean_of_views(normed, mask)
        return tuple(level / self.temperatures[i] for i, level in enumerate(logits))

    def _head(self, normed: Sequence[torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [vector * mask[:, i : i + 1] for i, vector in enumerate(normed)]
        return tuple(self.head(torch.cat([*parts, mask], dim=1)))

    def _mean_of_views(
        self, normed: Sequence[torch.Tensor], mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """sum_v w_v log p_v / sum_v w_v per level over the views a row has (a view a row
        lacks every modality of gets weight 0; the fused view always counts, and a row with
        one modality gets that view's answer whatever the weights)."""
        total: list[torch.Tensor] | None = None
        weight_sum = torch.zeros_like(mask[:, :1])
        for index, weight in enumerate(self.view_weights):
            view_mask = mask * self.view_keep[index]
            has_view = view_mask.amax(dim=1, keepdim=True) if index else torch.ones_like(weight_sum)
            w = has_view * weight
            logs = [torch.log_softmax(level, dim=-1) * w for level in self._head(normed, view_mask)]
            total = logs if total is None else [a + b for a, b in zip(total, logs, strict=True)]
            weight_sum = weight_sum + w
        assert total is not None
        return tuple(level / weight_sum for level in total)


def _views(
    encoders: Sequence[Encoder], weights: Mapping[str, float]
) -> list[tuple[str, list[float], float]]:
    """(name, which encoders the view keeps, 1/0 per encoder; weight) per view named in
    ``weights``, the fused view first. A view of a modality the model lacks, or of every
    encoder it has, is no view of its own and is left out; one of weight 0 stays, so the
    weights can be refitted."""
    modalities = [e.modality for e in encoders]
    views = [(FUSED_VIEW, [1.0] * len(encoders), float(weights.get(FUSED_VIEW, 1.0)))]
    for name, weight in weights.items():
        keep = [float(m == name) for m in modalities]
        if name != FUSED_VIEW and 0 < sum(keep) < len(keep):
            views.append((name, keep, float(weight)))
    return views


def _drop_modalities(mask: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each present modality with probability ``p``, keeping at least one per item."""
    kept = mask * (torch.rand_like(mask) >= p).float()
    nothing_left = kept.sum(dim=1, keepdim=True) == 0
    return torch.where(nothing_left, mask, kept)


class ExportGraph(nn.Module):
    """The served graph: flat named inputs in pipeline order -> softmax per level."""

    def __init__(self, model: FusionModel, layout: Sequence[tuple[str, str, str]]) -> None:
        """``layout``: (graph input name, encoder slug, encoder input name) per input."""
        super().__init__()
        self.model = model
        self.layout = list(layout)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw: dict[str, dict[str, torch.Tensor]] = {slug: {} for slug in self.model.slugs}
        for (_, slug, name), tensor in zip(self.layout, inputs, strict=True):
            raw[slug][name] = tensor
        masks = {slug: raw[slug][MASK_INPUT] for slug in self.model.slugs}
        logits = self.model(raw, masks)
        return tuple(torch.softmax(level, dim=-1) for level in logits)
