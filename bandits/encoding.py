"""Context encoding: turn request contexts into the numeric rows linear policies learn from.

Numeric features are standardised with the mean and standard deviation seen in
training; a missing optional value becomes the mean (0 after scaling). A
categorical feature is one-hot encoded over a vocabulary learned in training.
The vocabulary only grows (refits append, positions never move) and holds at
most ``max_categories`` columns per feature; values that do not fit get the
shared ``__other__`` column. A missing categorical value encodes as all zeros,
and so does a value outside the vocabulary while the feature has no
``__other__`` column: new or missing categories are never an error.

The encoder is a value: fitting returns a new encoder, and its state is a plain
JSON dictionary. Features whose source is the subject profile are read from the
same mapping, so callers merge profile attributes into the context first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.spec import FeatureSpec

OTHER = "__other__"
MAX_CATEGORIES = 50
STATE_FORMAT = "nextbest.encoder/1"

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class _Numeric:
    name: str
    required: bool
    mean: float
    std: float


@dataclass(frozen=True, slots=True)
class _Categorical:
    name: str
    vocabulary: tuple[str, ...]

    @property
    def other(self) -> int:
        """Column of the ``__other__`` bucket, or -1 while the feature has none."""
        return self.vocabulary.index(OTHER) if OTHER in self.vocabulary else -1


@dataclass(frozen=True, slots=True)
class Encoder:
    """Fitted feature statistics and vocabularies; ``encode`` maps contexts to a float matrix."""

    features: tuple[FeatureSpec, ...]
    numeric: tuple[_Numeric, ...]
    categorical: tuple[_Categorical, ...]
    max_categories: int = MAX_CATEGORIES

    @classmethod
    def cold(cls, features: Sequence[FeatureSpec], max_categories: int = MAX_CATEGORIES) -> Encoder:
        """Build an encoder that has seen no data: identity scaling, empty vocabularies."""
        features = _feature_specs(features)
        if max_categories < 2:
            raise ValueError(f"max_categories must be >= 2, got {max_categories}")
        return cls(
            features=features,
            numeric=tuple(_Numeric(f.name, f.required, 0.0, 1.0) for f in features if f.type == "numeric"),
            categorical=tuple(_Categorical(f.name, ()) for f in features if f.type == "categorical"),
            max_categories=max_categories,
        )

    @property
    def dim(self) -> int:
        """Number of encoded columns."""
        return len(self.numeric) + sum(len(c.vocabulary) for c in self.categorical)

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names: the numeric feature names, then ``feature=value`` per category."""
        names = [n.name for n in self.numeric]
        for c in self.categorical:
            names.extend(f"{c.name}={value}" for value in c.vocabulary)
        return tuple(names)

    def fit(self, contexts: Sequence[Mapping[str, Any] | None]) -> Encoder:
        """Refit the scaling on these contexts and append their new categories to the vocabularies."""
        contexts = _as_contexts(contexts)
        numeric = []
        for feat in self.numeric:
            values = _numeric_column(contexts, feat.name, required=False)
            seen = values[~np.isnan(values)]
            mean = float(seen.mean()) if seen.size else 0.0
            std = float(seen.std()) if seen.size > 1 else 0.0
            numeric.append(_Numeric(feat.name, feat.required, mean, std if std > 1e-12 else 1.0))
        categorical = []
        for feat in self.categorical:
            keys = (_category(ctx.get(feat.name), feat.name, i) for i, ctx in enumerate(contexts))
            counts = Counter(k for k in keys if k is not None)
            categorical.append(_Categorical(feat.name, _grow(feat.vocabulary, counts, self.max_categories)))
        return Encoder(self.features, tuple(numeric), tuple(categorical), self.max_categories)

    def encode(self, contexts: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
        """Encode contexts as a float matrix of shape (len(contexts), dim)."""
        contexts = _as_contexts(contexts)
        n = len(contexts)
        out = np.zeros((n, self.dim))
        numeric = self._numeric_block(contexts)
        if numeric is not None:
            out[:, : len(self.numeric)] = numeric
        else:  # some value needs a closer look: column by column, which names the first bad one
            for j, feat in enumerate(self.numeric):
                values = _numeric_column(contexts, feat.name, required=feat.required)
                scaled = (values - feat.mean) / feat.std
                out[:, j] = np.where(np.isnan(scaled), 0.0, scaled)
        offset = len(self.numeric)
        rows = np.arange(n)
        for feat in self.categorical:
            codes = _codes([ctx.get(feat.name) for ctx in contexts], feat)
            hit = codes >= 0
            out[rows[hit], offset + codes[hit]] = 1.0
            offset += len(feat.vocabulary)
        return out

    def _numeric_block(self, contexts: list[Mapping[str, Any]]) -> np.ndarray | None:
        """All numeric features scaled in one conversion (one call per decision instead of one per
        feature); None when a value is not a plain finite number or a required one is missing."""
        if not self.numeric:
            return np.zeros((len(contexts), 0))
        names = [f.name for f in self.numeric]
        try:
            values = np.array([[ctx.get(name) for name in names] for ctx in contexts], dtype=float)
        except (TypeError, ValueError):
            return None
        if values.shape != (len(contexts), len(names)):
            return None
        missing = np.isnan(values)
        if np.isinf(values).any() or missing[:, [f.required for f in self.numeric]].any():
            return None
        means = np.array([f.mean for f in self.numeric])
        stds = np.array([f.std for f in self.numeric])
        scaled = (values - means) / stds
        scaled[missing] = 0.0
        return scaled

    def to_state(self) -> dict[str, Any]:
        """Return the encoder as plain JSON data."""
        return {
            "format": STATE_FORMAT,
            "max_categories": self.max_categories,
            "features": [{"name": f.name, "type": f.type} for f in self.features],
            "numeric": {n.name: {"mean": n.mean, "std": n.std} for n in self.numeric},
            "categorical": {c.name: list(c.vocabulary) for c in self.categorical},
        }

    @classmethod
    def from_state(cls, features: Sequence[FeatureSpec], state: Mapping[str, Any]) -> Encoder:
        """Rebuild an encoder from ``to_state`` data; the features must be the ones it was fitted on."""
        features = _feature_specs(features)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"encoder state format must be {STATE_FORMAT!r}, got {state.get('format')!r}")
        stored = [(f["name"], f["type"]) for f in state["features"]]
        given = [(f.name, f.type) for f in features]
        if stored != given:
            raise ValueError(f"encoder state was fitted on features {stored}, the spec has {given}; retrain")
        numeric = []
        for f in features:
            if f.type == "numeric":
                stats = state["numeric"][f.name]
                std = float(stats["std"])
                if not (std > 0 and math.isfinite(std)) or not math.isfinite(float(stats["mean"])):
                    raise ValueError(f"numeric feature {f.name!r} needs a finite mean and std > 0, got {stats}")
                numeric.append(_Numeric(f.name, f.required, float(stats["mean"]), std))
        categorical = tuple(
            _Categorical(f.name, tuple(str(v) for v in state["categorical"][f.name]))
            for f in features
            if f.type == "categorical"
        )
        return cls(features, tuple(numeric), categorical, int(state["max_categories"]))


