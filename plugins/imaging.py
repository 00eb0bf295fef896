"""Image to model input: resize, centre-crop, scale, normalise (numpy + Pillow only).

Shared by every built-in image encoder so they differ only in size and normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGNED_UNIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # maps [0, 1] to [-1, 1]


def resize_and_crop(image: Image.Image, resize: int, size: int) -> Image.Image:
    """Scale the shorter side to ``resize`` (bilinear), then cut the centre ``size`` square.

    ``reducing_gap`` lets Pillow shrink a large photo by an integer factor first (about
    twice as fast on a 12-megapixel photo, no visible difference at 224 pixels).
    """
    if resize < size:
        raise ValueError(f"resize ({resize}) must be at least the crop size ({size})")
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    scale = resize / min(width, height)
    scaled = (max(size, round(width * scale)), max(size, round(height * scale)))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_array(
    image: Image.Image,
    size: int,
    resize: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """``image`` as a float32 CHW array of ``size``², each channel ``(x / 255 - mean) / std``."""
    pixels = np.asarray(resize_and_crop(image, resize, size), dtype=np.float32) / 255.0
    normalised = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))
