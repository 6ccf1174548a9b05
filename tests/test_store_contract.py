"""The storage contract (store/base.py), run against every backend: a real SQLite file and a
real PostgreSQL server. A behaviour that differs between them fails here."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError, StoreError
from mlops_jupyter.store import api_queries as aq
from mlops_jupyter.store import capture as cstore
from mlops_jupyter.store import data as dstore
from mlops_jupyter.store import metrics as mstore
from mlops_jupyter.store import registry as sreg
from mlops_jupyter.store import runs as rstore
from mlops_jupyter.store import schema
from mlops_jupyter.store.db import forget, open_store

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path, monkeypatch) -> str:
    """A fresh store location on each backend; the module API uses it."""
    if request.param == "sqlite":
        loc = str(tmp_path / "contract" / "store.db")
    else:
        loc = request.getfixturevalue("pg_url")
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp_path / "artifacts"))
    mj.set_store(loc)
    yield loc
    mj.set_store(None)


@pytest.fixture
def store(location):
    st = open_store(location)
    yield st
    st.close()
    forget(st)


def test_new_store_has_every_migration(store):
    assert store.schema_version() == schema.LATEST
    info = store.info()
    assert info["backend"] in BACKENDS and info["size_bytes"] > 0
    assert "username" in store.columns("runs")


def test_run_params_tags_events_round_trip(store):
    rid, uid, name = rstore.create_run(
        store,
        None,
        "exp",
        rstore.encode_items({"lr": 0.1, "layers": [2, 3]}, "params"),
        rstore.encode_items({"team": "vision"}, "tags"),
    )
    assert name == "run-1"
    rstore.set_kv(store, "params", rid, {"lr": 0.2, "flag": True})  # replaces lr
    ev = rstore.add_event(store, rid, "alert", "loss spiked", "warning", {"step": 3})
    assert isinstance(ev, int)
    rstore.finish_run(store, rid, "finished")
    d = aq.run_detail(store, rid)
    assert d["params"] == {"lr": 0.2, "layers": [2, 3], "flag": True}
    assert d["tags"] == {"team": "vision"} and d["status"] == "finished"
    assert rstore.resolve_run(store, uid[:6]) == rid == rstore.resolve_run(store, "run-1")
    # default names count per experiment, whatever else is there
    rid2, _, name2 = rstore.create_run(store, None, "exp", [], [])
    assert name2 == "run-2" and rid2 != rid


def test_metrics_via_the_public_api_read_back_exactly(location):
    rng = np.random.default_rng(0)
    vals = rng.normal(size=5000)
    with mj.start_run(experiment="m") as run:
        for i, v in enumerate(vals):
            mj.log_metric("loss", float(v), step=i * 2)
        mj.log_metric("acc", 0.5, step=7)
        mj.log_metric("f1", float("nan"), step=7)
    h = mj.metrics(run.id, keys=["loss"])
    assert h["step"].to_list() == list(range(0, 10000, 2))
    assert h["value"].to_list() == vals.tolist()
    d = mj.get_run(run.id)
    m = {x["key"]: x for x in d["metrics"]}
    assert m["loss"]["count"] == 5000 and m["loss"]["min"] == vals.min()
    assert m["acc"]["last"] == 0.5


def test_summary_min_max_fold_across_chunks(store):
    rid, _, _ = rstore.create_run(store, None, "e", [], [])
    keys: dict[str, int] = {}
    with store.write() as c:
        mstore.key_ids(c, ["x"], keys)
        for seq, arr in enumerate([[3.0, 5.0], [np.nan, 1.0], [4.0, 9.0]]):
            steps = np.arange(seq * 2, seq * 2 + 2, dtype=np.int64)
            ts = np.zeros(2, dtype=np.int64)
            mstore.append_chunk(c, rid, keys["x"], seq, steps, ts, np.array(arr))
    row = store.read(
        "SELECT n, min_value, max_value, last_value FROM metric_summary WHERE run_id=?", (rid,)
    )[0]
    assert tuple(row) == (6, 1.0, 9.0, 9.0)
    steps, _, values = mstore.read_series(store, rid, keys["x"])
    assert steps.tolist() == list(range(6))


def test_nested_write_is_a_savepoint(store):
    with store.write() as c:
        c.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("outer", 1.0))
        with pytest.raises(RuntimeError):
            with store.write() as c2:
                c2.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("inner", 1.0))
                raise RuntimeError("undo the inner part only")
        with store.write() as c3:
            c3.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("kept", 1.0))
    names = {r[0] for r in store.read("SELECT name FROM experiments")}
    assert names == {"outer", "kept"}


def test_failed_write_rolls_back_and_raises_store_error(store):
    with store.write() as c:
        c.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("a", 1.0))
    with pytest.raises(StoreError) as ei:
        with store.write() as c:
            c.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("b", 1.0))
            c.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("a", 2.0))
    assert ei.value.__cause__ is not None  # the database's own error is chained
    assert {r[0] for r in store.read("SELECT name FROM experiments")} == {"a"}
    # the connection is usable afterwards (no transaction left open)
    with store.write() as c:
        c.execute("INSERT INTO experiments(name, created) VALUES(?, ?)", ("c", 1.0))
    assert len(store.read("SELECT name FROM experiments")) == 2


def test_bad_query_arguments_are_invalid_input(store):
    with pytest.raises(InvalidInputError):
        store.read("SELECT id FROM runs WHERE id = ?", (2**70,))
    with pytest.raises(OverflowError), store.write() as c:
        c.execute("UPDATE runs SET pid = ? WHERE id = 1", (2**70,))


def test_concurrent_writers_in_threads(store):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(15):
                rid, _, _ = rstore.create_run(store, f"t{i}-{j}", f"exp{i % 3}", [], [])
                rstore.set_kv(store, "tags", rid, {"i": i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.read("SELECT count(*), count(DISTINCT id), count(DISTINCT uid) FROM runs")[0] == (
        90,
        90,
        90,
    )
    assert store.read("SELECT count(*) FROM experiments")[0][0] == 3


def test_numeric_param_filters_and_sorting(location, store):
    for lr, opt in [(0.1, "adam"), (0.01, "sgd"), (1, "adam"), ("high", "adam")]:
        with mj.start_run(name=f"lr={lr}", experiment="f", params={"lr": lr, "opt": opt}):
            pass
    got = aq.list_runs(store, conditions=["params.lr>0.05"])
    assert sorted(r["name"] for r in got["runs"]) == ["lr=0.1", "lr=1"]
    found = aq.list_runs(store, conditions=["params.opt~AD"])  # LIKE ignores case
    assert len(found["runs"]) == 3
    from mlops_jupyter.store import api_table as at

    t = at.table(
        store, columns=["params.lr"], experiment="f", sort="params.lr", order="asc", limit=10
    )
    f = t["fields"]
    assert [r[f.index("params.lr")] for r in t["rows"]] == [0.01, 0.1, 1, "high"]


def test_registry_versions_stages_aliases_audit(store):
    rid, _, _ = rstore.create_run(store, None, "e", [], [])
    kw = {"flavor": "file", "digest": "d" * 64, "size": 3, "run_rid": rid, "user": "ana"}
    v1 = sreg.create_version(store, "clf", path="models/clf/1", metrics={"acc": 0.8}, meta={}, **kw)
    v2 = sreg.create_version(store, "clf", path="models/clf/2", metrics={"acc": 0.9}, meta={}, **kw)
    assert (v1, v2) == (1, 2)
    allowed = {
        "none": ("staging", "production"),
        "staging": ("production",),
        "production": ("archived",),
        "archived": ("production",),
    }
    sreg.transition(store, "clf", 1, "production", allowed, None, "ana", True)
    sreg.transition(store, "clf", 2, "production", allowed, "better", "ana", True)
    stages = {v["version"]: v["stage"] for v in sreg.list_versions(store, "clf")}
    assert stages == {1: "archived", 2: "production"}
    assert sreg.set_alias(store, "clf", "champion", 2, "ana") is None
    assert sreg.set_alias(store, "clf", "champion", 1, "bo") == 2
    log = sreg.audit_log(store, "clf")
    assert [r[3] for r in log][-2:] == ["alias", "alias"] and log[-1][-1] == "bo"


def test_data_versions_and_cells(store):
    rid, _, _ = rstore.create_run(store, None, "e", [], [])
    rec = {
        "id": "dv1",
        "fingerprint": "f" * 16,
        "name": "train",
        "kind": "frame",
        "n_rows": 10,
        "n_cols": 2,
        "schema": {"a": "i64"},
        "profile": {"a": {"mean": 1.5}},
    }
    vid, new = dstore.save_version(store, rec)
    assert new and dstore.save_version(store, rec) == (vid, False)
    dstore.link_version(store, rid, vid, "input", "train", "train.csv")
    dstore.link_version(store, rid, vid, "input", "train2", "train.csv")  # replaces the link
    got = dstore.run_versions(store, rid)
    assert len(got) == 1 and got[0]["name"] == "train2"
    assert dstore.has_profile(store, "f" * 16) is True
    cstore.record_cells(
        store,
        [(rid, 0, "c1", 1, "h1", time.time(), 0.1, "ok", None)],
        {"h1": "x = 1\nprint('100% done')"},
    )
    cstore.record_cells(store, [], {"h1": "x = 1\nprint('100% done')"})  # stored once
    cells = cstore.cells_for_run(store, rid)
    assert cells[0]["source"] == "x = 1\nprint('100% done')"
    cstore.link_run_cell(store, rid, "nb.ipynb", "c1")
    cstore.link_run_cell(store, rid, "nb.ipynb", "c1")
    assert cstore.last_run_for_cell(store, "nb.ipynb", "c1") == rid


def test_stale_heartbeat_of_another_host_reads_crashed(store):
    rid, _, _ = rstore.create_run(store, None, "e", [], [])
    with store.write() as c:
        c.execute(
            "UPDATE runs SET host='elsewhere', heartbeat=? WHERE id=?", (time.time() - 900, rid)
        )
    assert rstore.reconcile(store, stale_after=300) == 1
    assert aq.run_detail(store, rid)["status"] == "crashed"
    # the process that owned it comes back and ends it: the end is honest again
    rstore.finish_run(store, rid, "finished")
    assert aq.run_detail(store, rid)["status"] == "finished"


def test_artifacts_round_trip(location, tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"\x00\x01weights")
    with mj.start_run() as run:
        mj.log_artifact(f)
    assert run.artifact_path("w.bin").read_bytes() == b"\x00\x01weights"
