"""Monitoring live inputs: real `mlops-jupyter serve` processes with 1 s windows on the
test's store (SQLite, or PostgreSQL with MLOPS_TEST_BACKEND=postgresql) profile what
they answer; traffic like the training data does not drift, shifted traffic drifts naming
the shifted column and raises one event per drifted window on the model's run."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time

import numpy as np
import polars as pl
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("scipy")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.errors import InvalidInputError, StoreError  # noqa: E402
from mlops_jupyter.registry import ModelNotFoundError  # noqa: E402
from mlops_jupyter.serving import monitor  # noqa: E402
from mlops_jupyter.serving.client import request  # noqa: E402
from mlops_jupyter.store import serving_profiles as sp  # noqa: E402
from mlops_jupyter.store import telemetry  # noqa: E402
from mlops_jupyter.tracking.api import current_store  # noqa: E402

SIG = {"columns": {"a": "float64", "b": "float64"}}


@pytest.fixture
def models(tmp_path):
    """'scorer' registered by a run that read its training data; 'bare' without one."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "drift_fns.py").write_text("def score(x):\n    return x.sum(axis=1)\n")
    sys.path.insert(0, str(mods))
    try:
        import drift_fns

        rng = np.random.default_rng(0)
        train = pl.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(2, 1, size=5000)})
        with mj.start_run(name="train") as run:
            dv = mj.version(train, name="train")
            mj.register_model("scorer", drift_fns.score, signature=SIG)
        mj.register_model("bare", drift_fns.score, signature=SIG)
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("drift_fns", None)
    path = os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")])
    return {"run": run, "train": dv, "env": {"PYTHONPATH": path}}


def _send(srv, rng, shift: float, seconds: float, rows: int = 200) -> None:
    """Requests of `rows` rows like the training data (b shifted by `shift`) for `seconds`."""
    end = time.time() + seconds
    while time.time() < end:
        a, b = rng.normal(size=rows), rng.normal(2 + shift, 1, size=rows)
        body = json.dumps({"inputs": {"a": a.tolist(), "b": b.tolist()}}).encode()
        st, _, raw = request(
            srv.url + "/predict", "POST", body, {"Content-Type": "application/json"}
        )
        assert st == 200, raw
        time.sleep(0.05)


def _next_window(t: float) -> float:
    return math.floor(t) + 1.0


