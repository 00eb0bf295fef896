"""The cascade's rule and its calibration, and the cheaper photo decoding (draft mode).

Calibration is checked on hand-made probabilities, where the right threshold can be worked
out by hand; the trained bundles' cascades are exercised in tests/test_split_serving.py.
Draft decoding is checked on real fashion photos enlarged to shop size in a temp folder.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prodcat.contract.components import IMAGE_KEY, fingerprint_of
from prodcat.contract.manifest import from_manifest
from prodcat.model.cascade import Cascade, chosen_scores
from prodcat.plugins.imaging import SIGNED_UNIT, image_array
from prodcat.plugins.preprocessors import DecodeImage
from prodcat.training.cascade import FIRST_STAGE, calibrate_cascade
from prodcat.training.paths import FULL, PathProbs

LEVELS = ["department", "type"]
LABELS = {"department": ["A", "B"], "type": ["a1", "a2", "b1"]}
TAXONOMY = [["A", "a1"], ["A", "a2"], ["B", "b1"]]
ENCODERS = [{"slug": "text", "modality": "text"}, {"slug": "photo", "modality": "image"}]
MANIFEST = {"levels": LEVELS, "labels": LABELS, "taxonomy": {"paths": TAXONOMY}}


def one_row(path: int, confidence: float) -> list[np.ndarray]:
    """Probabilities whose served path is ``TAXONOMY[path]`` with ``confidence`` per level."""
    department = 0 if path < 2 else 1
    dep = np.full(2, (1 - confidence) / 1)
    dep[department] = confidence
    typ = np.full(3, (1 - confidence) / 2)
    typ[path] = confidence
    return [dep[None], typ[None]]


def answers(rows: list[tuple[int, float, int]]) -> tuple[PathProbs, np.ndarray]:
    """(first-stage path, its confidence, full path) per row; the truth is path 0 always."""
    text = [np.concatenate(p) for p in zip(*(one_row(t, c) for t, c, _ in rows), strict=True)]
    full = [np.concatenate(p) for p in zip(*(one_row(f, 0.99) for _, _, f in rows), strict=True)]
    present = {"text": np.ones(len(rows), bool), "photo": np.ones(len(rows), bool)}
    labels = np.zeros((len(rows), 2), dtype=np.int64)
    return PathProbs({FULL: full, FIRST_STAGE: text}, present), labels


def test_threshold_stops_at_the_first_row_the_title_gets_wrong() -> None:
    # sorted by confidence: right, right, WRONG (fused right), right, wrong
    rows = [(0, 0.95, 0), (0, 0.9, 0), (1, 0.8, 0), (0, 0.7, 0), (2, 0.6, 0)]
    probs, labels = answers(rows)
    entry = calibrate_cascade({**MANIFEST, "encoders": ENCODERS}, probs, labels, tolerance=0.0)
    assert entry is not None and entry["first"] == ["text"]
    assert entry["thresholds"] == {"department": 0.9, "type": 0.9}
    validation = entry["validation"]
    assert validation["rows"] == 5 and validation["decided_by_first_stage"] == 0.4
    assert validation["accuracy_drop"] == {"department": 0.0, "type": 0.0}
    # a tolerance of one row in five lets the third row through, but not the fifth
    looser = calibrate_cascade({**MANIFEST, "encoders": ENCODERS}, probs, labels, tolerance=0.2)
    assert looser is not None and looser["thresholds"]["type"] == pytest.approx(0.7)


def test_a_threshold_never_splits_rows_of_equal_confidence() -> None:
    rows = [(0, 0.9, 0), (0, 0.8, 0), (1, 0.8, 0)]
    probs, labels = answers(rows)
    entry = calibrate_cascade({**MANIFEST, "encoders": ENCODERS}, probs, labels, tolerance=0.0)
    assert entry is not None and entry["thresholds"]["type"] == 0.9


def test_no_threshold_when_the_most_confident_title_is_already_wrong() -> None:
    probs, labels = answers([(1, 0.99, 0), (0, 0.5, 0)])
    entry = calibrate_cascade({**MANIFEST, "encoders": ENCODERS}, probs, labels, tolerance=0.0)
    assert entry is not None and entry["thresholds"] is None
    manifest = {**MANIFEST, "cascade": entry}
    assert Cascade.from_manifest(manifest) is None  # the worker always fuses


def test_no_cascade_without_two_stages_or_rows_having_both() -> None:
    probs, labels = answers([(0, 0.9, 0)])
    text_only = [{"slug": "text", "modality": "text"}]
    assert calibrate_cascade({**MANIFEST, "encoders": text_only}, probs, labels) is None
    probs.present["photo"][:] = False  # no validation row has a photo
    assert calibrate_cascade({**MANIFEST, "encoders": ENCODERS}, probs, labels) is None


def test_the_rule_needs_every_level_and_both_stages() -> None:
    cascade = Cascade(("text",), (0.5, 0.8))
    scores = np.array([[0.9, 0.85], [0.9, 0.7], [0.4, 0.95]])
    assert cascade.stops(scores).tolist() == [True, False, False]
    assert cascade.stops_at([{"score": 0.6}, {"score": 0.8}])
    present = {"text": np.array([1, 1, 0], bool), "photo": np.array([1, 0, 1], bool)}
    assert cascade.applies(present).tolist() == [True, False, False]
    assert cascade.later(["text", "photo"]) == ["photo"]
    paths = np.array([[0, 0], [0, 1], [1, 2]])
    probs = one_row(1, 0.7)
    assert chosen_scores(probs, paths, np.array([1])).tolist() == [[0.7, 0.7]]


def test_a_config_key_added_later_keeps_older_models_matching(plugin_manager: object) -> None:
    before = {
        "max_pixels": 40_000_000,
        "max_bytes": 5 * 1024 * 1024,
        "formats": ["JPEG", "PNG", "WEBP", "GIF", "BMP"],
    }
    entry = {
        "name": "image.decode",
        "version": "1",
        "config": before,
        "fingerprint": fingerprint_of({"name": "image.decode", "version": "1", "config": before}),
    }
    rebuilt = from_manifest(plugin_manager, "preprocessor", entry)
    assert rebuilt.config["draft_size"] is None
    drafted = DecodeImage({**before, "draft_size": 224})
    assert drafted.fingerprint() != rebuilt.fingerprint()


@pytest.fixture(scope="module")
def shop_photos(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Fashion photos enlarged 8x to 1792 pixels (about 3 megapixels), as shops send them."""
    folder = tmp_path_factory.mktemp("shop-photos")
    sources = sorted((data_dir / "fashion" / "images").glob("*.jpg"))[:6]
    made = []
    for source in sources:
        with Image.open(source) as image:
            large = image.convert("RGB").resize((1792, 1792), Image.Resampling.BICUBIC)
        target = folder / source.name
        large.save(target, quality=92)
        made.append(target)
    return made


