"""Tracking API against a real SQLite store: round trips, lifecycle, tables."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

import mlops_jupyter as mj


def test_context_manager_round_trip():
    with mj.start_run(
        "baseline",
        experiment="exp1",
        params={"lr": 3e-4, "layers": [64, 64]},
        tags={"team": "vision"},
    ) as run:
        assert mj.active_run() is run
        for step in range(100):
            mj.log(step=step, loss=1.0 / (step + 1), acc=step / 100)
        mj.log_metric("lr_now", 0.1)
        mj.log_params({"opt": "adam", "epochs": 3})
        mj.set_tags({"stage": "dev"})
    assert mj.active_run() is None
    assert run.status == "finished"

    df = mj.runs()
    assert df.height == 1
    row = df.row(0, named=True)
    assert row["id"] == run.id and row["name"] == "baseline" and row["experiment"] == "exp1"
    assert row["status"] == "finished"
    assert row["params.lr"] == pytest.approx(3e-4)
    assert row["params.opt"] == "adam" and row["params.epochs"] == 3
    assert row["params.layers"] == "[64, 64]"
    assert row["metrics.loss.last"] == pytest.approx(0.01)
    assert row["metrics.loss.min"] == pytest.approx(0.01)
    assert row["metrics.loss.max"] == pytest.approx(1.0)
    assert row["metrics.acc.max"] == pytest.approx(0.99)
    assert row["duration_s"] >= 0 and row["end_time"] >= row["start_time"]

    m = mj.metrics(run.id, "loss")
    assert m.columns == ["run_id", "key", "step", "ts", "value"]
    assert m["step"].to_list() == list(range(100))
    assert np.allclose(m["value"].to_numpy(), [1.0 / (s + 1) for s in range(100)])
    detail = mj.get_run(run.id)
    assert detail["tags"] == {"team": "vision", "stage": "dev"}
    assert {x["key"] for x in detail["metrics"]} == {"loss", "acc", "lr_now"}


def test_plain_calls_and_nesting():
    parent = mj.start_run("sweep")
    child = mj.start_run("trial-0")
    assert mj.active_run() is child
    mj.log_metric("x", 1.0)
    mj.end_run()
    assert mj.active_run() is parent
    mj.end_run(status="failed")
    df = mj.runs()
    by_name = {r["name"]: r for r in df.iter_rows(named=True)}
    assert by_name["trial-0"]["parent_id"] == parent.id
    assert by_name["sweep"]["status"] == "failed"
    assert by_name["trial-0"]["status"] == "finished"


def test_an_explicit_parent_wins_over_the_active_run():
    with mj.start_run("sweep") as sweep:
        pass
    with mj.start_run("other"):
        with mj.start_run("trial-0", parent=sweep.id) as by_id:
            assert mj.active_run() is by_id
        with mj.start_run("trial-1", parent=sweep):
            pass
        with pytest.raises(mj.InvalidInputError, match="parent"):
            mj.start_run("bad", parent=3)
        with pytest.raises(mj.RunNotFoundError):
            mj.start_run("lost", parent="no-such-run")
    by_name = {r["name"]: r for r in mj.runs().iter_rows(named=True)}
    assert by_name["trial-0"]["parent_id"] == sweep.id
    assert by_name["trial-1"]["parent_id"] == sweep.id
    assert by_name["other"]["parent_id"] is None
    assert "bad" not in by_name and "lost" not in by_name


def test_exception_marks_failed_and_interrupt_killed():
    with pytest.raises(ZeroDivisionError), mj.start_run("boom") as r1:
        mj.log_metric("loss", 1.0)
        1 / 0  # noqa: B018
    with pytest.raises(KeyboardInterrupt), mj.start_run("stopped") as r2:
        raise KeyboardInterrupt
    status = dict(mj.runs().select("id", "status").iter_rows())
    assert status[r1.id] == "failed"
    assert status[r2.id] == "killed"
    # the points logged before the failure are kept
    assert mj.metrics(r1.id)["value"].to_list() == [1.0]


def test_nan_and_inf_are_data():
    with mj.start_run() as run:
        mj.log_metric("v", 1.0)
        mj.log_metric("v", float("nan"))
        mj.log_metric("v", float("inf"))
        mj.log_metric("v", float("-inf"))
        mj.log_metric("last_nan", float("nan"))
    vals = mj.metrics(run.id, "v")["value"].to_list()
    assert vals[0] == 1.0 and math.isnan(vals[1]) and vals[2] == math.inf and vals[3] == -math.inf
    row = mj.runs().row(0, named=True)
    assert row["metrics.v.last"] == -math.inf
    assert row["metrics.v.min"] == -math.inf and row["metrics.v.max"] == math.inf
    assert math.isnan(row["metrics.last_nan.last"])


def test_auto_and_explicit_steps_and_out_of_order():
    with mj.start_run() as run:
        mj.log_metric("a", 1.0)  # step 0
        mj.log_metric("a", 2.0)  # step 1
        mj.log_metric("a", 3.0, step=10)
        mj.log_metric("a", 4.0)  # step 11
        mj.log_metric("b", 5.0, step=np.int64(7))
        mj.log_metric("b", 6.0, step=3)
    a = mj.metrics(run.id, "a")
    assert a["step"].to_list() == [0, 1, 10, 11]
    b = mj.metrics(run.id, "b")
    assert b["step"].to_list() == [3, 7] and b["value"].to_list() == [6.0, 5.0]


def test_numpy_and_torch_like_scalars():
    with mj.start_run() as run:
        mj.log_metric("np", np.float32(0.5))
        mj.log(np64=np.float64(2.0), npi=np.int32(3), flag=True)
    df = mj.metrics(run.id).sort("key")
    assert dict(zip(df["key"], df["value"])) == {"flag": 1.0, "np": 0.5, "np64": 2.0, "npi": 3.0}


def test_rerun_never_overwrites_and_default_names():
    ids = []
    for _ in range(3):
        with mj.start_run(experiment="e") as r:
            mj.log_metric("x", 1.0)
        ids.append(r.id)
    df = mj.runs(experiment="e")
    assert df.height == 3 and set(df["id"]) == set(ids)
    assert set(df["name"]) == {"run-1", "run-2", "run-3"}


def test_runs_filters():
    with mj.start_run(experiment="a"):
        pass
    with pytest.raises(RuntimeError), mj.start_run(experiment="b"):
        raise RuntimeError
    assert mj.runs(experiment="a").height == 1
    assert mj.runs(status="failed")["experiment"].to_list() == ["b"]
    assert mj.runs(experiment="nope").height == 0
    with pytest.raises(mj.InvalidInputError, match="status"):
        mj.runs(status="done")


def test_metrics_accepts_runs_frame_and_run_objects():
    with mj.start_run() as r1:
        mj.log(loss=1.0)
    with mj.start_run() as r2:
        mj.log(loss=2.0)
    assert mj.metrics(mj.runs()).height == 2
    assert mj.metrics([r1, r2.id])["value"].sort().to_list() == [1.0, 2.0]
    assert mj.metrics(r1.id[:6])["value"].to_list() == [1.0]
    assert isinstance(mj.metrics(r1.id, keys=[]), pl.DataFrame)


def test_artifacts_content_addressed(tmp_path, store_root):
    f = tmp_path / "model.txt"
    f.write_text("weights")
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("weights")  # same content as f: stored once
    (d / "sub" / "b.txt").write_text("other")
    with mj.start_run() as run:
        assert mj.log_artifact(f) == "model.txt"
        mj.log_artifact(d, name="bundle")
    detail = mj.get_run(run.id)
    names = {a["name"]: a for a in detail["artifacts"]}
    assert set(names) == {"model.txt", "bundle/a.txt", "bundle/sub/b.txt"}
    assert names["model.txt"]["digest"] == names["bundle/a.txt"]["digest"]
    blobs = [p for p in (store_root / "artifacts").rglob("*") if p.is_file()]
    assert len(blobs) == 2
    assert run.artifact_path("model.txt").read_text() == "weights"


def test_many_small_flushes_compact_and_keep_order():
    from mlops_jupyter.tracking.writer import writer_for

    with mj.start_run() as run:
        for i in range(200):
            mj.log_metric("k", float(i))
            writer_for(run.store).flush()  # one tiny chunk per point
    chunks = run.store.read(
        "SELECT count(*) FROM metric_chunks c JOIN metric_keys k ON k.id = c.key_id "
        "WHERE c.run_id=? AND k.key='k'",
        (run._rid,),
    )[0][0]
    assert chunks <= 2
    assert mj.metrics(run.id, "k")["value"].to_list() == [float(i) for i in range(200)]


@pytest.mark.sqlite_only
def test_store_lock_does_not_stall_logging(store_path):
    """Another process holding the write lock must not block log calls."""
    import sqlite3
    import time

    with mj.start_run() as run:
        mj.log_metric("x", 0.0)
        mj.flush()
        other = sqlite3.connect(store_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        t0 = time.perf_counter()
        for i in range(1, 1001):
            mj.log_metric("x", float(i))
        logging_time = time.perf_counter() - t0
        time.sleep(0.6)  # the writer is now waiting on the lock
        other.execute("COMMIT")
        other.close()
    assert logging_time < 0.5  # generous: a blocked call would take the busy timeout (5 s)
    assert mj.metrics(run.id, "x").height == 1001


def test_failed_write_is_retried_without_losing_or_shifting_points(monkeypatch):
    """A transaction that fails half-way is rolled back; the next flush writes the same
    points with the same auto-steps and valid key ids."""
    from mlops_jupyter.store import metrics as mstore
    from mlops_jupyter.tracking.writer import writer_for

    real = mstore.append_chunk
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # fail after the first group (and the new keys) were written
            raise OSError("disk hiccup")
        return real(*args, **kwargs)

    with mj.start_run() as run:
        w = writer_for(run.store)
        mj.log_metric("warm", 1.0)
        w.flush()
        mj.log(first=1.0, second=2.0)
        mj.log(first=3.0, second=4.0)
        monkeypatch.setattr(mstore, "append_chunk", flaky)
        with pytest.raises(OSError):
            w.flush()
        monkeypatch.setattr(mstore, "append_chunk", real)
        w.flush()
    m = mj.metrics(run.id).sort("key", "step")
    assert m.select("key", "step", "value").rows() == [
        ("first", 0, 1.0),
        ("first", 1, 3.0),
        ("second", 0, 2.0),
        ("second", 1, 4.0),
        ("warm", 0, 1.0),
    ]


def test_params_tags_and_end_left_to_the_writer_are_written_and_checked_at_the_call():
    from mlops_jupyter.errors import InvalidInputError

    run = mj.start_run("later", experiment="exp-later")
    mj.log(loss=0.5)
    # bad values are refused in the caller, as with wait=True
    with pytest.raises(InvalidInputError):
        run.log_params({"": 1}, wait=False)
    run.log_params({"lr": 0.1, "layers": [8, 8]}, wait=False)
    run.set_tags({"state": "pruned"}, wait=False)
    run.end("failed", wait=False)
    assert run.status == "failed" and mj.active_run() is None
    # any read (or mj.flush()) writes what was queued: params, tags, the end and the points
    row = mj.runs(experiment="exp-later").row(0, named=True)
    assert row["status"] == "failed" and row["end_time"] is not None
    assert row["params.lr"] == 0.1 and row["params.layers"] == "[8, 8]"
    assert row["metrics.loss.last"] == 0.5
    assert mj.get_run(run.id)["tags"] == {"state": "pruned"}
    # the next run's parent is not the one ended without waiting
    with mj.start_run("next", experiment="exp-later") as nxt:
        pass
    assert mj.get_run(nxt.id).get("parent_id") is None
