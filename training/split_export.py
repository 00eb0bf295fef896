"""Bundle format 2: the fusion model as one ONNX graph per encoder plus one head graph.

``encoders/<slug>.onnx`` is the encoder's own module as trained (frozen, or with its
fine-tuned blocks): its inputs without the mask in, ``<slug>__embedding`` out. ``head.onnx``
is everything after the encoders (the per-encoder LayerNorm, masking, concatenation and the
head): ``<slug>__embedding`` and ``<slug>__mask`` for every encoder in, ``probs__<level>``
(softmax) out. The worker can then run an encoder only for products that have its modality
and stop after the cheap ones (``prodcat.model.cascade``).

Parity is checked per graph (each encoder graph against its torch module, the head graph
against the torch head on the same embeddings) and end to end (ONNX encoders feeding the
ONNX head against the whole torch model), on a real batch; any failure raises ExportError
and the bundle is not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prodcat.contract.components import MASK_INPUT
from prodcat.contract.pipeline import Pipeline, input_name
from prodcat.model.bundle import ENCODERS_DIR, HEAD_FILE, embedding_name
from prodcat.model.graphs import trim_feeds
from prodcat.training.export import (
    PARITY_ATOL,
    compare_outputs,
    export_graph,
    output_name,
    run_onnx,
    to_onnx,
)
from prodcat.training.fusion import FusionModel


class EncoderGraph(nn.Module):
    """One encoder's module with positional inputs (the exporter's calling convention)."""

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.names = list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(**dict(zip(self.names, inputs, strict=True))).float()


class HeadGraph(nn.Module):
    """Embedding and mask per encoder, in the model's encoder order -> softmax per level."""

    def __init__(self, model: FusionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embeddings = dict(zip(self.model.slugs, inputs[0::2], strict=True))
        masks = dict(zip(self.model.slugs, inputs[1::2], strict=True))
        logits = self.model.fuse(embeddings, masks)
        return tuple(torch.softmax(level, dim=-1) for level in logits)


def encoder_inputs(pipeline: Pipeline, slug: str) -> list[tuple[str, str]]:
    """(graph input name, encoder input name) of ``slug``'s graph: its inputs but the mask."""
    return [
        (input_name(slug, spec.name), spec.name)
        for spec in pipeline.specs[slug]
        if spec.name != MASK_INPUT
    ]


def head_inputs(slugs: Sequence[str]) -> list[str]:
    return [name for slug in slugs for name in (embedding_name(slug), input_name(slug, MASK_INPUT))]


def export_split(
    model: FusionModel,
    pipeline: Pipeline,
    levels: Sequence[str],
    sample: dict[str, np.ndarray],
    root: Path,
) -> dict[str, Any]:
    """Write every graph under ``root``; returns the manifest's ``graphs`` (without sha256)."""
    model = model.cpu().eval()
    (root / ENCODERS_DIR).mkdir(parents=True, exist_ok=True)
    encoders: dict[str, Any] = {}
    head_sample: dict[str, np.ndarray] = {}
    for slug, encoder in zip(pipeline.slugs, pipeline.encoders, strict=True):
        names = encoder_inputs(pipeline, slug)
        file = f"{ENCODERS_DIR}/{slug}.onnx"
        graph = EncoderGraph(model.encoders[slug], [inner for _, inner in names])
        sequences = [name for name, inner in names if inner in encoder.sequence_inputs]
        to_onnx(
            graph, sample, [n for n, _ in names], [embedding_name(slug)], root / file, sequences
        )
        encoders[slug] = {
            "file": file,
            "precision": "fp32",
            "inputs": [n for n, _ in names],
            "sequence_inputs": sequences,
            "output": embedding_name(slug),
            "dim": encoder.output_dim,
        }
        head_sample[embedding_name(slug)] = _embed(model, pipeline, slug, sample)
        head_sample[input_name(slug, MASK_INPUT)] = sample[input_name(slug, MASK_INPUT)]
    outputs = [output_name(level) for level in levels]
    names = head_inputs(pipeline.slugs)
    to_onnx(HeadGraph(model), head_sample, names, outputs, root / HEAD_FILE)
    head = {"file": HEAD_FILE, "precision": "fp32", "inputs": names}
    return {"encoders": encoders, "head": head}


def split_parity(
    model: FusionModel,
    pipeline: Pipeline,
    root: Path,
    graphs: dict[str, Any],
    batch: dict[str, np.ndarray],
    atol: float = PARITY_ATOL,
) -> dict[str, Any]:
    """Per-graph and end-to-end parity of the exported graphs with torch; raises ExportError.

    Embeddings are compared relative to their scale (``atol`` times the largest absolute
    value, at least ``atol``): EfficientNet features reach the tens, MiniLM's are unit-norm.
    """
    model = model.cpu().eval()
    report: dict[str, Any] = {"graphs": {}}
    torch_feeds: dict[str, np.ndarray] = {}
    onnx_feeds: dict[str, np.ndarray] = {}
    for slug, encoder in zip(pipeline.slugs, pipeline.encoders, strict=True):
        entry = graphs["encoders"][slug]
        expected = _embed(model, pipeline, slug, batch)
        feeds = {n: batch[n] for n in entry["inputs"]}
        (got,) = run_onnx(root / entry["file"], feeds)
        scaled = atol * max(1.0, float(np.max(np.abs(expected))))
        report["graphs"][slug] = compare_outputs(
            [expected], [got], scaled, f"encoder {slug}", argmax=False
        )
        if entry["sequence_inputs"]:  # the trimmed batch the worker sends gives the same
            (cut,) = run_onnx(root / entry["file"], trim_feeds(encoder, slug, feeds))
            report["graphs"][slug]["trimmed"] = compare_outputs(
                [expected], [cut], scaled, f"encoder {slug}, trimmed batch", argmax=False
            )
        mask = batch[input_name(slug, MASK_INPUT)]
        torch_feeds[embedding_name(slug)], onnx_feeds[embedding_name(slug)] = expected, got
        torch_feeds[input_name(slug, MASK_INPUT)] = onnx_feeds[input_name(slug, MASK_INPUT)] = mask
    head_path = root / graphs["head"]["file"]
    with torch.inference_mode():
        head = HeadGraph(model)(
            *(torch.from_numpy(torch_feeds[n]) for n in head_inputs(model.slugs))
        )
    head_expected = [t.numpy() for t in head]
    report["graphs"]["head"] = compare_outputs(
        head_expected, run_onnx(head_path, torch_feeds), atol, "head"
    )
    with torch.inference_mode():
        whole = export_graph(model, pipeline)(
            *(torch.from_numpy(batch[name]) for name, _, _ in pipeline.inputs())
        )
    report["end_to_end"] = compare_outputs(
        [t.numpy() for t in whole], run_onnx(head_path, onnx_feeds), atol, "end-to-end"
    )
    # the summary figures format 1 reported, so tools reading either format find them
    report.update({k: report["end_to_end"][k] for k in ("max_abs_diff", "argmax_agreement")})
    report["atol"] = atol
    return report


def _embed(
    model: FusionModel, pipeline: Pipeline, slug: str, batch: dict[str, np.ndarray]
) -> np.ndarray:
    """``slug``'s torch embeddings of every row of ``batch``."""
    inputs = {
        inner: torch.from_numpy(batch[name]) for name, inner in encoder_inputs(pipeline, slug)
    }
    with torch.inference_mode():
        return model.embed(slug, inputs).float().numpy()
