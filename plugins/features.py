"""Helpers shared by the built-in encoders' ``featurize`` (numpy only)."""

from __future__ import annotations

import numpy as np

from stream_app.components import MASK_INPUT


def present(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` plus the mask of a present modality (1.0, float32, shape ``()``)."""
    return {**arrays, MASK_INPUT: np.array(1.0, dtype=np.float32)}
