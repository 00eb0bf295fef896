"""Built-in image encoders: EfficientNet-Lite0 (pretrained) and any torchvision architecture.

``featurize`` reads ``product["_image"]`` (an RGB ``PIL.Image`` put there by the
``image.decode`` preprocessor; absent when the product has no usable photo) and needs
numpy + Pillow only. The torch modules live in ``plugins.image_modules``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from prodcat import Encoder, InputSpec, Product, Register, hookimpl, mask_spec, present
from prodcat.plugins.imaging import IMAGENET_MEAN, IMAGENET_STD, SIGNED_UNIT, image_array

IMAGE_KEY = "_image"
EFFICIENTNET_LITE0_DIM = 1280
# Penultimate feature width of common torchvision architectures, so ``output_dim`` needs
# no torch in the worker; other architectures are measured by building them on torch's
# meta device (tests check this table against torchvision).
TORCHVISION_DIMS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "vgg11": 4096,
    "vgg16": 4096,
    "vgg19": 4096,
    "mobilenet_v2": 1280,
    "mobilenet_v3_small": 1024,
    "mobilenet_v3_large": 1280,
    "efficientnet_b0": 1280,
    "densenet121": 1024,
    "convnext_tiny": 768,
}


class ImageEncoder(Encoder):
    """Input ``pixels``: float32 (3, ``image_size``, ``image_size``), normalised per channel.

    The photo's shorter side is scaled to ``resize`` and the centre ``image_size`` square
    kept (``resize`` = ``image_size`` keeps the whole width of a square photo).
    """

    modality: ClassVar[str] = "image"
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    defaults: ClassVar[dict[str, Any]] = {"image_size": 224, "resize": 224}

    def input_spec(self) -> list[InputSpec]:
        size = self.config["image_size"]
        return [InputSpec("pixels", "float32", (3, size, size)), mask_spec()]

    def has_modality(self, product: Product) -> bool:
        return product.get(IMAGE_KEY) is not None

    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        image = product.get(IMAGE_KEY)
        if image is None:
            return self.missing()
        pixels = image_array(
            image, self.config["image_size"], self.config["resize"], self.mean, self.std
        )
        return present({"pixels": pixels})


class EfficientNetLite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 with its ImageNet weights; output = the 1280-d pooled features.

    Pixels are scaled to [-1, 1], as the weights were trained. The encoder's output is the
    backbone's own feature vector, with no projection inside: with ``trainable_blocks`` = 0
    (default) the module has no trainable weights, ``frozen`` is True and training may
    cache its output; the trainable projection belongs to the fusion model / head.
    ``trainable_blocks`` = N fine-tunes the top N of its 16 MBConv blocks plus the head
    convolution (then nothing may be cached).
    """

    name: ClassVar[str] = "image.efficientnet_lite0"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "pretrained EfficientNet-Lite0 (ImageNet), 1280-d features"
    mean, std = SIGNED_UNIT
    defaults: ClassVar[dict[str, Any]] = {**ImageEncoder.defaults, "trainable_blocks": 0}

    @property
    def output_dim(self) -> int:
        return EFFICIENTNET_LITE0_DIM

    @property
    def frozen(self) -> bool:
        return self.config["trainable_blocks"] == 0

    def build_module(self) -> Any:
        from prodcat.plugins.image_modules import EfficientNetLite0Module

        return EfficientNetLite0Module(self.config["image_size"], self.config["trainable_blocks"])


class TorchvisionEncoder(ImageEncoder):
    """Any torchvision classification architecture by name (``arch``: resnet18, vgg16...).

    Output = the penultimate features (the last Linear layer of the classifier removed).
    Weights come from ``weights_path`` (a local state dict) when given, otherwise random
    initialisation with a warning: nothing is ever downloaded. ``trainable`` = False
    freezes the backbone (sensible with pretrained weights; then ``frozen`` is True and
    features can be cached). ImageNet mean/std normalisation.
    """

    name: ClassVar[str] = "image.torchvision"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "torchvision architecture by name, penultimate features"
    defaults: ClassVar[dict[str, Any]] = {
        **ImageEncoder.defaults,
        "arch": "resnet18",
        "weights_path": None,
        "trainable": True,
    }

    @property
    def output_dim(self) -> int:
        arch = self.config["arch"]
        if arch in TORCHVISION_DIMS:
            return TORCHVISION_DIMS[arch]
        from prodcat.plugins.image_modules import torchvision_feature_dim

        return torchvision_feature_dim(arch)

    @property
    def frozen(self) -> bool:
        return not self.config["trainable"]

    def build_module(self) -> Any:
        from prodcat.plugins.image_modules import TorchvisionModule

        return TorchvisionModule(
            self.config["arch"], self.config["weights_path"], self.config["trainable"]
        )


@hookimpl
def register_encoders(register: Register) -> None:
    register(EfficientNetLite0Encoder)
    register(TorchvisionEncoder)