def _feature_specs(features: Iterable[FeatureSpec | Mapping[str, Any]]) -> tuple[FeatureSpec, ...]:
    specs = tuple(f if isinstance(f, FeatureSpec) else FeatureSpec.model_validate(f) for f in features)
    names = [f.name for f in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    return specs


def _as_contexts(contexts: Sequence[Mapping[str, Any] | None]) -> list[Mapping[str, Any]]:
    out = list(contexts)
    if all(type(ctx) is dict for ctx in out):
        return out
    for i, ctx in enumerate(out):
        if ctx is None:
            out[i] = _EMPTY
        elif not isinstance(ctx, Mapping):
            raise ValueError(f"context {i} must be a mapping of feature names to values, got {type(ctx).__name__}")
    return out


def _numeric_column(contexts: list[Mapping[str, Any]], name: str, required: bool) -> np.ndarray:
    """Read one numeric feature as floats, NaN where missing; reject text and infinities."""
    raw = [ctx.get(name) for ctx in contexts]
    try:
        values = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        values = np.array([_to_float(v, name, i) for i, v in enumerate(raw)], dtype=float)
    if values.ndim != 1:
        raise ValueError(f"numeric feature {name!r} must hold single numbers")
    bad = np.isinf(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"numeric feature {name!r} must be finite, got {raw[i]!r} in context {i}")
    if required:
        missing = np.isnan(values)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ValueError(f"feature {name!r} is required but missing in context {i}")
    return values


def _to_float(value: Any, name: str, i: int) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    if isinstance(value, (bool, int, float, str)):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"numeric feature {name!r} must be a number, got {value!r} in context {i}")


def _category(value: Any, name: str = "", i: int = -1) -> str | None:
    """Normalise a categorical value to its vocabulary key; None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise ValueError(f"categorical feature {name!r} must be a string, number or boolean, got {value!r} in context {i}")


def _codes(raw: list[Any], feat: _Categorical) -> np.ndarray:
    """Column of each raw value within the feature's block; -1 for all zeros."""
    unknown = feat.other
    index: dict[Any, int] = {value: i for i, value in enumerate(feat.vocabulary)}
    index[None] = -1
    index[""] = -1
    # Fast path: string values hit the dictionary directly; the rest (numbers,
    # booleans, unseen strings) are normalised one by one.
    try:
        codes = np.array([index.get(v, -2) for v in raw], dtype=np.intp)
    except TypeError:  # an unhashable value; find it below
        codes = np.full(len(raw), -2, dtype=np.intp)
    for i in np.flatnonzero(codes == -2).tolist():
        key = _category(raw[i], feat.name, i)
        codes[i] = -1 if key is None else index.get(key, unknown)
    return codes


def _grow(vocabulary: tuple[str, ...], counts: Counter[str], cap: int) -> tuple[str, ...]:
    """Append unseen values, most frequent first, keeping the last slot for ``__other__``."""
    new = sorted((v for v in counts if v not in vocabulary), key=lambda v: (-counts[v], v))
    if not new:
        return vocabulary
    grown = list(vocabulary)
    if OTHER in grown:
        room = cap - len(grown)
        return tuple(grown + new[: max(room, 0)])
    room = cap - 1 - len(grown)
    grown.extend(new[: max(room, 0)])
    if len(new) > room:
        grown.append(OTHER)
    return tuple(grown)
