"""ONNX export of the full fusion model (bundle format 1), the parity check, int8.

The graph takes every pipeline input by its graph name (``<slug>__<input>``, see
``prodcat.contract.pipeline``) with a dynamic batch axis, and returns one softmax tensor per
taxonomy level named ``probs__<level>``. The TorchScript exporter is used (``dynamo=False``):
the dynamo exporter mis-built the MiniLM graph (an output named ``embedding`` came out
wrong), while TorchScript export matches torch to 2e-7. Format 2 (a graph per encoder and a
head graph) is in ``prodcat.training.split_export``; both use :func:`to_onnx`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prodcat.contract.pipeline import Pipeline
from prodcat.training.fusion import ExportGraph, FusionModel

OPSET = 17
PARITY_ATOL = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model; the bundle must not ship."""


def output_name(level: str) -> str:
    return "probs__" + re.sub(r"[^0-9A-Za-z]+", "_", level).strip("_")


def export_graph(model: FusionModel, pipeline: Pipeline) -> ExportGraph:
    layout = [(name, slug, spec.name) for name, slug, spec in pipeline.inputs()]
    return ExportGraph(model, layout).eval()


def to_onnx(
    module: torch.nn.Module,
    sample: dict[str, np.ndarray],
    inputs: Sequence[str],
    outputs: Sequence[str],
    path: Path,
    sequences: Sequence[str] = (),
) -> None:
    """Export ``module`` (called with ``sample``'s ``inputs`` in order) with a batch axis;
    ``sequences``: inputs whose second axis (a padded sequence) is dynamic too.

    ``module`` is put in eval mode first: the exporter restores the mode it found, and a
    wrapper built in train mode would leave a fine-tuned encoder training afterwards (its
    batch norms then moved by the next forward, away from the exported graph).
    """
    module.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[name])) for name in inputs)
    dynamic: dict[str, dict[int, str]] = {name: {0: "batch"} for name in [*inputs, *outputs]}
    for name in sequences:
        dynamic[name][1] = "sequence"
    with torch.inference_mode(), warnings.catch_warnings():
        # the TorchScript exporter notes every strided Slice it cannot constant-fold
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def export_onnx(
    model: FusionModel,
    pipeline: Pipeline,
    levels: Sequence[str],
    sample: dict[str, np.ndarray],
    path: Path,
) -> None:
    """Write the full model (frozen encoders included) as one ONNX graph."""
    names = [name for name, _, _ in pipeline.inputs()]
    outputs = [output_name(level) for level in levels]
    to_onnx(export_graph(model.cpu(), pipeline), sample, names, outputs, path)


def run_onnx(path: Path, batch: dict[str, np.ndarray], threads: int = 0) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in batch.items() if k in wanted})


def parity_check(
    model: FusionModel,
    pipeline: Pipeline,
    path: Path,
    batch: dict[str, np.ndarray],
    atol: float = PARITY_ATOL,
) -> dict[str, Any]:
    """Compare ONNX Runtime with torch on a real batch; raise ExportError when they differ."""
    graph = export_graph(model.cpu(), pipeline)
    with torch.inference_mode():
        expected = graph(*(torch.from_numpy(batch[name]) for name, _, _ in pipeline.inputs()))
    return compare_outputs([t.numpy() for t in expected], run_onnx(path, batch), atol)


def compare_outputs(
    expected: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    atol: float = PARITY_ATOL,
    what: str = "ONNX",
    argmax: bool = True,
) -> dict[str, Any]:
    """Max abs difference (and, for probabilities, argmax agreement) of ONNX against torch;
    raise ExportError when they differ by more than ``atol`` or disagree on any argmax."""
    max_diff = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True))
    report: dict[str, Any] = {"batch": len(expected[0]), "max_abs_diff": max_diff, "atol": atol}
    if argmax:
        report["argmax_agreement"] = min(
            float(np.mean(e.argmax(axis=1) == g.argmax(axis=1)))
            for e, g in zip(expected, got, strict=True)
        )
    if max_diff > atol or report.get("argmax_agreement", 1.0) < 1.0:
        agreement = report.get("argmax_agreement")
        raise ExportError(
            f"{what} parity check failed: max abs diff {max_diff:.3g} (allowed {atol})"
            + (f", argmax agreement {agreement:.2%} (required 100%)" if argmax else "")
        )
    return report


# Convolutions stay float32: ONNX Runtime's dynamic ConvInteger made the MiniLM +
# EfficientNet-Lite0 graph 8.6x slower on CPU (127.5 vs 14.9 ms/item); without them the
# graph is 2.9x smaller and 1.6x faster (10.1 vs 15.9 ms/item).
QUANTIZED_OPS = ["MatMul", "Gemm", "Gather"]


def quantize(src: Path, dest: Path) -> None:
    """Dynamic int8 quantisation, per channel (per-tensor: MiniLM cosine to fp32 0.96, not 0.99)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dest),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=QUANTIZED_OPS,
    )
