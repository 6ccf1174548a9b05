"""System telemetry and data versions through a real `mlops-jupyter server` process: the
same script logged through the server and into a local store records the same samples,
episodes, versions, profiles and run links; a read token cannot write; a retried request
stores once. One server for the module (SQLite, or PostgreSQL in the CI's suites)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from trackserver_helpers import Server, request

import mlops_jupyter as mj
from mlops_jupyter import data as mdata
from mlops_jupyter.store import open_store, tokens
from mlops_jupyter.telemetry import sampler

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    from conftest import BACKEND

    tmp = tmp_path_factory.mktemp("remote-telemetry-data")
    if BACKEND == "postgresql":
        loc: Any = request.getfixturevalue("pg_server").new_database()
    else:
        loc = tmp / "store.db"
    store = open_store(loc)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env.update(
        MLOPS_JUPYTER_STORE=str(loc),
        MLOPS_JUPYTER_CACHE=str(tmp / "server-cache"),
        MLOPS_JUPYTER_TELEMETRY="0",
        PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    srv = Server(env, tmp, "--artifacts", str(tmp / "artifacts")).start()
    srv.store = store  # type: ignore[attr-defined]
    srv.wtok = tokens.add(store, "writer", "write")  # type: ignore[attr-defined]
    srv.rtok = tokens.add(store, "reader", "read")  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _use(monkeypatch, tmp_path: Path, where: str, tok: str | None = None) -> None:
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", where)
    monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
    if tok:
        monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", tok)
    else:
        monkeypatch.delenv("MLOPS_JUPYTER_TOKEN", raising=False)


def _data_script(tag: str, csv: Path) -> str:
    """Versions a frame, a file (output) and the CSV it reads (data autolog) in a run, and a
    frame outside any run; the run's id."""
    frame = pl.DataFrame(
        {
            "x": [1.0, 2.5, None, 4.0],
            "f": [float("nan"), 1.0, float("inf"), 2.0],  # non-finite values profile alike
            "c": ["a", "b", "a", None],
        }
    )
    with mj.start_run(f"data-{tag}", experiment="remote-data") as run:
        v = mj.version(frame, name="frame")
        assert v.is_new and v.n_rows == 4
        assert mj.version(frame, name="frame").id == v.id  # same content, same version
        pl.read_csv(csv)  # recorded by the data autolog
        mj.version(csv, name="table", role="output")
    mj.version(pl.DataFrame({"y": [1, 2, 3]}), name="outside")
    assert mdata.get_version("frame").id == v.id
    assert mdata.get_version(v.id[:6]).profile == v.profile
    return run.id


_VCOLS = "v.vid, v.fingerprint, v.name, v.kind, v.source, v.n_rows, v.n_cols, v.size_bytes"


def _data_rows(store: Any, uid: str) -> tuple[list, list]:
    import json

    versions = [
        (*r[:-2], json.loads(r[-2] or "null"), json.loads(r[-1] or "null"))
        for r in store.read(
            f"SELECT {_VCOLS}, v.schema, v.profile FROM data_versions v ORDER BY vid"
        )
    ]
    links = store.read(
        "SELECT v.vid, d.role, d.name, d.source FROM run_data d JOIN runs r ON r.id = d.run_id"
        " JOIN data_versions v ON v.id = d.version_id WHERE r.uid=? ORDER BY v.vid, d.role",
        (uid,),
    )
    return versions, [tuple(x) for x in links]


