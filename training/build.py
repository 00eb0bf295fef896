"""What a bundle is built from: the trained model and the rows to check it on.

Both formats' builders take one :class:`BuildInputs` (``prodcat.training.bundle_writer``
for format 1, ``prodcat.training.split_bundle`` for format 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prodcat.contract.components import Product
from prodcat.contract.pipeline import Pipeline

if TYPE_CHECKING:  # torch: only training builds bundles, evaluation reads the defaults
    from prodcat.training.fusion import FusionModel

DEFAULT_TOLERANCE = 0.002  # the cascade: each level at most 0.2 accuracy points below fusing


@dataclass
class Validation:
    """Validation rows (products and their label indices), for int8 and the cascade."""

    products: Sequence[Product]
    labels: np.ndarray


@dataclass
class BuildInputs:
    model: FusionModel
    pipeline: Pipeline
    parity_batch: dict[str, np.ndarray]  # featurized validation rows the export is checked on
    validation: Validation | None = None
    calibration_products: Sequence[Product] = ()  # training rows for static int8
    quantize: bool = False
    cascade_tolerance: float = DEFAULT_TOLERANCE
    threads: int = 2
