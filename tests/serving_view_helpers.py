"""A store with served traffic for the Serving view's tests: model "clf" with v1 in
production and v2 in staging, an A/B split v1/v2 with a shadow of v2, known latencies and
errors, binary feedback where v2 is clearly better, and a rollout in the audit log. Rows go
through the store's serving operations, as the server's logger and feedback route write them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

MODEL = "clf"
LAYOUT = "split v1=80,v2=20 shadow v2"


def prepare(store_location: Any, n: int = 1500, seed: int = 0) -> dict[str, Any]:
    """Fill the store at `store_location`; returns the rows logged and the feedback sent."""
    import mlops_jupyter as mj
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store import serving as sstore

    mj.set_store(store_location)
    try:
        v1 = mj.register_model(MODEL, {"w": 1})
        v2 = mj.register_model(MODEL, {"w": 2})
        mj.promote_model(MODEL, v1, "staging")
        mj.promote_model(MODEL, v1, "production")
        mj.promote_model(MODEL, v2, "staging")
    finally:
        mj.set_store(None)
    store = open_store(store_location)
    sstore.record_rollout(store, MODEL, LAYOUT, user="tester")
    rng = np.random.default_rng(seed)
    t0 = time.time() - 3600
    rows, feedback = [], []
    for i in range(n):
        variant, version = ("v2", v2) if rng.random() < 0.2 else ("v1", v1)
        rid = uuid.uuid4().hex
        status = int(rng.choice([200, 500, 422], p=[0.95, 0.03, 0.02]))
        lat = float(rng.gamma(2.0, 4.0 if variant == "v1" else 6.0))
        ts = t0 + i * 3600 / n
        err = None if status == 200 else "boom"
        rows.append((rid, MODEL, version, variant, ts, lat, status, err, 1, 1, "[0]", "w:1"))
        if variant == "v2" and status == 200 and i % 3 == 0:  # a shadow answers every 3rd
            rows.append((rid, MODEL, v2, "shadow:v2", ts, lat * 2, 200, None, 1, 1, "[1]", "w:1"))
        if status == 200 and rng.random() < 0.5:
            y = int(rng.random() < (0.10 if variant == "v1" else 0.45))
            feedback.append((rid, y))
    # another model's traffic must not count
    rows.append((uuid.uuid4().hex, "other", 1, "v1", t0, 1.0, 200, None, 1, 1, "[0]", "w"))
    sstore.log_predictions(store, rows)
    for rid, y in feedback:
        sstore.add_feedback(store, rid, y)
    _profiles(store, v2, t0)
    return {"rows": rows, "feedback": feedback, "v1": v1, "v2": v2}


def _profiles(store: Any, version: int, t0: float) -> None:
    """Two judged input windows of v2, as a serve worker stores them: the second drifted in
    column "x"."""
    from mlops_jupyter.store import serving_profiles as sp

    for k, drifted in enumerate([False, True]):
        cols = [
            {"column": "x", "statistic": 0.4 if drifted else 0.01, "drifted": drifted},
            {"column": "y", "statistic": 0.01, "drifted": False},
        ]
        sp.save_profile(
            store,
            {"model": MODEL, "version": version, "variant": "v2", "worker": "w:1",
             "window_start": t0 + 60 * k, "window_end": t0 + 60 * (k + 1), "n_rows": 50,
             "n_sampled": 50, "n_requests": 50, "profile": {}, "reference": 1,
             "drifted": drifted, "drift_share": 0.5 if drifted else 0.0,
             "drift": {"columns": cols}},
        )  # fmt: skip
