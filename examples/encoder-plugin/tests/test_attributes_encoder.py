"""Tests of the ``tabular.attributes`` encoder, runnable from this package alone."""

from __future__ import annotations

import numpy as np
import pytest
from prodcat_attributes import AttributeEncoder

SHIRT = {
    "title": "Turtle Check Men Navy Blue Shirt",
    "attributes": {"gender": "Men", "baseColour": "Navy Blue", "season": "Fall", "usage": "Casual"},
}
JEANS = {
    "title": "Peter England Men Party Blue Jeans",
    "attributes": {"gender": "Men", "baseColour": "Blue", "season": "Summer", "usage": "Casual"},
}


def test_featurize_matches_the_input_spec() -> None:
    encoder = AttributeEncoder()
    features = encoder.featurize(SHIRT)
    assert set(features) == {spec.name for spec in encoder.input_spec()}
    for spec in encoder.input_spec():
        assert features[spec.name].dtype == np.dtype(spec.dtype)
        assert features[spec.name].shape == spec.shape
    assert features["mask"] == 1.0
    assert (features["attribute_ids"] > 0).all()
    assert (features["attribute_ids"] < encoder.config["buckets"]).all()


def test_equal_values_share_ids_and_spelling_is_forgiven() -> None:
    encoder = AttributeEncoder()
    shirt, jeans = encoder.featurize(SHIRT), encoder.featurize(JEANS)
    same = [f in ("gender", "usage") for f in encoder.config["fields"]]
    assert ((shirt["attribute_ids"] == jeans["attribute_ids"]) == same).all()
    shouted = {"attributes": {**SHIRT["attributes"], "baseColour": "  NAVY   blue "}}
    assert (encoder.featurize(shouted)["attribute_ids"] == shirt["attribute_ids"]).all()


def test_missing_attributes_give_mask_zero_and_missing_fields_id_zero() -> None:
    encoder = AttributeEncoder()
    for product in ({"title": "x"}, {"attributes": {}}, {"attributes": {"gender": None}}):
        features = encoder.featurize(product)
        assert features["mask"] == 0.0
        assert not features["attribute_ids"].any()
    partial = encoder.featurize({"attributes": {"gender": "Women"}})
    assert partial["mask"] == 1.0
    assert list(partial["attribute_ids"] > 0) == [True, False, False, False]


def test_vocabulary_ids_with_out_of_vocabulary_slot() -> None:
    encoder = AttributeEncoder({"vocab": {"gender": ["Men", "Women", "Boys", "Girls", "Unisex"]}})
    ids = [encoder.value_id("gender", g) for g in ("men", "Girls", "Aliens", "")]
    assert ids == [1, 4, 6, 0]
    assert encoder.table_sizes() == [7, 64, 64, 64]


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown config key"):
        AttributeEncoder({"bucket": 10})
    with pytest.raises(ValueError, match="vocab given for unknown field"):
        AttributeEncoder({"vocab": {"colour": ["Red"]}})
    with pytest.raises(ValueError, match="buckets"):
        AttributeEncoder({"buckets": 1})


def test_fingerprint_follows_config_only() -> None:
    base = AttributeEncoder({"buckets": 32, "output_dim": 16})
    assert base.fingerprint() == AttributeEncoder({"output_dim": 16, "buckets": 32}).fingerprint()
    assert base.fingerprint() != AttributeEncoder({"buckets": 33, "output_dim": 16}).fingerprint()


def test_module_forward_shape_and_missing_rows_are_zero_embeddings() -> None:
    torch = pytest.importorskip("torch")
    encoder = AttributeEncoder({"output_dim": 12, "dropout": 0.0})
    module = encoder.build_module().eval()
    batch = [encoder.featurize(p) for p in (SHIRT, JEANS, {"title": "no attributes"})]
    ids = torch.from_numpy(np.stack([f["attribute_ids"] for f in batch]))
    out = module(attribute_ids=ids)
    assert out.shape == (3, encoder.output_dim)
    assert torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1])
    assert all(table.weight[0].abs().sum() == 0 for table in module.embeddings)
