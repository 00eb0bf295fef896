"""Built-in encoders' torch modules: shapes, frozen semantics, ONNX export parity."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from encoder_cases import (  # noqa: F401 - the *_fixture names are pytest fixtures
    SMALL_HASHGRAM,
    SMALL_LSTM,
    SMALL_RESNET,
    products_fixture,
    sources_fixture,
)

from prodcat.contract.components import MASK_INPUT, Encoder
from prodcat.plugins.image_encoders import (
    TORCHVISION_DIMS,
    EfficientNetLite0Encoder,
    TorchvisionEncoder,
)
from prodcat.plugins.text_encoders import HashgramEncoder, LstmEncoder, MiniLMEncoder

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")


class Positional(torch.nn.Module):
    """Calls an encoder module with positional inputs, as an ONNX graph feeds them."""

    def __init__(self, module: Any, names: list[str]) -> None:
        super().__init__()
        self.module, self.names = module, names

    def forward(self, *inputs: Any) -> Any:
        return self.module(**dict(zip(self.names, inputs, strict=True)))


def batch_of(encoder: Encoder, products: list[dict]) -> dict[str, np.ndarray]:
    rows = [encoder.featurize(product) for product in products]
    return {name: np.stack([row[name] for row in rows]) for name in rows[0] if name != MASK_INPUT}


def export_and_compare(
    encoder: Encoder,
    module: Any,
    products: list[dict],
    path: Path,
    example: list[dict] | None = None,
) -> np.ndarray:
    """Export (traced on ``example``, default the first two products) with a dynamic batch
    axis, run the graph on all ``products``, and compare with torch."""
    module.eval()
    names = [spec.name for spec in encoder.input_spec() if spec.name != MASK_INPUT]
    example_batch = batch_of(encoder, example or products[:2])
    torch.onnx.export(
        Positional(module, names).eval(),
        tuple(torch.from_numpy(example_batch[name]) for name in names),
        str(path),
        input_names=names,
        output_names=["embedding"],
        dynamic_axes={name: {0: "batch"} for name in [*names, "embedding"]},
        opset_version=17,
        dynamo=False,
    )
    batch = batch_of(encoder, products)
    with torch.no_grad():
        expected = module(**{name: torch.from_numpy(batch[name]) for name in names}).numpy()
    assert expected.shape == (len(products), encoder.output_dim)
    assert np.isfinite(expected).all()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, batch)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    return expected


@pytest.fixture(scope="module")
def minilm_module() -> Any:
    return MiniLMEncoder().build_module()


@pytest.fixture(scope="module")
def lite0_module() -> Any:
    return EfficientNetLite0Encoder().build_module()


def test_hashgram_module_exports(products: list[dict], tmp_path: Path) -> None:
    encoder = HashgramEncoder(SMALL_HASHGRAM)
    module = encoder.build_module()
    out = export_and_compare(encoder, module, products, tmp_path / "hashgram.onnx")
    empty = [i for i, p in enumerate(products) if not p["title"]]
    assert empty and not out[empty].any()
    assert not encoder.frozen and any(p.requires_grad for p in module.parameters())


def test_lstm_module_exports(products: list[dict], tmp_path: Path) -> None:
    encoder = LstmEncoder(SMALL_LSTM)
    out = export_and_compare(encoder, encoder.build_module(), products, tmp_path / "lstm.onnx")
    assert out.shape[1] == 2 * SMALL_LSTM["hidden_size"]


def test_minilm_module_exports_and_embeds_like_sentence_transformers(
    minilm_module: Any, products: list[dict], tmp_path: Path
) -> None:
    encoder = MiniLMEncoder()
    # Traced on titles that fill all 32 tokens: the graph must still apply the padding mask.
    unpadded = [{"title": "word " * 40}, {"title": "long title " * 20}]
    out = export_and_compare(
        encoder, minilm_module, products, tmp_path / "minilm.onnx", example=unpadded
    )
    present = [i for i, p in enumerate(products) if p["title"]]
    np.testing.assert_allclose(np.linalg.norm(out[present], axis=1), 1.0, atol=1e-5)
    # Two fashion titles are closer to each other than to a fridge freezer offer.
    assert out[0] @ out[1] > out[0] @ out[3]


def test_efficientnet_module_exports(
    lite0_module: Any, products: list[dict], tmp_path: Path
) -> None:
    encoder = EfficientNetLite0Encoder()
    photos = [p for p in products if "_image" in p][:3]
    out = export_and_compare(encoder, lite0_module, photos, tmp_path / "lite0.onnx")
    assert (out >= 0).all() and out.std() > 0  # ReLU6 features of real photos


def test_torchvision_module_exports(products: list[dict], tmp_path: Path) -> None:
    encoder = TorchvisionEncoder(SMALL_RESNET)
    photos = [p for p in products if "_image" in p][:3]
    export_and_compare(encoder, encoder.build_module(), photos, tmp_path / "resnet.onnx")


def assert_cacheable(module: Any, inputs: dict[str, Any]) -> None:
    """A frozen module: no trainable weights and the same output in train mode as in eval."""
    assert not any(p.requires_grad for p in module.parameters())
    module.eval()
    with torch.no_grad():
        expected = module(**inputs)
        module.train()
        np.testing.assert_array_equal(module(**inputs).numpy(), expected.numpy())
    module.eval()


def tensors(encoder: Encoder, products: list[dict]) -> dict[str, Any]:
    return {name: torch.from_numpy(a) for name, a in batch_of(encoder, products).items()}


def test_frozen_pretrained_encoders_are_cacheable(
    minilm_module: Any, lite0_module: Any, products: list[dict]
) -> None:
    assert MiniLMEncoder().frozen and EfficientNetLite0Encoder().frozen
    assert_cacheable(minilm_module, tensors(MiniLMEncoder(), products))
    photos = [p for p in products if "_image" in p][:2]
    assert_cacheable(lite0_module, tensors(EfficientNetLite0Encoder(), photos))
    frozen_resnet = TorchvisionEncoder({**SMALL_RESNET, "trainable": False})
    assert frozen_resnet.frozen and not TorchvisionEncoder().frozen
    assert_cacheable(frozen_resnet.build_module(), tensors(frozen_resnet, photos))


def test_fine_tuning_unfreezes_only_the_top_layers() -> None:
    encoder = MiniLMEncoder({"trainable_layers": 2})
    assert not encoder.frozen
    module = encoder.build_module().train()
    layers = module.model.encoder.layer
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[3].parameters())
    assert not any(p.requires_grad for p in module.model.embeddings.parameters())
    assert layers[-1].training and not layers[0].training and not module.model.embeddings.training

    lite = EfficientNetLite0Encoder({"trainable_blocks": 2})
    assert not lite.frozen
    net = lite.build_module().train().net
    assert all(p.requires_grad for p in net._blocks[-1].parameters())
    assert all(p.requires_grad for p in net._conv_head.parameters())
    assert not any(p.requires_grad for p in net._blocks[-3].parameters())
    assert net._blocks[-1].training and not net._blocks[0].training
    with pytest.raises(ValueError, match="trainable_layers"):
        MiniLMEncoder({"trainable_layers": 7}).build_module()


def test_torchvision_feature_table_matches_torchvision() -> None:
    from prodcat.plugins.image_modules import torchvision_feature_dim

    for arch, dim in TORCHVISION_DIMS.items():
        assert torchvision_feature_dim(arch) == dim, arch
    assert TorchvisionEncoder({"arch": "shufflenet_v2_x0_5"}).output_dim == 1024
    with pytest.raises(ValueError, match="unknown arch 'resnet9000'.*resnet18"):
        TorchvisionEncoder({"arch": "resnet9000"}).build_module()


def test_torchvision_loads_local_weights_else_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from torchvision.models import resnet18

    source = resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    loaded = TorchvisionEncoder({**SMALL_RESNET, "weights_path": str(tmp_path / "resnet18.pth")})
    net = loaded.build_module().net
    assert torch.equal(net.conv1.weight, source.conv1.weight)
    assert torch.equal(net.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)

    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks"):
        TorchvisionEncoder({"weights_path": str(tmp_path / "partial.pth")}).build_module()

    with caplog.at_level(logging.WARNING):
        TorchvisionEncoder(SMALL_RESNET).build_module()
    assert "random weights" in caplog.text
