"""Populate a store with runs the server and browser tests look at."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

XSS_NAME = "<img src=x onerror=alert(1)>"
ODD_NAME = "lr 0.1 / 50% #1?"


def populate(store_path: Path, notebook: Path | None = None, n_runs: int = 30) -> dict:
    """Runs in two experiments, a long series, a running run with telemetry, an alert,
    a throttle episode and a run named like an XSS payload. Returns the ids by role."""
    import mlops_jupyter as mj
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store import runs as rstore
    from mlops_jupyter.tracking.api import current_store

    mj.set_store(store_path)
    try:
        ids: dict = {"exp_a": []}
        for i in range(n_runs):
            params = {"lr": round(0.01 * (i + 1), 4), "opt": "adam" if i % 2 else "sgd", "depth": 3}
            with mj.start_run(f"a-{i:02d}", experiment="exp-a", params=params) as r:
                for s in range(50):
                    mj.log(step=s, loss=1.0 / (s + 1) + 0.001 * i, acc=s / 50)
            ids["exp_a"].append(r.id)
        with mj.start_run("long", experiment="exp-b", params={"lr": 0.5}) as r:
            steps = np.arange(100_000)
            vals = np.sin(steps / 500.0) + (steps == 77_777) * 5.0  # one spike to keep
            for s, v in zip(steps.tolist(), vals.tolist()):
                mj.log_metric("loss", v, step=s)
        ids["long"] = r.id
        with mj.start_run(XSS_NAME, experiment="exp-b", params={"lr": 0.2}) as r:
            mj.log(step=0, loss=math.nan)
            mj.log(step=1, loss=0.3)
        ids["xss"] = r.id
        with mj.start_run(ODD_NAME, experiment="exp-b") as r:
            mj.log(step=0, **{"val/loss 50%": 0.25})
        ids["odd"] = r.id
        failed = mj.start_run("broken", experiment="exp-b")
        failed.end("failed")
        ids["failed"] = failed.id
        mj.flush()
        st = current_store()
        # A running run that is not this process' active run (so tests ending active runs
        # leave it alone): it belongs to this live process, so it stays "running".
        tags = {"notebook.path": str(notebook)} if notebook else {}
        rid, uid, _ = rstore.create_run(st, "live-run", "exp-b", {"lr": 0.1}, tags)
        ids["running"] = uid
        from mlops_jupyter.store import metrics as mstore

        now_ms = int(time.time() * 1000)
        with st.write() as c:
            cache: dict[str, int] = {}
            keys = [
                "sys/cpu/percent",
                "sys/mem/percent",
                "sys/gpu0/temp_c",
                "sys/thermal_state",
                "loss",
            ]
            mstore.key_ids(c, keys, cache)
            for k, v in zip(keys, [42.0, 63.5, 81.0, 2.0, 0.9]):
                mstore.append_chunk(
                    c,
                    rid,
                    cache[k],
                    0,
                    np.array([0], np.int64),
                    np.array([now_ms], np.int64),
                    np.array([v]),
                )
        rstore.add_event(st, rid, "alert", "loss is NaN", level="error", data={"rule": "nan"})
        rstore.add_event(st, rid, "throttle", "GPU0 thermal throttling", level="warning")
        ids["store"] = open_store(store_path).location
        return ids
    finally:
        mj.set_store(None)


def bulk_runs(store_path: Path, n: int, experiments: int = 5) -> None:
    """Insert `n` finished runs (params lr/batch, a `loss` summary) in one transaction:
    fast fixtures for the 10,000-run list. Names are bulk-00000 (oldest) upwards."""
    import json
    import secrets

    from mlops_jupyter.store import open_store

    st = open_store(store_path)
    t0 = time.time() - n
    with st.write() as c:
        exp_ids = []
        for e in range(experiments):
            c.execute(
                "INSERT OR IGNORE INTO experiments(name, created) VALUES(?,?)", (f"bulk-{e}", t0)
            )
            exp_ids.append(
                c.execute("SELECT id FROM experiments WHERE name=?", (f"bulk-{e}",)).fetchone()[0]
            )
        c.execute("INSERT OR IGNORE INTO metric_keys(key) VALUES('loss')")
        kid = c.execute("SELECT id FROM metric_keys WHERE key='loss'").fetchone()[0]
        first = (c.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0]) + 1
        runs, params, summ = [], [], []
        for i in range(n):
            rid = first + i
            start = t0 + i
            runs.append(
                (
                    rid,
                    secrets.token_hex(6),
                    exp_ids[i % experiments],
                    f"bulk-{i:05d}",
                    "finished",
                    start,
                    start + 0.5 + (i % 7),
                    start + 1,
                    "bench",
                    0,
                    None,
                    None,
                    1,
                )
            )
            params.append((rid, "lr", json.dumps(round(0.1 / (1 + i % 100), 6))))
            params.append((rid, "batch", json.dumps(32 * (1 + i % 4))))
            loss = 1.0 / (1 + (i % 1000))
            summ.append((rid, kid, 100, 99, loss, start + 0.5, loss, 1.0))
        c.executemany(
            "INSERT INTO runs(id, uid, experiment_id, name, status, start_time, end_time,"
            " heartbeat, host, pid, pid_start, parent_id, attempt) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            runs,
        )
        c.executemany("INSERT INTO params VALUES(?,?,?)", params)
        c.executemany("INSERT INTO metric_summary VALUES(?,?,?,?,?,?,?,?)", summ)