def test_draft_decoding_keeps_the_needed_size_and_the_pixels(shop_photos: list[Path]) -> None:
    full = DecodeImage()
    draft = DecodeImage({"draft_size": 224})
    for photo in shop_photos:
        data = photo.read_bytes()
        quick, slow = draft.decode(data), full.decode(data)
        assert slow.size == (1792, 1792)
        assert 224 <= min(quick.size) < 448  # 1/8 scale, never below draft_size
        a, b = (image_array(im, 224, 224, *SIGNED_UNIT) for im in (quick, slow))
        # the encoder's input barely changes: mean difference under 1% of the [-1, 1] range
        assert float(np.mean(np.abs(a - b))) < 0.02


def test_draft_decoding_leaves_small_and_non_jpeg_photos_alone(data_dir: Path) -> None:
    draft = DecodeImage({"draft_size": 224})
    small = next((data_dir / "fashion" / "images").glob("*.jpg")).read_bytes()
    assert draft.decode(small).size == DecodeImage().decode(small).size
    png = io.BytesIO()
    Image.new("RGB", (1000, 800), (200, 10, 10)).save(png, format="PNG")
    product = {"image": {"data": base64.b64encode(png.getvalue()).decode()}}
    assert draft.process(product)[IMAGE_KEY].size == (1000, 800)
