"""ONNX session factory on CPU, with a tiny model built here with onnx.helper."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from prodcat.model import inference
from prodcat.model.inference import CPU, CUDA, InferenceSetupError, create_session

WEIGHTS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """x (batch, 3) -> softmax(x @ W) (batch, 2), with a dynamic batch axis."""
    x = helper.make_tensor_value_info("text__x", TensorProto.FLOAT, ["batch", 3])
    probs = helper.make_tensor_value_info("probs_level0", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["text__x", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs_level0"], axis=1),
        ],
        "tiny",
        [x],
        [probs],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path


def expected(x: np.ndarray) -> np.ndarray:
    logits = x @ WEIGHTS
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_cpu_session_runs_batches_of_any_size(tiny_model: Path) -> None:
    session = create_session(tiny_model, providers="cpu", threads=1)
    assert session.providers == [CPU] and session.device == "cpu"
    assert session.input_names == ["text__x"] and session.output_names == ["probs_level0"]
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 3)).astype(np.float32)
        out = session.run({"text__x": x, "unused__mask": np.ones(batch, np.float32)})
        np.testing.assert_allclose(out["probs_level0"], expected(x), rtol=1e-5)


def test_thread_count_is_applied(tiny_model: Path) -> None:
    assert inference.session_options(3).intra_op_num_threads == 3
    session = create_session(tiny_model, providers="cpu", threads=3)
    assert session._session.get_session_options().intra_op_num_threads == 3


def test_auto_without_gpu_uses_cpu(tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="prodcat.model.inference"):
        session = create_session(tiny_model, providers="auto")
    assert session.providers[0] == CPU
    assert "runs on CPUExecutionProvider" in caplog.text


def test_listed_but_unusable_cuda_falls_back_to_cpu(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime-gpu on a GPU-less host lists CUDA; the session tells the truth."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with caplog.at_level(logging.INFO, logger="prodcat.model.inference"):
        session = create_session(tiny_model, providers="auto", threads=1)
    assert session.providers == [CPU] and not session.uses_cuda
    assert "was not taken" in caplog.text or "CUDA session failed" in caplog.text


def test_cuda_required_but_missing_is_a_clear_error(tiny_model: Path) -> None:
    with pytest.raises(InferenceSetupError, match="providers=cuda"):
        create_session(tiny_model, providers="cuda")


def test_missing_input_is_refused(tiny_model: Path) -> None:
    session = create_session(tiny_model, providers="cpu")
    with pytest.raises(ValueError, match="text__x"):
        session.run({"other": np.zeros((1, 3), np.float32)})


def test_bad_files_and_choices(tmp_path: Path) -> None:
    with pytest.raises(InferenceSetupError, match="does not exist"):
        create_session(tmp_path / "nope.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(InferenceSetupError, match="cannot load"):
        create_session(broken, providers="cpu")
    with pytest.raises(InferenceSetupError, match="providers must be one of"):
        create_session(broken, providers="tpu")
