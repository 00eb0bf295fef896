"""The best training recipe found for each shared catalogue that is not the default one.

``prodcat train --dataset NAME`` trains the recipe of ``NAME`` when it has one: its
preprocessors, encoders, head and training settings replace the command's defaults, and
any option given on the command line still wins (``--encoder`` replaces the recipe's
encoders). The recipe is recorded in the bundle's manifest (``training.recipe``) and its
model card, so a bundle says which recipe it was trained with and why it was picked.
The figures quoted in each ``why`` are measured in docs/benchmarks.md ("Other languages").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ComponentSpec = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class DatasetRecipe:
    """What ``prodcat train --dataset NAME`` trains when no option says otherwise."""

    dataset: str
    why: str
    preprocessors: list[ComponentSpec]
    encoders: list[ComponentSpec]
    head: ComponentSpec
    # training settings: prodcat train option names (dashes as underscores) that are also
    # TrainConfig fields -> value
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# A linear softmax layer over the (layer-normalised) text vector: with tens of thousands of
# n-gram buckets the hidden layer of the default head only overfits.
LINEAR: ComponentSpec = ("head.mlp", {"hidden": [], "dropout": 0.0, "input_norm": False})
# A linear model over L2-normalised hashed n-gram counts, started small: TF-IDF + a linear
# classifier, learnt end to end.
HASHGRAM: dict[str, Any] = {"dim": 128, "weighting": "l2", "init_std": 0.01}
# Training settings of a text-only catalogue: no photo to fall back on, so titles are never
# hidden or stripped of their category words (those exist to make the photo matter).
TEXT_ONLY: dict[str, Any] = {
    "modality_dropout": 0.0,
    "category_word_dropout": 0.0,
    "title_dropout": 0.0,
    "epochs": 20,
    "patience": 4,
}
WHOLE_PRODUCT = ["title", "brand", "description"]
# Title text as shops write it, NFKC-folded (full-width forms to ASCII) by text.normalize.
NORMALIZE: ComponentSpec = ("text.normalize", {})

RECIPES: dict[str, DatasetRecipe] = {
    "lianshang_zh": DatasetRecipe(
        dataset="lianshang_zh",
        why=(
            "Chinese titles without spaces: hashed character 1-3-grams (every Han character "
            "a token, so word n-grams are character n-grams) beat the character LSTM and "
            "USE multilingual, and adding USE beside them gains nothing"
        ),
        preprocessors=[NORMALIZE],
        encoders=[("text.hashgram", {**HASHGRAM, "word_ngrams": 3})],
        head=LINEAR,
        options=TEXT_ONLY,
    ),
    "cdiscount_fr": DatasetRecipe(
        dataset="cdiscount_fr",
        why=(
            "French title + brand + description: hashed word and character n-grams carry "
            "the brand and model tokens, USE multilingual adds the meaning of the text; "
            "together 1 point better at levels 1 and 2 than the n-grams alone, which serve "
            "7 times faster (override with --encoder to pick them alone)"
        ),
        preprocessors=[NORMALIZE],
        encoders=[
            ("text.hashgram", {**HASHGRAM, "fields": WHOLE_PRODUCT, "max_ids": 512}),
            ("text.use_multilingual", {"fields": WHOLE_PRODUCT}),
        ],
        head=LINEAR,
        options=TEXT_ONLY,
    ),
}


def recipe_for(dataset: str | None) -> DatasetRecipe | None:
    """The recipe of a shared data set by name, or None (the command's defaults apply)."""
    return RECIPES.get(dataset) if dataset else None


def apply_recipe(
    recipe: DatasetRecipe, options: dict[str, Any], given: set[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` with the recipe's values for every option not in ``given`` (those set on
    the command line), and the manifest's record of the recipe and what overrode it.

    ``options`` holds ``preprocessors``, ``encoders`` and ``head`` as parsed component specs
    beside the command's plain options.
    """
    parts = {
        "preprocessors": recipe.preprocessors,
        "encoders": recipe.encoders,
        "head": recipe.head,
        **recipe.options,
    }
    merged = {**options, **{name: value for name, value in parts.items() if name not in given}}
    record = {**recipe.to_json(), "overridden": sorted(set(parts) & given)}
    return merged, record


def training_spec(recipe: DatasetRecipe, data: Path, out: Path, cache_dir: Path | None) -> Any:
    """The :class:`prodcat.training.recipe.TrainSpec` of ``prodcat train --dataset NAME``
    with no other option (the demo trains a missing model this way)."""
    from prodcat.training.recipe import TrainSpec
    from prodcat.training.trainer import TrainConfig

    return TrainSpec(
        data=data,
        out=out,
        preprocessors=list(recipe.preprocessors),
        encoders=list(recipe.encoders),
        head=recipe.head,
        train=TrainConfig(**recipe.options),
        cache_dir=cache_dir,
        overwrite=True,
        recipe={**recipe.to_json(), "overridden": []},
    )
