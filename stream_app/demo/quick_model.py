"""The demo's model: the bundle in the model folder, or a quick one trained on the spot."""

from __future__ import annotations

from pathlib import Path

from prodcat.core.settings import Settings
from prodcat.model.bundle import BundleError, ModelBundle


def have_model(model_dir: Path) -> bool:
    try:
        ModelBundle.load(model_dir)
    except BundleError:
        return False
    return True


def train_quick_model(settings: Settings, model_dir: Path, rows: int) -> None:
    """Frozen pretrained encoders (MiniLM titles, EfficientNet-Lite0 photos) + an MLP head.

    The encoders are frozen, so their features are computed once (cached under the cache
    dir) and only the head trains: minutes on a laptop CPU, with progress bars.
    """
    from prodcat.training.datasets import DatasetOptions
    from prodcat.training.recipe import TrainSpec, run_training
    from prodcat.training.trainer import TrainConfig

    run_training(
        TrainSpec(
            data=settings.data_path() / "fashion" / "catalog.csv",
            out=model_dir,
            dataset=DatasetOptions(with_images_only=True, limit=rows),
            train=TrainConfig(epochs=15, patience=4),
            cache_dir=Path(settings.cache_dir) / "features",
            overwrite=True,
        )
    )


def train_recipe_model(settings: Settings, model_dir: Path, dataset: str, data: Path) -> None:
    """What ``prodcat train --dataset NAME`` trains (the data set's recipe), into ``model_dir``."""
    from prodcat.training.dataset_recipes import RECIPES, training_spec
    from prodcat.training.recipe import run_training

    cache = Path(settings.cache_dir)
    run_training(training_spec(RECIPES[dataset], data, model_dir, cache))
