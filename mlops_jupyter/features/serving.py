"""Online features for a served model (`mlops-jupyter serve --features ... --entity-key
user_id`): a JSON request may send entity ids instead of the feature columns; the server
fills the features from the online store in one batched read before calling the model.

Bodies: {"instances": [{"user_id": 1}, ...]} (or "dataframe_records") and
{"inputs": {"user_id": [1, ...]}}. Feature values the request sends itself are kept. The
entity key is dropped from the model's input unless the model's signature names it."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidInputError
from .join import _selected, parse_refs
from .views import get_feature_view


class FeatureFiller:
    """Fills feature columns of requests from the online store."""

    def __init__(self, features: list[str] | str, entity_key: str | None = None) -> None:
        if isinstance(features, str):
            features = [f for f in features.split(",") if f.strip()]
        self.refs = [f.strip() for f in features]
        views = parse_refs(self.refs)
        self.columns: list[str] = []
        self.entities: dict[str, str] = {}  # view entity column -> (one) view
        for name, version, names in views:
            info = get_feature_view(name, version)  # unknown views fail at start, clearly
            if len(info.entities) != 1:
                raise InvalidInputError(
                    f"feature view {info.name!r} has a compound entity "
                    f"({', '.join(info.entities)}): serving fills features by one entity key"
                )
            self.entities[info.entities[0]] = info.name
            for c in _selected(info, names):
                if c in self.columns:
                    raise InvalidInputError(f"feature {c!r} is named by two views")
                self.columns.append(c)
        if entity_key is None:
            if len(self.entities) != 1:
                raise InvalidInputError(
                    "the views have different entity columns "
                    f"({', '.join(self.entities)}): name the request's one with --entity-key"
                )
            entity_key = next(iter(self.entities))
        self.entity_key = entity_key

    def _lookup(self, ids: list[Any]) -> dict[str, list[Any]]:
        from .online import online_features

        frame = online_features({e: ids for e in self.entities}, self.refs)
        return {c: frame.get_column(c).to_list() for c in self.columns}

    def fill(self, body: bytes, model_fields: list[str] | None = None) -> bytes:
        """`body` with the feature columns filled for the rows that send the entity key
        (unchanged when it does not parse or has no entity key: the model's own checks
        answer then)."""
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return body
        if not isinstance(obj, dict):
            return body
        keep_key = model_fields is not None and self.entity_key in model_fields
        key = self.entity_key
        rows_key = "instances" if "instances" in obj else "dataframe_records"
        rows = obj.get(rows_key)
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            if not any(key in r for r in rows):
                return body
            if not all(key in r for r in rows):
                raise InvalidInputError(f"every instance must send the entity key {key!r}")
            vals = self._lookup([r[key] for r in rows])
            for i, r in enumerate(rows):
                for c in self.columns:
                    r.setdefault(c, vals[c][i])
                if not keep_key:
                    del r[key]
            return json.dumps(obj).encode()
        cols = obj.get("inputs")
        if isinstance(cols, dict) and key in cols:
            ids = cols[key] if isinstance(cols[key], list) else [cols[key]]
            vals = self._lookup(ids)
            for c in self.columns:
                cols.setdefault(c, vals[c])
            if not keep_key:
                del cols[key]
            return json.dumps(obj).encode()
        return body