def test_like_traffic_no_drift_shifted_drifts_with_one_event_per_window(models):
    rng = np.random.default_rng(1)
    # two workers: each writes its own rows of a window, merged when read, alerted once
    with mj.serve(
        "scorer", workers=2, monitor_window="1s", extra_env=models["env"], trusted=True
    ) as srv:
        _send(srv, rng, 0.0, 1.6, rows=1000)
        t_shift = _next_window(time.time())
        time.sleep(t_shift - time.time() + 0.05)
        _send(srv, rng, 3.0, 1.6, rows=1000)
    store = current_store()
    frame = mj.serving_drift("scorer")
    assert frame.columns[:9] == [
        "window_start",
        "window_end",
        "variant",
        "version",
        "n",
        "drifted",
        "share",
        "columns",
        "reference",
    ]
    assert {"stat:a", "stat:b"} <= set(frame.columns)
    rows = frame.to_dicts()
    assert all(r["reference"] == models["train"].id and r["version"] == 1 for r in rows)
    # windows of 1000+ rows: a 200-row window's sampling noise can reach the threshold
    before = [r for r in rows if r["window_end"].timestamp() <= t_shift and r["n"] >= 1000]
    after = [r for r in rows if r["window_start"].timestamp() >= t_shift and r["n"] >= 1000]
    assert before and after, rows
    assert not any(r["drifted"] for r in before), before
    assert all(r["drifted"] and r["columns"] == ["b"] for r in after), after
    assert all(r["share"] == 0.5 and r["stat:b"] > 1 for r in after)
    # raw rows were not kept (no --log-inputs)
    assert all(r["inputs_blob"] is None for r in sp.profiles(store, "scorer"))
    # the canary controller's view: the newest window since the shift
    got = monitor.latest_drift(store, "scorer", 1, t_shift)
    assert got["drifted"] is True and "b" in got["columns"] and got["share"] >= 0.5
    assert got["window_start"] == frame["window_start"].max().timestamp()
    assert monitor.latest_drift(store, "scorer", 1, time.time() + 60) is None
    assert monitor.latest_drift(store, "scorer", 2, 0) is None
    # the sidebar's view, newest first
    wins = monitor.drift_windows(store, "scorer", limit=2)
    assert len(wins) == 2 and wins[0]["window_start"] > wins[1]["window_start"]
    assert "b" in wins[0]["columns"] and wins[0]["drifted"] is True
    assert len({r["worker"] for r in sp.profiles(store, "scorer")}) == 2
    # one warning event on the training run per drifted window, naming model and column
    events = telemetry.list_events(store, None, ("serving_drift",))
    alerted = [json.loads(ev[8])["window_start"] for ev in events]
    assert len(alerted) == len(set(alerted))  # once per window, not once per worker
    assert {r["window_start"].timestamp() for r in after} <= set(alerted)
    assert not {r["window_start"].timestamp() for r in before} & set(alerted)
    shifted = {r["window_start"].timestamp() for r in after}
    for ev in events:
        assert ev[1] == models["run"].id and ev[4] == "warning"
        assert "model 'scorer' version 1" in ev[5] and "columns drifted (" in ev[5]
        # a short window (the last one, cut by the stop) may drift on a column by chance
        if json.loads(ev[8])["window_start"] in shifted:
            assert "b" in json.loads(ev[8])["columns"]
    # asking again sends nothing more; last=N keeps the newest N windows
    mj.serving_drift("scorer")
    assert len(telemetry.list_events(store, None, ("serving_drift",))) == len(events)
    assert mj.serving_drift("scorer", last=1)["window_start"].to_list() == [
        frame["window_start"].max()
    ]


def test_without_training_data_needs_reference_and_log_inputs_keeps_rows(models):
    rng = np.random.default_rng(2)
    with mj.serve(
        "bare", monitor_window="1s", log_inputs=True, extra_env=models["env"], trusted=True
    ) as srv:
        _send(srv, rng, 3.0, 1.5)
    with pytest.raises(InvalidInputError, match="no linked training data.*reference="):
        mj.serving_drift("bare")
    with pytest.raises(InvalidInputError, match="no linked training data"):
        mj.serving_drift("bare", version=1)
    store = current_store()
    assert monitor.latest_drift(store, "bare", 1, 0) is None  # nothing judged
    frame = mj.serving_drift("bare", reference="train")
    big = frame.filter(pl.col("n") >= 1000)
    assert big.height and big["drifted"].all()
    assert all(c == ["b"] for c in big["columns"].to_list())
    # a user's reference is a check, not the training data: no alert
    assert telemetry.list_events(store, None, ("serving_drift",)) == []
    # --log-inputs: each window's sampled rows, as sent
    rows = sp.profiles(store, "bare")
    total = 0
    for r in rows:
        assert r["inputs_blob"] and r["profile"][0]["name"] == "a"
        df = pl.read_parquet(io.BytesIO(store.artifacts.blob_file(r["inputs_blob"]).read_bytes()))
        assert df.columns == ["a", "b"] and df.height == r["n_sampled"] == r["n_rows"]
        total += df.height
    assert total == sum(r["n_rows"] for r in rows) > 0
    with pytest.raises(ModelNotFoundError, match="nope"):
        mj.serving_drift("nope")


