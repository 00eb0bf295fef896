"""Built-in heads: output shapes per level, losses, learning, the ensemble, ONNX export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prodcat.contract.components import Head
from prodcat.contract.manager import PluginManager
from prodcat.contract.registry import UnknownComponentError
from prodcat.plugins.heads import EnsembleHead, LinearSvmHead, MlpHead

torch = pytest.importorskip("torch")
functional = torch.nn.functional

LEVELS = [3, 5, 7]
INPUT_DIM = 12


def ensemble() -> EnsembleHead:
    members = [
        {"name": "head.mlp", "config": {"hidden": [16], "dropout": 0.0}},
        {"name": "head.linear_svm"},
    ]
    return EnsembleHead({"members": members})


HEADS: dict[str, Callable[[], Head]] = {
    "mlp": lambda: MlpHead({"hidden": [32, 16], "dropout": 0.1}),
    "linear_svm": LinearSvmHead,
    "ensemble": ensemble,
}


@pytest.fixture(autouse=True)
def _manager(plugin_manager: PluginManager) -> PluginManager:
    """The ensemble builds its members through the (fresh) process-wide plugin manager."""
    return plugin_manager


def synthetic(seed: int, rows: int = 96) -> tuple[Any, list[Any]]:
    """Inputs and, per level, targets from a hidden linear rule (learnable by every head)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, INPUT_DIM, generator=generator)
    targets = [(x @ torch.randn(INPUT_DIM, size, generator=generator)).argmax(1) for size in LEVELS]
    return x, targets


@pytest.mark.parametrize("kind", HEADS)
def test_outputs_have_one_tensor_per_level(kind: str) -> None:
    head = HEADS[kind]()
    outputs = head.build_module(INPUT_DIM, LEVELS).eval()(torch.randn(4, INPUT_DIM))
    assert isinstance(outputs, tuple)
    assert [tuple(level.shape) for level in outputs] == [(4, size) for size in LEVELS]


@pytest.mark.parametrize("kind", HEADS)
def test_loss_is_finite_and_decreases(kind: str) -> None:
    torch.manual_seed(0)
    head = HEADS[kind]()
    module = head.build_module(INPUT_DIM, LEVELS).train()
    optimiser = torch.optim.AdamW(module.parameters(), lr=0.02)
    x, targets = synthetic(seed=1)
    losses = []
    for _ in range(50):
        loss = head.loss(module(x), targets)
        assert torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_hinge_loss_ignores_unknown_targets() -> None:
    head = LinearSvmHead()
    logits = [torch.randn(6, size, requires_grad=True) for size in LEVELS]
    targets = [torch.tensor([0, -1, 2, -1, 1, 0]) for _ in LEVELS]
    loss = head.loss(logits, targets)
    known = targets[0] >= 0
    expected = sum(
        functional.multi_margin_loss(level[known], target[known])
        for level, target in zip(logits, targets, strict=True)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    for level in logits:
        assert not level.grad[~known].any() and level.grad[known].any()
    # A level with no known target adds nothing and keeps the graph usable.
    unknown = [torch.full((6,), -1) for _ in LEVELS]
    nothing = head.loss(logits, unknown)
    assert nothing.item() == 0.0
    nothing.backward()


def test_hinge_margin_is_configurable() -> None:
    logits = [torch.tensor([[2.0, 1.5, 0.0]])]
    target = [torch.tensor([0])]
    assert LinearSvmHead().loss(logits, target).item() == pytest.approx(0.5 / 3)
    assert LinearSvmHead({"margin": 0.25}).loss(logits, target).item() == 0.0


def test_ensemble_averages_member_probabilities() -> None:
    head = ensemble()
    module = head.build_module(INPUT_DIM, LEVELS).eval()
    x = torch.randn(5, INPUT_DIM)
    outputs = module(x)
    members = [member(x) for member in module.members]
    for level, output in enumerate(outputs):
        mean = torch.stack([functional.softmax(m[level], dim=-1) for m in members]).mean(0)
        torch.testing.assert_close(output.exp(), mean)
        torch.testing.assert_close(functional.softmax(output, dim=-1), mean)


def test_ensemble_loss_is_the_sum_of_member_losses() -> None:
    head = ensemble()
    module = head.build_module(INPUT_DIM, LEVELS).eval()
    x, targets = synthetic(seed=2, rows=8)
    outputs = module(x)
    expected = sum(
        member.loss(member_module(x), targets)
        for member, member_module in zip(head.members, module.members, strict=True)
    )
    # The caller may rebuild the tuple (as the fusion model does); the loss still finds them.
    assert head.loss(tuple(list(outputs)), targets).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="latest forward"):
        head.loss(tuple(level.clone() for level in outputs), targets)


def test_ensemble_config_records_members_in_full_and_round_trips() -> None:
    head = ensemble()
    assert head.config["members"][1] == {
        "name": "head.linear_svm",
        "config": LinearSvmHead().config,
    }
    again = EnsembleHead(head.config)
    assert again.config == head.config and again.fingerprint() == head.fingerprint()
    assert [m.name for m in EnsembleHead().members] == ["head.mlp", "head.linear_svm"]


def test_ensemble_refuses_bad_members() -> None:
    with pytest.raises(UnknownComponentError, match="head.nope.*available: .*head.mlp"):
        EnsembleHead({"members": [{"name": "head.nope"}]})
    with pytest.raises(ValueError, match="non-empty list"):
        EnsembleHead({"members": []})
    with pytest.raises(ValueError, match="unknown config"):
        EnsembleHead({"members": [{"name": "head.mlp", "config": {"hiden": [4]}}]})


def test_ensemble_exports_to_onnx_with_dynamic_batch(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    module = ensemble().build_module(INPUT_DIM, LEVELS).eval()
    names = [f"level{index}" for index in range(len(LEVELS))]
    torch.onnx.export(
        module,
        (torch.randn(2, INPUT_DIM),),
        str(tmp_path / "head.onnx"),
        input_names=["fused"],
        output_names=names,
        dynamic_axes={name: {0: "batch"} for name in ["fused", *names]},
        opset_version=17,
        dynamo=False,
    )
    x = torch.randn(7, INPUT_DIM)
    session = onnxruntime.InferenceSession(
        str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {"fused": x.numpy()})
    with torch.no_grad():
        expected = module(x)
    for level, output in zip(expected, got, strict=True):
        np.testing.assert_allclose(output, level.numpy(), atol=1e-5)
