"""SQL of model cards: the user-written fields of a model's card (intended use,
limitations, owners, ...), kept per model; each change is a line in the audit log."""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Store
from .registry import ModelNotFoundError, _audit, _model_id
from .sql import upsert


def set_fields(store: Store, name: str, fields: dict[str, Any], user: str) -> dict[str, Any]:
    """Merge `fields` into the card fields of model `name` (a None value removes that field);
    returns the fields now stored."""
    with store.write("set model card fields") as c:
        mid = _model_id(c, name)
        if mid is None:
            raise ModelNotFoundError(f"no registered model named {name!r}")
        row = c.execute("SELECT fields FROM model_card_fields WHERE model_id=?", (mid,)).fetchone()
        current: dict[str, Any] = json.loads(row[0]) if row else {}
        for k, v in fields.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v
        c.execute(
            upsert(
                "model_card_fields", ("model_id", "fields", "updated", "created_by"), ("model_id",)
            ),
            (mid, json.dumps(current, sort_keys=True), time.time(), user),
        )
        _audit(c, mid, None, "card", reason="card fields: " + ", ".join(sorted(fields)), user=user)
    return current


def get_fields(store: Store, name: str) -> dict[str, Any]:
    """The card fields of model `name` ({} when none were written)."""
    rows = store.read(
        "SELECT f.fields FROM model_card_fields f JOIN models m ON m.id = f.model_id"
        " WHERE m.name=?",
        (name,),
    )
    return json.loads(rows[0][0]) if rows else {}