def test_reservoir_bounds_the_rows_kept_and_samples_requests_evenly():
    store = current_store()
    mon = monitor.InputMonitor(store, "m", window=3600, max_rows=500, worker="w")
    try:
        for i in range(1000):  # 100k rows in 100-row requests, request i holds value i
            mon.add("v1", 1, {"x": np.full(100, float(i))})
        (w,) = mon.windows.values()
        assert w.seen == 100_000 and w.requests == 1000
        assert w.rows <= 500 and len(w.items) == 5
        kept = sorted(float(it["x"][0]) for it in w.items)
        assert kept[-1] > 100  # later requests replaced early ones
        mon.add("v1", 1, {"x": np.zeros(5000)})  # one request larger than the sample
        assert w.rows <= 500
    finally:
        mon.close()
    (row,) = sp.profiles(store, "m")
    assert row["n_rows"] == 105_000 and row["n_sampled"] <= 500 and row["n_requests"] == 1001
    assert row["drift"] is None and row["reference"] is None  # model not registered


def test_window_parsing_columns_and_merging_workers(capsys):
    assert monitor.parse_window("60s") == 60 and monitor.parse_window("500ms") == 0.5
    assert monitor.parse_window("5m") == 300 and monitor.parse_window(2) == 2
    assert monitor.parse_window("off") == 0 and monitor.parse_window("0") == 0
    for bad in ("5x", "-1s", "0.01s", "2d"):
        with pytest.raises(InvalidInputError, match="window"):
            monitor.parse_window(bad)
    from mlops_jupyter.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["serve", "m", "--monitor-window", "5x"])
    assert e.value.code == 2 and "window must be a duration" in capsys.readouterr().err
    # column names: a lone [k] field as numpy's 0..k-1, several fields as field[i]; capped
    x = np.zeros((3, 2))
    assert monitor.window_frame([{"x": x}]).columns == ["0", "1"]
    assert monitor.window_frame([{"x": x, "t": np.ones(3)}]).columns == ["x[0]", "x[1]", "t"]
    wide = monitor.window_frame([{"img": np.zeros((2, 784))}, {"img": np.ones((1, 784))}])
    assert wide.shape == (3, monitor.MAX_COLUMNS)

    def row(n, stat_b, drifted_b):
        cols = [
            {"column": "a", "statistic": 0.01, "drifted": False},
            {"column": "b", "statistic": stat_b, "drifted": drifted_b},
        ]
        return {
            "window_start": 10.0,
            "window_end": 11.0,
            "variant": "v1",
            "version": 1,
            "n_rows": n,
            "n_sampled": n,
            "drift": {"columns": cols},
        }

    m = monitor.merge([row(300, 0.3, True), row(100, 0.02, False)])
    assert m["n"] == 400 and m["drifted"] is True and m["columns"] == ["b"]
    assert m["share"] == 0.5 and abs(m["statistics"]["b"] - (0.3 * 300 + 0.02 * 100) / 400) < 1e-12
    m = monitor.merge([row(100, 0.3, True), row(300, 0.02, False)])
    assert m["drifted"] is False and m["columns"] == []


class _FailingWrite:
    """The test's real store, whose `fail_at`-th write transaction fails (a store that
    cannot be reached for a moment)."""

    def __init__(self, store, fail_at: int) -> None:
        self._store, self._fail_at, self.writes = store, fail_at, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, what: str = "write to the store"):
        self.writes += 1
        if self.writes == self._fail_at:
            raise StoreError("the store cannot be reached (test)")
        return self._store.write(what)


def test_a_window_the_store_refused_is_stored_and_alerted_once_at_the_next_flush(models):
    store = current_store()
    # writes: the window's transaction, its row, the alert's mark (fails), the event
    flaky = _FailingWrite(store, fail_at=3)
    mon = monitor.InputMonitor(flaky, "scorer", window=3600, worker="w")
    try:
        rng = np.random.default_rng(3)
        for _ in range(5):
            mon.add("v1", 1, {"a": rng.normal(size=200), "b": rng.normal(6, 1, size=200)})
        later = time.time() + 7200
        mon.flush(later)
        assert sp.profiles(store, "scorer") == [] and mon.written == 0
        mon.flush(later)  # tried again: the row and its alert, together
        assert mon.written == 1 and mon.failed == 0
    finally:
        mon.close()
    (row,) = sp.profiles(store, "scorer")
    assert row["drifted"] is True and row["n_rows"] == 1000
    assert len(telemetry.list_events(store, None, ("serving_drift",))) == 1
