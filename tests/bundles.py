"""Model bundles for the tests: trained once by the project's own training code, then cached.

Kept apart from the harness (servers, topic readers): these train real models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from repo import REPO_ROOT

from prodcat.core.settings import Settings
from prodcat.model.bundle import BundleError, ModelBundle


def cached_bundle(name: str, spec: Callable[[Path, Path], Any]) -> Path:
    """A bundle trained once by the project's own training code, then reused from the cache.

    ``spec(out, features_cache)`` returns the ``prodcat.training.recipe.TrainSpec`` to run when
    ``<cache_dir>/test-bundles/<name>`` holds no loadable bundle (first run, or after a
    plugin change made the cached one unservable).
    """
    from prodcat.training.recipe import run_training

    cache = REPO_ROOT / Settings().cache_dir
    out = cache / "test-bundles" / name
    try:
        ModelBundle.load(out)
        return out
    except BundleError:
        pass
    run_training(spec(out, cache / "features"))
    return out


# The small photo models' validation split has about 60 rows, where the default tolerance
# (0.2 points: less than one row) leaves no safe threshold; 5 points gives them a cascade
# that decides most products by the title and sends the rest to the photo, which is what
# the serving tests need to see.
SMALL_CASCADE_TOLERANCE = 0.05


def photo_bundle(data_dir: Path, rows: int = 600, *, bundle_format: int = 2) -> Path:
    """hashgram titles + frozen EfficientNet-Lite0 photos on the first ``rows`` fashion
    rows with a photo (format 2 with a cascade, or format 1), trained once, evaluated on
    its test split and cached."""
    from prodcat.training.datasets import DatasetOptions
    from prodcat.training.recipe import TrainSpec
    from prodcat.training.trainer import TrainConfig

    def spec(out: Path, features: Path) -> TrainSpec:
        return TrainSpec(
            data=data_dir / "fashion" / "catalog.csv",
            out=out,
            dataset=DatasetOptions(with_images_only=True, limit=rows),
            encoders=[("text.hashgram", {}), ("image.efficientnet_lite0", {})],
            train=TrainConfig(epochs=8, batch_size=64, patience=4, lr=3e-3),
            bundle_format=bundle_format,
            cascade_tolerance=SMALL_CASCADE_TOLERANCE,
            cache_dir=features,
            overwrite=True,
        )

    return cached_bundle(f"fashion-photo-{rows}-v{bundle_format}", spec)


def hashgram_bundle(
    data_dir: Path,
    name: str,
    *,
    limit: int = 400,
    seed: int = 0,
    preprocessors: list[tuple[str, dict[str, Any]]] | None = None,
) -> Path:
    """A small text-only (``text.hashgram``) fashion bundle, trained once and cached.

    The fastest real model the project can train: the reliability tests need a model that
    classifies thousands of events per second, not an accurate one. ``seed`` varies the
    weights (and so the fingerprint) for the hot-reload tests; ``preprocessors`` replaces
    the default chain (to put a test plugin into the model).
    """
    from prodcat.training.datasets import DatasetOptions
    from prodcat.training.recipe import DEFAULT_PREPROCESSORS, TrainSpec
    from prodcat.training.trainer import TrainConfig

    def spec(out: Path, features: Path) -> TrainSpec:
        return TrainSpec(
            data=data_dir / "fashion" / "catalog.csv",
            out=out,
            dataset=DatasetOptions(limit=limit),
            preprocessors=list(preprocessors or DEFAULT_PREPROCESSORS),
            encoders=[("text.hashgram", {})],
            train=TrainConfig(epochs=6, batch_size=64, patience=3, lr=3e-3, seed=seed),
            cache_dir=features,
            evaluate=False,
            overwrite=True,
        )

    return cached_bundle(name, spec)
