"""Cheaper graphs for a split bundle (format 2): int8 for CPUs, float16 for GPUs.

Each encoder graph gets the quantisation that pays on a CPU for its kind of work:

* image encoders: **static** int8, QDQ, per channel, activations calibrated on training
  photos. Dynamic int8 turned EfficientNet-Lite0's convolutions into ``ConvInteger``, 8.6x
  slower on this CPU (docs/benchmarks.md); static quantisation gives ``QLinearConv`` with
  fixed activation scales instead, about half the CPU time of float32 here;
* text and other encoders: dynamic int8 of MatMul/Gemm/Gather, per channel (MiniLM's
  cosine to float32 0.99; per tensor it was 0.96);
* the head stays float32: it is a tiny share of the work and its probabilities are what
  the cascade's thresholds compare.

``to_fp16`` converts every graph to float16 with float32 inputs and outputs, for CUDA; a
lookup table (``Gather``: MiniLM's 30,522-word vocabulary, hashgram's buckets) goes to
int8 first (dynamic, weight only), as it is the largest tensor of a text encoder and is
read a row at a time. Either way the bundle's manifest records each graph's precision.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.training.export import quantize

log = logging.getLogger(__name__)
CalibrationBatches = Iterable[dict[str, np.ndarray]]


def quantize_split(
    root: Path,
    graphs: dict[str, Any],
    modalities: Mapping[str, str],
    calibration: Mapping[str, CalibrationBatches],
) -> dict[str, str]:
    """Quantise every encoder graph under ``root`` in place; returns slug -> method.

    ``calibration``: for each image encoder, batches of its graph inputs (training photos).
    """
    methods = {}
    for slug, entry in graphs["encoders"].items():
        path = root / entry["file"]
        if modalities[slug] == "image":
            quantize_static(path, calibration[slug])
            methods[slug] = "static int8 QDQ per channel"
        else:
            with _replaced(path) as (src, dest):
                quantize(src, dest)
            methods[slug] = "dynamic int8 per channel (MatMul, Gemm, Gather)"
        entry["precision"] = "int8"
    return methods


def quantize_static(path: Path, batches: CalibrationBatches) -> None:
    """Static int8 (QDQ, per channel; uint8 activations, int8 weights) of ``path`` in place."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with _replaced(path) as (src, dest), tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + ORT's graph fusions first, as ORT advises for static int8
        quant_pre_process(str(src), str(prepared))
        quantize_static(
            str(prepared),
            str(dest),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def to_fp16(root: Path, graphs: dict[str, Any]) -> None:
    """Every graph under ``root`` to float16 in place (inputs and outputs stay float32)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    for entry in [*graphs["encoders"].values(), graphs["head"]]:
        path = root / entry["file"]
        if any(node.op_type == "Gather" for node in onnx.load(str(path)).graph.node):
            with _replaced(path) as (src, dest):
                quantize_dynamic(
                    str(src),
                    str(dest),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Gather"],
                )
        blocked = [*DEFAULT_OP_BLOCK_LIST, "DequantizeLinear"]  # opset 17: float32 scales only
        model = convert_float_to_float16(
            onnx.load(str(path)), keep_io_types=True, op_block_list=blocked
        )
        onnx.save(model, str(path))
        entry["precision"] = "fp16"


@contextmanager
def _replaced(path: Path) -> Iterator[tuple[Path, Path]]:
    """(a copy of ``path`` to read, ``path`` to write): for in-place conversions."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / path.name
        shutil.copyfile(path, src)
        with quiet_root_logger():  # ORT's quantiser logs every tensor it leaves in float
            yield src, path


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
