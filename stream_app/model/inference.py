"""ONNX Runtime sessions for the worker: CUDA with I/O binding when it really works, else CPU.

onnxruntime-gpu lists the CUDA provider even on a machine without a GPU (or without the
CUDA libraries), so ``get_available_providers()`` is only a hint: the session is created
with CUDA first and ``session.get_providers()`` says whether CUDA was actually taken. When
it was not, a CPU session is built with the configured intra-op thread count (a CUDA
session falls back to CPU with ORT's default threads, which oversubscribes small hosts).

A session is driven by one thread at a time (the batcher's inference thread); nothing here
is shared between threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDER_CHOICES = ("auto", "cuda", "cpu")


class InferenceSetupError(RuntimeError):
    """The model file cannot be loaded, or the requested provider is not usable."""


class OnnxSession:
    """One ONNX model: ``run(feeds) -> {output name: array}`` on the provider in use."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.providers: list[str] = session.get_providers()
        self.uses_cuda = self.providers[0] == CUDA
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def device(self) -> str:
        return "cuda" if self.uses_cuda else "cpu"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on a batch; inputs the graph does not declare are ignored, missing ones fail."""
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise ValueError(f"model inputs missing from the batch: {', '.join(missing)}")
        if self.uses_cuda:
            return self._run_bound(feeds)
        outputs = self._session.run(self.output_names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Inputs are copied to the GPU once and outputs stay there until the single copy
        # back, instead of ORT staging every tensor through pageable host memory.
        binding = self._session.io_binding()
        for name in self.input_names:
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[name]), "cuda", 0)
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self._session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        return dict(zip(self.output_names, outputs, strict=True))


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads sleep instead of spinning: the worker shares its cores with the
    # featurize pool, the event loop and often the broker, which spinning threads starve
    # (measured: about 25% less CPU per item end to end on 2 cores, docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # ORT's own warnings about fallbacks are logged by us
    return options


def create_session(model: str | Path, providers: str = "auto", threads: int = 2) -> OnnxSession:
    """Load ``model`` on the best provider allowed by ``providers`` (auto, cuda or cpu)."""
    if providers not in PROVIDER_CHOICES:
        raise InferenceSetupError(
            f"providers must be one of {', '.join(PROVIDER_CHOICES)}, got {providers!r}"
        )
    path = Path(model)
    if not path.is_file():
        raise InferenceSetupError(f"model file {path} does not exist")
    session = None
    if providers in ("auto", "cuda"):
        session = _try_cuda(path, threads)
        if session is None and providers == "cuda":
            raise InferenceSetupError(
                "providers=cuda but no CUDA session could be created "
                f"(available: {', '.join(ort.get_available_providers())}); "
                "install the 'gpu' extra on a machine with an NVIDIA GPU, or use providers=cpu"
            )
    if session is None:
        session = OnnxSession(_load(path, [CPU], threads))
    log.info("ONNX model %s runs on %s", path.name, ", ".join(session.providers))
    return session


def _try_cuda(path: Path, threads: int) -> OnnxSession | None:
    if CUDA not in ort.get_available_providers():
        return None
    try:
        session = OnnxSession(_load(path, [CUDA, CPU], threads))
    except InferenceSetupError as exc:
        log.info("CUDA session failed (%s); using CPU", exc)
        return None
    if not session.uses_cuda:
        log.info("CUDA provider is installed but was not taken (no usable GPU); using CPU")
        return None
    return session


def _load(path: Path, providers: list[str], threads: int) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=providers
        )
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
        raise InferenceSetupError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
