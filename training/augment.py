"""Photo augmentation for fine-tuning an image encoder: flip, crop, colour jitter.

Applied to a batch of encoder inputs (already normalised per channel, as ``featurize``
makes them), so it needs no decoding and works for any normalisation: a shift is a
brightness change, a scale about the image's mean a contrast change, a blend with the
channel mean a saturation change. Fine-tuning caches the frozen early layers' outputs of
a few augmented copies of each photo (``training.feature_cache``), copy 0 unaugmented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as functional


@dataclass(frozen=True)
class Augmentation:
    flip: float = 0.5  # chance of a horizontal flip
    min_crop: float = 0.75  # smallest side of the random square crop, as a share of the side
    brightness: float = 0.2  # shift, in units of the inputs' half range
    contrast: float = 0.2  # relative scale about the image's mean
    saturation: float = 0.2  # relative blend towards / away from grey

    def describe(self) -> dict[str, float]:
        return asdict(self)

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A randomly augmented copy of ``pixels`` (batch, channels, height, width)."""
        n, _, height, width = pixels.shape

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, 1, 1, 1, generator=generator)

        out = torch.stack([self._crop(image, height, width, generator) for image in pixels])
        flip = torch.rand(n, generator=generator) < self.flip
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
        grey = out.mean(dim=1, keepdim=True)
        out = grey + (out - grey) * uniform(1 - self.saturation, 1 + self.saturation)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * uniform(1 - self.contrast, 1 + self.contrast)
        return out + uniform(-self.brightness, self.brightness)

    def _crop(
        self, image: torch.Tensor, height: int, width: int, generator: torch.Generator
    ) -> torch.Tensor:
        """A random square-ish crop (same share of each side) resized back to the input."""
        share = self.min_crop + (1 - self.min_crop) * float(torch.rand(1, generator=generator))
        h, w = max(1, round(height * share)), max(1, round(width * share))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        crop = image[:, top : top + h, left : left + w].unsqueeze(0)
        return functional.interpolate(
            crop, size=(height, width), mode="bilinear", align_corners=False
        )[0]
