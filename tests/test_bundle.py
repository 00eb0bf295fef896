"""Decoding a bundle's outputs: the served path is always one the taxonomy contains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from prodcat.model.bundle import FORMAT, BundleError, ModelBundle, _per_level
from prodcat.model.decoding import decode_paths, path_index

LEVELS = ["department", "type"]
LABELS = [["Apparel", "Footwear"], ["Jeans", "Shirts", "Sandals"]]
PATHS = [["Apparel", "Jeans"], ["Apparel", "Shirts"], ["Footwear", "Sandals"]]


def test_path_beats_inconsistent_argmaxes() -> None:
    # argmax per level says Apparel + Sandals, a combination never seen in training
    probs = [np.array([[0.55, 0.45]]), np.array([[0.2, 0.1, 0.7]])]
    [item] = decode_paths(probs, LEVELS, LABELS, path_index(PATHS, LABELS))
    chosen = [entry["label"] for entry in item["category_path"]]
    assert chosen == ["Footwear", "Sandals"]  # 0.45*0.7 > 0.55*0.2
    assert [e["score"] for e in item["category_path"]] == pytest.approx([0.45, 0.7])
    assert item["path_score"] == pytest.approx(0.45 * 0.7)
    assert item["top_k"]["type"][0] == {"label": "Sandals", "score": pytest.approx(0.7)}
    assert item["top_k"]["department"][0]["label"] == "Apparel"


def test_top_k_is_sorted_and_capped() -> None:
    probs = [np.array([[0.9, 0.1]]), np.array([[0.5, 0.3, 0.2]])]
    [item] = decode_paths(probs, LEVELS, LABELS, path_index(PATHS, LABELS), top_k=2)
    assert [t["label"] for t in item["top_k"]["type"]] == ["Jeans", "Shirts"]
    assert len(item["top_k"]["department"]) == 2


def test_outputs_by_name_or_position() -> None:
    names = ["probs__department", "probs__type"]
    a, b = np.ones((2, 2)), np.ones((2, 3))
    by_name = _per_level({names[1]: b, names[0]: a}, names)
    assert [x.shape for x in by_name] == [(2, 2), (2, 3)]
    with pytest.raises(ValueError, match="probs__type"):
        _per_level({names[0]: a}, names)
    with pytest.raises(ValueError, match="one per level"):
        _per_level([a], names)


def _softmax_rows(n_classes: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.float64, (3, n_classes), elements=st.floats(0.001, 1.0)).map(
        lambda x: x / x.sum(axis=1, keepdims=True)
    )


@settings(max_examples=60, deadline=None)
@given(_softmax_rows(2), _softmax_rows(3))
def test_decoded_path_is_the_most_probable_valid_one(first: np.ndarray, second: np.ndarray) -> None:
    items = decode_paths([first, second], LEVELS, LABELS, path_index(PATHS, LABELS))
    for row, item in enumerate(items):
        chosen = [entry["label"] for entry in item["category_path"]]
        assert chosen in PATHS
        best = max(
            first[row, LABELS[0].index(d)] * second[row, LABELS[1].index(t)] for d, t in PATHS
        )
        assert item["path_score"] == pytest.approx(best)


def test_every_taxonomy_path_is_reachable() -> None:
    for path in PATHS:
        probs = [
            np.array([[1.0 if label == part else 0.0 for label in labels]])
            for labels, part in zip(LABELS, path, strict=True)
        ]
        [item] = decode_paths(probs, LEVELS, LABELS, path_index(PATHS, LABELS))
        assert [e["label"] for e in item["category_path"]] == path


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a model bundle"):
        ModelBundle.load(tmp_path)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(BundleError, match=FORMAT):
        ModelBundle.load(tmp_path)


def test_path_index_matches_labels() -> None:
    index = path_index(PATHS, LABELS)
    for row, path in zip(index, PATHS, strict=True):
        assert [LABELS[lv][i] for lv, i in enumerate(row)] == path
    assert len({tuple(r) for r in index}) == len(PATHS)
