"""Store operations of live input monitoring: one row per worker, variant and time window
with the column profiles of the inputs it answered (the same profiles as data versions),
their drift against the training data, and the once-per-window drift alert marks."""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Store
from .sql import insert_ignore

PROFILE_COLS = (
    "model",
    "version",
    "variant",
    "worker",
    "window_start",
    "window_end",
    "n_rows",
    "n_sampled",
    "n_requests",
    "profile",
    "reference",
    "drifted",
    "drift_share",
    "drift",
    "inputs_blob",
    "created",
)
_JSON = ("profile", "drift")


def save_profile(store: Store, row: dict[str, Any]) -> int:
    """Insert one window's row (keys of PROFILE_COLS; profile/drift as Python objects);
    returns its id."""
    vals = []
    for c in PROFILE_COLS:
        v = row.get(c)
        if c in _JSON and v is not None:
            v = json.dumps(v, default=float)
        elif c == "drifted" and v is not None:
            v = int(bool(v))
        elif c == "created" and v is None:
            v = time.time()
        vals.append(v)
    cols = ", ".join(PROFILE_COLS)
    marks = ", ".join("?" for _ in PROFILE_COLS)
    with store.write("store an input profile") as c:
        return c.execute(
            f"INSERT INTO serving_profiles({cols}) VALUES({marks}) RETURNING id", vals
        ).fetchone()[0]


def _row(r: tuple, with_profile: bool) -> dict[str, Any]:
    d = dict(zip(("id", *PROFILE_COLS), r))
    d["drift"] = json.loads(d["drift"]) if d["drift"] else None
    d["profile"] = json.loads(d["profile"]) if with_profile and d["profile"] else None
    d["drifted"] = None if d["drifted"] is None else bool(d["drifted"])
    return d


def profiles(
    store: Store,
    model: str,
    version: int | None = None,
    since: float | None = None,
    limit: int | None = None,
    with_profile: bool = True,
) -> list[dict[str, Any]]:
    """Window rows of `model` (one version, or all; windows starting at or after `since`),
    newest window first. `limit` counts rows (one per worker and variant of a window)."""
    cols = "id, " + ", ".join(PROFILE_COLS)
    if not with_profile:
        cols = cols.replace("profile,", "NULL,", 1)
    sql = f"SELECT {cols} FROM serving_profiles WHERE model=?"
    args: list[Any] = [model]
    if version is not None:
        sql += " AND version=?"
        args.append(int(version))
    if since is not None:
        sql += " AND window_start >= ?"
        args.append(float(since))
    sql += " ORDER BY window_start DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return [_row(r, with_profile) for r in store.read(sql, args, "read input profiles")]


def model_run(store: Store, model: str, version: int) -> int | None:
    """Row id of the run that registered `version` of `model` (None when none did)."""
    rows = store.read(
        "SELECT v.run_id FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE m.name=? AND v.version=?",
        (model, int(version)),
        "read a model version's run",
    )
    return rows[0][0] if rows else None


def claim_alert(store: Store, model: str, version: int, variant: str, start: float) -> bool:
    """Mark the drift alert of one window as sent; False when a worker already did (so a
    drifted window raises one event however many workers served it)."""
    sql = insert_ignore(
        "serving_drift_alerts", ("model", "version", "variant", "window_start", "created")
    )
    with store.write("mark a drift alert") as c:
        cur = c.execute(sql + " RETURNING model", (model, version, variant, start, time.time()))
        return cur.fetchone() is not None