def test_data_versions_through_the_server_equal_local(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    monkeypatch.setenv("MLOPS_JUPYTER_AUTOLOG_DATA", "1")
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,x\n2,y\n3,\n")
    local_path = tmp_path / "local.db"
    _use(monkeypatch, tmp_path, str(local_path))
    local_uid = _data_script("local", csv)
    local_versions = mdata.versions()
    _use(monkeypatch, tmp_path, server.url, server.wtok)
    remote_uid = _data_script("remote", csv)
    remote_versions = mdata.versions()
    lv, ll = _data_rows(open_store(local_path), local_uid)
    rv, rl = _data_rows(server.store, remote_uid)
    assert rv == lv and len(lv) == 3
    assert rl == ll and {x[1] for x in ll} == {"input", "output"}
    cols = ["id", "name", "kind", "n_rows", "n_cols", "size_bytes", "source", "fingerprint"]
    assert remote_versions.select(cols).equals(local_versions.select(cols))
    with pytest.raises(LookupError):
        mdata.get_version("no-such-version")


def _telemetry_script() -> str:
    """Synthetic samples through a sampler without a thread (as tests/test_telemetry.py):
    a thermal episode that ends, one still open at the run's end, a non-finite loss."""
    hub = sampler.Hub()
    run = mj.start_run("hot", experiment="remote-telemetry")
    st = hub.add(run, thread=False)
    hub.process([st], {"sys/thermal_state": 2.0, "sys/cpu/percent": 10.0}, 100.0)
    hub.process([st], {"sys/thermal_state": 3.0}, 101.0)
    hub.process([st], {"sys/thermal_state": 0.0}, 102.0)
    hub.process([st], {"sys/gpu0/throttle_thermal": 1.0, "sys/gpu0/temp_c": 91.0}, 103.0)
    # a rule on the user's own metrics: a non-finite loss (read back from the server's
    # store over a tracking server, from the local store otherwise)
    run.log(0, loss=1.0)
    run.log(1, loss=float("nan"))
    run.flush()
    hub.process([st], {"sys/cpu/percent": 5.0}, 104.0)
    run.end()
    return run.id


def _telemetry_rows(store: Any, uid: str) -> tuple[list, list]:
    import json

    (rid,) = store.read("SELECT id FROM runs WHERE uid=?", (uid,))[0]
    events = [
        (k, lvl, msg, s, e is not None, json.loads(d or "null"))
        for k, lvl, msg, s, e, d in store.read(
            "SELECT kind, level, message, start_time, end_time, data FROM run_events"
            " WHERE run_id=? AND kind IN ('throttle', 'alert') ORDER BY start_time, id",
            (rid,),
        )
    ]
    df = mj.metrics(uid)  # through whichever store the test uses
    points = sorted(
        (k, s, v) for k, s, v in zip(df["key"], df["step"], df["value"]) if k.startswith("sys/")
    )
    return events, points


def test_telemetry_through_the_server_equals_local(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")  # only the synthetic sampler
    local_path = tmp_path / "local.db"
    _use(monkeypatch, tmp_path, str(local_path))
    local = _telemetry_rows(open_store(local_path), _telemetry_script())
    _use(monkeypatch, tmp_path, server.url, server.wtok)
    remote = _telemetry_rows(server.store, _telemetry_script())
    assert remote == local
    events, points = remote
    # two throttle episodes, the GPU temperature alert and the loss alert, every one closed
    assert [e[0] for e in events].count("throttle") == 2 and all(e[4] for e in events)
    assert any(e[0] == "alert" and "loss" in e[2] for e in events), events
    assert [v for k, _s, v in points if k == "sys/thermal_state"] == [2.0, 3.0, 0.0]


def test_the_sampler_thread_logs_a_remote_run(server, monkeypatch, tmp_path):
    # the start hook is attached to runs over the server: real samples reach its store
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1")
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "0.05")
    _use(monkeypatch, tmp_path, server.url, server.wtok)
    with mj.start_run("sampled", experiment="remote-telemetry") as run:
        deadline = time.monotonic() + 10
        while sampler.hub().states_for(run) and sampler.hub().states_for(run).samples < 3:
            assert time.monotonic() < deadline, "no samples taken"
            time.sleep(0.05)
    keys = set(mj.metrics(run.id)["key"].to_list())
    assert "sys/cpu/percent" in keys


def test_read_token_refused_and_retries_store_once(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    _use(monkeypatch, tmp_path, server.url, server.wtok)
    run = mj.start_run("retry", experiment="remote-data")
    run.flush()
    rec = {"id": "feedbeef0001", "fingerprint": "f" * 32, "kind": "frame", "name": "retried"}
    body = {"record": rec, "role": "input", "run": run.id, "name": "retried"}

    def counts() -> tuple[int, int]:
        nv = server.store.read(
            "SELECT count(*) FROM data_versions WHERE fingerprint=?", ("f" * 32,)
        )
        nl = server.store.read(
            "SELECT count(*) FROM run_data d JOIN data_versions v ON v.id = d.version_id"
            " WHERE v.fingerprint=?",
            ("f" * 32,),
        )
        return nv[0][0], nl[0][0]

    status, out = request(server.url, "POST", "/api/v1/data/versions", server.rtok, body)
    assert status == 403 and "write" in out["message"]
    assert counts() == (0, 0)
    eid = run.add_event("throttle", "hot", "warning", start=50.0)
    end_path = f"/api/v1/runs/{run.id}/events/{eid}/end"
    assert request(server.url, "POST", end_path, server.rtok, {"end": 60.0})[0] == 403
    # the same request twice (an answer lost in between): one version, one link
    first = request(server.url, "POST", "/api/v1/data/versions", server.wtok, body)
    again = request(server.url, "POST", "/api/v1/data/versions", server.wtok, body)
    assert first[0] == again[0] == 200
    assert first[1]["new"] is True and again[1]["new"] is False
    assert first[1]["version"] == again[1]["version"]
    assert counts() == (1, 1)
    for _ in range(2):
        assert request(server.url, "POST", end_path, server.wtok, {"end": 60.0})[0] == 200
    assert server.store.read("SELECT end_time FROM run_events WHERE id=?", (eid,)) == [(60.0,)]
    # a live view's frame reads with a read token: the closed episode, the run's status
    status, frame = request(server.url, "GET", f"/api/v1/runs/{run.id}/live", server.rtok)
    assert status == 200 and frame["status"] == "running"
    assert [(e["message"], e["end_time"]) for e in frame["events"]] == [("hot", 60.0)]
    # bad input: 4xx, nothing stored; an event of another run is not found
    bad = dict(body, record={**rec, "n_rows": -1})
    assert request(server.url, "POST", "/api/v1/data/versions", server.wtok, bad)[0] == 400
    # an id that already names another fingerprint's version: refused, never a 500
    forged = dict(body, record={**rec, "fingerprint": "d" * 32})
    status, out = request(server.url, "POST", "/api/v1/data/versions", server.wtok, forged)
    assert status == 400 and "another fingerprint" in out["message"]
    assert not server.store.read("SELECT 1 FROM data_versions WHERE fingerprint=?", ("d" * 32,))
    assert counts() == (1, 1)
    unknown = dict(body, run="no-such-run", record={**rec, "fingerprint": "e" * 32})
    assert request(server.url, "POST", "/api/v1/data/versions", server.wtok, unknown)[0] == 404
    assert not server.store.read("SELECT 1 FROM data_versions WHERE fingerprint=?", ("e" * 32,))
    other = mj.start_run("other", experiment="remote-data")
    other.flush()
    wrong = f"/api/v1/runs/{other.id}/events/{eid}/end"
    assert request(server.url, "POST", wrong, server.wtok, {"end": 70.0})[0] == 404
    other.end()
    run.end()


def test_live_monitor_reads_through_the_server(server, monkeypatch, tmp_path):
    from mlops_jupyter.widgets import live

    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    _use(monkeypatch, tmp_path, server.url, server.wtok)
    run = mj.start_run("watched", experiment="remote-live")
    w = live(run, display=False)
    for i in range(5):
        run.log(i, loss=1.0 / (i + 1))
    run.log(5, loss=float("nan"))
    run.add_event("alert", "loss is not finite", "error", start=10.0)
    run.flush()
    w.refresh()  # what a frame reads: the new points of the grown series only
    assert w.series["loss"]["x"] == [0, 1, 2, 3, 4, 5] and w.series["loss"]["n"] == 6
    assert w.series["loss"]["y"][:2] == [1.0, 0.5] and w.series["loss"]["y"][5] is None
    assert [a["message"] for a in w.alerts] == ["loss is not finite"]
    run.log(6, loss=0.1)
    run.flush()
    w.refresh()
    assert w.series["loss"]["x"][-1] == 6 and w.series["loss"]["n"] == 7
    run.end()
    w.wait(10)
    assert w.status == "finished"
    # a finished run by name (drawn once), and the newest run when none is given
    again = live("watched", display=False)
    assert again.status == "finished" and again.series["loss"]["n"] == 7
    assert live(display=False).title == again.title
