"""Context encoding: standardised numerics, append-only one-hot vocabularies, never an error on new categories."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bandits import Encoder
from bandits.encoding import OTHER
from experiments.spec import FeatureSpec

FEATURES = [
    FeatureSpec(name="recency", type="numeric"),
    FeatureSpec(name="spend", type="numeric", required=False),
    FeatureSpec(name="channel", type="categorical"),
]
TRAIN = [
    {"recency": 1, "spend": 10.0, "channel": "web"},
    {"recency": 3, "channel": "web"},
    {"recency": 5, "spend": 30.0, "channel": "email"},
    {"recency": 7, "spend": None, "channel": "web"},
]


def test_numeric_features_are_standardised_with_training_statistics() -> None:
    enc = Encoder.cold(FEATURES).fit(TRAIN)

    x = enc.encode([{"recency": 4, "spend": 20.0, "channel": "web"}, {"recency": 1, "channel": "web"}])

    recency = np.array([1, 3, 5, 7.0])
    assert x[0, 0] == pytest.approx((4 - recency.mean()) / recency.std())
    assert x[1, 0] == pytest.approx((1 - recency.mean()) / recency.std())
    spend = np.array([10.0, 30.0])  # the two rows that have it
    assert x[0, 1] == pytest.approx((20 - spend.mean()) / spend.std())
    assert x[1, 1] == 0.0  # missing optional value -> the mean


def test_training_rows_have_zero_mean_and_unit_variance() -> None:
    rng = np.random.default_rng(0)
    contexts = [{"recency": float(v), "channel": "web"} for v in rng.gamma(2, 3, size=500)]
    enc = Encoder.cold(FEATURES).fit(contexts)

    col = enc.encode(contexts)[:, 0]

    assert col.mean() == pytest.approx(0, abs=1e-12)
    assert col.std() == pytest.approx(1, abs=1e-12)


def test_categorical_one_hot_and_unseen_or_missing_is_all_zeros() -> None:
    enc = Encoder.cold(FEATURES).fit(TRAIN)

    x = enc.encode(
        [
            {"recency": 1, "channel": "web"},
            {"recency": 1, "channel": "email"},
            {"recency": 1, "channel": "carrier-pigeon"},
            {"recency": 1},
            {"recency": 1, "channel": ""},
        ]
    )

    assert enc.columns == ("recency", "spend", "channel=web", "channel=email")
    np.testing.assert_array_equal(x[:, 2:], [[1, 0], [0, 1], [0, 0], [0, 0], [0, 0]])


def test_vocabulary_grows_append_only_on_refit() -> None:
    first = Encoder.cold(FEATURES).fit(TRAIN)

    second = first.fit([{"recency": 2, "channel": c} for c in ("sms", "sms", "app")])

    assert second.columns[2:] == ("channel=web", "channel=email", "channel=sms", "channel=app")
    x = second.encode([{"recency": 0, "channel": "email"}])
    assert x[0, 2:].tolist() == [0, 1, 0, 0]


def test_vocabulary_is_capped_with_an_other_bucket() -> None:
    enc = Encoder.cold([FeatureSpec(name="city", type="categorical")], max_categories=4)
    contexts = [{"city": c} for c in ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]]

    enc = enc.fit(contexts)

    # The three most frequent values keep their own column; the rest share __other__.
    assert enc.columns == ("city=a", "city=b", "city=c", f"city={OTHER}")
    x = enc.encode([{"city": "d"}, {"city": "never-seen"}, {"city": "a"}, {}])
    np.testing.assert_array_equal(x, [[0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert enc.fit([{"city": "z"}]).columns == enc.columns  # full: nothing more is added


def test_numbers_and_booleans_as_categories_and_numbers_as_text() -> None:
    enc = Encoder.cold([FeatureSpec(name="tier", type="categorical"), FeatureSpec(name="age", type="numeric")])
    enc = enc.fit([{"tier": 1, "age": "30"}, {"tier": "2", "age": 40}])

    x = enc.encode([{"tier": "1", "age": "35"}, {"tier": 2, "age": 35.0}, {"tier": True, "age": 35}])

    np.testing.assert_array_equal(x, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_missing_required_numeric_is_an_error_naming_the_feature() -> None:
    enc = Encoder.cold(FEATURES).fit(TRAIN)

    with pytest.raises(ValueError, match="feature 'recency' is required but missing in context 1"):
        enc.encode([{"recency": 1}, {"channel": "web"}])


def test_text_in_a_numeric_feature_is_an_error() -> None:
    enc = Encoder.cold(FEATURES).fit(TRAIN)

    with pytest.raises(ValueError, match="numeric feature 'recency' must be a number, got 'soon' in context 0"):
        enc.encode([{"recency": "soon"}])
    with pytest.raises(ValueError, match="must be finite"):
        enc.encode([{"recency": float("inf")}])
    with pytest.raises(ValueError, match="categorical feature 'channel' must be a string"):
        enc.encode([{"recency": 1, "channel": ["web"]}])


def test_constant_feature_does_not_divide_by_zero() -> None:
    enc = Encoder.cold(FEATURES).fit([{"recency": 3, "channel": "web"}] * 5)

    x = enc.encode([{"recency": 3, "channel": "web"}, {"recency": 5, "channel": "web"}])

    assert x[:, 0].tolist() == [0.0, 2.0]


def test_state_round_trip() -> None:
    enc = Encoder.cold(FEATURES).fit(TRAIN)

    loaded = Encoder.from_state(FEATURES, json.loads(json.dumps(enc.to_state())))

    assert loaded == enc
    probe = [{"recency": 2, "spend": 12.5, "channel": "email"}]
    np.testing.assert_array_equal(loaded.encode(probe), enc.encode(probe))


def test_state_for_other_features_is_refused() -> None:
    state = Encoder.cold(FEATURES).fit(TRAIN).to_state()

    with pytest.raises(ValueError, match="retrain"):
        Encoder.from_state(FEATURES[:2], state)


def test_whole_block_and_column_by_column_encodings_agree() -> None:
    # One decision's numerics are converted in one go; values that need a closer look (text that
    # is a number, booleans, missing optional values, a bad value) take the per-feature path.
    enc = Encoder.cold(FEATURES).fit(TRAIN)
    plain = [{"recency": 2, "spend": 15.5, "channel": "web"}, {"recency": 6, "spend": None, "channel": "sms"}]
    mixed = [{"recency": "2", "spend": True, "channel": "web"}, {"recency": 6.0, "channel": "email"}]

    for contexts in (plain, mixed):
        by_column = np.column_stack([
            np.nan_to_num((np.array([c.get(f.name) for c in contexts], dtype=float) - f.mean) / f.std, nan=0.0)
            for f in enc.numeric])
        np.testing.assert_allclose(enc.encode(contexts)[:, :2], by_column)
    with pytest.raises(ValueError, match="'recency' must be a number, got 'soon' in context 1"):
        enc.encode([{"recency": 1}, {"recency": "soon"}])
    with pytest.raises(ValueError, match="'recency' is required but missing in context 0"):
        enc.encode([{"spend": 1.0}])
