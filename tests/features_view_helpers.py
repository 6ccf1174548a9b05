"""A store with two feature views for the Features view's tests (routes and browser):
user_stats (v1 materialized twice, then v2 with another TTL; all of 2024, so stale), fresh
(no TTL, timestamps now), a training set built in a run, a registered model of that run and
an online materialization."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl

import mlops_jupyter as mj

N = 300
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _frame(clicks_shift: float, score_shift: float, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user_id": [i % 30 for i in range(N)],
            "event_ts": [T0 + dt.timedelta(hours=i) for i in range(N)],
            "clicks": rng.normal(10, 2, N) + clicks_shift,
            "score": rng.normal(0, 1, N) + score_shift,
        }
    )


def prepare(store_path) -> dict:
    """Two views: user_stats (v1 twice materialized, then v2 with another TTL; every
    feature timestamp in 2024, so stale) and fresh (no TTL, timestamps now)."""
    mj.set_store(store_path)
    a = mj.register_features(
        "user_stats", _frame(0, 0), entity="user_id", timestamp="event_ts", ttl="30d"
    )
    b = mj.register_features(
        "user_stats", _frame(50, 0), entity="user_id", timestamp="event_ts", ttl="30d"
    )
    c = mj.register_features(
        "user_stats", _frame(50, 40), entity="user_id", timestamp="event_ts", ttl="1d"
    )
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    fresh = pl.DataFrame({"uid": ["a", "b"], "ts": [now, now], "level": [1, 2]})
    f = mj.register_features("fresh", fresh, entity="uid", timestamp="ts")
    labels = pl.DataFrame(
        {"user_id": [1, 2, 3], "event_ts": [T0 + dt.timedelta(days=20)] * 3, "y": [0, 1, 0]}
    )
    with mj.start_run("train") as run:
        mj.training_set(labels, ["user_stats:*"], name="ts_train")
        model_file = store_path_dir(store_path) / "model.txt"
        model_file.write_text("weights")
        mv = mj.register_model("churn", str(model_file))
    online = mj.materialize("user_stats")
    mj.set_store(None)
    return {"infos": (a, b, c), "fresh": f, "run": run, "model_version": mv, "online": online}


def store_path_dir(store_path) -> Path:
    p = Path(os.environ.get("MLOPS_JUPYTER_ARTIFACTS") or Path(str(store_path)).parent)
    p.mkdir(parents=True, exist_ok=True)
    return p
