"""The text-first cascade: when the cheap encoders' answer is good enough, stop there.

A split bundle (format 2) may carry a ``cascade`` entry, calibrated at training time on the
validation split (``prodcat.training.cascade``)::

    {"first": ["text_minilm"], "thresholds": {"masterCategory": 0.62, ...}, ...}

``first`` names the encoders of the first stage (every encoder whose modality is not
``image``). A product that has a first-stage modality *and* a later one (a title and a
photo) is answered first by the head with only the first stage's embeddings (the later
modalities masked, exactly as a product without a photo); when the served category path's
score at every level reaches that level's threshold, that answer stands (decided by
``text``). Otherwise the later encoders run and the head answers with everything
(``full``). A product with nothing to add (no photo) or nothing to start from (no title)
goes straight to the full path. The same rule serves in the worker, in ``prodcat
evaluate`` and in calibration, so the accuracy measured is the accuracy served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TEXT = "text"
FULL = "full"
DECIDED_BY = (TEXT, FULL)


@dataclass(frozen=True)
class Cascade:
    """The first-stage encoders and the per-level score thresholds of a bundle."""

    first: tuple[str, ...]
    thresholds: tuple[float, ...]  # one per taxonomy level, coarse to fine

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Cascade | None:
        """The bundle's cascade, or None when it has none (format 1, or nothing to skip)."""
        entry = manifest.get("cascade")
        if not entry or not entry.get("thresholds"):  # calibration found no safe threshold
            return None
        return cls(
            tuple(entry["first"]),
            tuple(float(entry["thresholds"][level]) for level in manifest["levels"]),
        )

    def later(self, slugs: Sequence[str]) -> list[str]:
        """The encoders the full path adds to the first stage's."""
        return [slug for slug in slugs if slug not in self.first]

    def applies(self, present: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per row: True when the row has a first-stage modality and a later one.

        ``present``: slug -> bool array (the encoder's mask was 1).
        """
        rows = len(next(iter(present.values())))
        first = np.zeros(rows, dtype=bool)
        later = np.zeros(rows, dtype=bool)
        for slug, mask in present.items():
            if slug in self.first:
                first |= mask
            else:
                later |= mask
        return first & later

    def stops(self, path_scores: np.ndarray) -> np.ndarray:
        """Per row: True when the path's score at every level reaches the threshold.

        ``path_scores``: (rows, levels) probability of the served path's label per level.
        """
        return np.all(np.asarray(path_scores) >= np.asarray(self.thresholds), axis=1)

    def stops_at(self, category_path: Sequence[Mapping[str, Any]]) -> bool:
        """:meth:`stops` for one decoded answer (its ``category_path``)."""
        scores = np.asarray([[step["score"] for step in category_path]])
        return bool(self.stops(scores)[0])


def chosen_scores(probs: Sequence[np.ndarray], paths: np.ndarray, best: np.ndarray) -> np.ndarray:
    """(rows, levels): each level's probability of the label on the chosen path ``best``."""
    chosen = paths[best]
    return np.stack(
        [np.asarray(p)[np.arange(len(best)), chosen[:, lv]] for lv, p in enumerate(probs)], axis=1
    )
