"""Drift reports, preflight checks, data lineage, run resolution and LLM evaluation through a
real `mlops-jupyter server` process: the same script run against the server and against a
local store gives the same reports, events, tags, lineage and evaluation tables; a read
token cannot write; a retried request stores once; bad requests are 4xx with nothing stored.
One server for the module (SQLite, or PostgreSQL in the CI's suites)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import polars as pl
import pytest
from trackserver_helpers import module_remote, request, use_remote

import mlops_jupyter as mj
from mlops_jupyter import data as mdata
from mlops_jupyter.errors import RunNotFoundError, StoreError
from mlops_jupyter.tracking.api import resolve_run

pytestmark = pytest.mark.timeout(120)

RNG = np.random.default_rng(7)
TRAIN = pl.DataFrame({"x": RNG.normal(0, 1, 300), "c": RNG.choice(["a", "b", "c"], 300)})
LIVE = pl.DataFrame({"x": RNG.normal(0.8, 1, 300), "c": RNG.choice(["a", "b"], 300)})
QA = pl.DataFrame(
    {
        "question": ["capital of France?", "2+2?", "colour of the sky?", "largest planet?"],
        "answer": ["Paris", "4", "blue", "Jupiter"],
        "reference": ["Paris", "4", "blue", "Jupiter"],
    }
)
QA2 = QA.with_columns(pl.Series("answer", ["Lyon", "4", "blue", "Mars"]))


def judge(prompt: str) -> float:
    """A local, deterministic scorer (no model)."""
    return float(len(prompt) % 5)


@pytest.fixture(scope="module")
def remote(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-data-more")


@pytest.fixture
def local_loc(tmp_path, request):
    """A local store on the module's backend (a new PostgreSQL database in that pass)."""
    from conftest import BACKEND

    if BACKEND == "postgresql":
        return request.getfixturevalue("pg_server").new_database()
    return str(tmp_path / "local.db")


def _local(monkeypatch, loc: Any) -> None:
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(loc))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN", raising=False)


def _no_ids(obj: Any) -> Any:
    """`obj` without what differs between two stores (run ids, report ids, times)."""
    drop = {"id", "run_id", "created", "linked", "start_time", "report", "status"}
    if isinstance(obj, dict):
        return {k: _no_ids(v) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_no_ids(v) for v in obj]
    return obj


def _data_script(tag: str) -> dict[str, Any]:
    """Versions, drift (raw and from profiles), preflight, lineage: what the stores hold."""
    with mj.start_run(f"prep-{tag}", experiment="data-more") as prep:
        mj.version(TRAIN, name="train", role="output")
        mj.version(LIVE, name="live", role="output")
    with mj.start_run(f"train-{tag}", experiment="data-more") as run:
        mj.version(TRAIN, name="train")
        raw = mj.drift(TRAIN, LIVE)
        prof = mj.drift("train", "live", num_method="psi")
        ok = mj.preflight(TRAIN, min_rows=10, not_null=True, on_fail="warn")
        with pytest.warns(RuntimeWarning):
            bad = mj.preflight(TRAIN, min_rows=10_000, on_fail="warn")
    outside = mj.drift(TRAIN, TRAIN, run=False)  # no run: a report, no event
    assert raw.id and prof.id and outside.id and ok.passed and not bad.passed
    reports = mdata.drift_reports(run)
    assert [r.id for r in reports] == [prof.id, raw.id]
    assert len(mdata.drift_reports()) >= 3
    lin = mj.lineage(run.id)
    assert [r["run_name"] for r in lin.upstream] == [prep.name]
    users = mdata.runs_for("train")
    assert sorted(users["run_name"].to_list()) == sorted([prep.name, run.name])
    d = mj.get_run(run.id)
    out = {
        "raw": _no_ids(raw.data),
        "prof": _no_ids(prof.data),
        "reports": [_no_ids(r.data) for r in reports],
        "events": [
            (e["kind"], e["level"], e["message"].replace(run.id, "RUN"), _no_ids(e.get("data")))
            for e in d["events"]
            if e["kind"] in ("drift", "preflight")
        ],
        "tags": {k: v for k, v in d["tags"].items() if k == "preflight"},
        "lineage": _no_ids(lin.to_dict()),
        "runs_for": users.drop("run_id", "run_name").sort("role").to_dicts(),
    }
    # the run names differ by the tag only
    return {**json.loads(json.dumps(out).replace(f"-{tag}", "")), "run": run.id}


def test_data_features_through_the_server_equal_local(remote, monkeypatch, tmp_path, local_loc):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    _local(monkeypatch, local_loc)
    local = _data_script("local")
    use_remote(monkeypatch, remote, tmp_path)
    over = _data_script("remote")
    assert over.pop("run") != local.pop("run")
    for k in local:
        assert over[k] == local[k], (k, json.dumps(over[k])[:1500], json.dumps(local[k])[:1500])
    assert [e[0] for e in local["events"]] == ["drift", "drift", "preflight", "preflight"]
    assert local["tags"] == {"preflight": "failed"}
    # the rows are in the server's store, linked to the run and both versions
    rows = remote.rows(
        "SELECT r.uid, rv.vid, cv.vid FROM drift_reports d JOIN runs r ON r.id=d.run_id"
        " JOIN data_versions rv ON rv.id=d.ref_version_id"
        " JOIN data_versions cv ON cv.id=d.cur_version_id ORDER BY d.id"
    )
    assert len(rows) == 2 and {r[0] for r in rows} == {mj.get_run("train-remote")["id"]}


def test_resolve_run_and_cli_reads(remote, monkeypatch, tmp_path):
    use_remote(monkeypatch, remote, tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with mj.start_run("resolve-me", experiment="data-more") as run:
        mj.version(TRAIN, name="train")
        mj.version(LIVE, name="live")
        mj.drift(TRAIN, LIVE)
        mj.log_artifact(tmp_path / "notes.txt")
    ((rid,),) = remote.rows("SELECT id FROM runs WHERE uid=?", run.id)
    assert resolve_run("resolve-me") == resolve_run(run.id[:8]) == resolve_run(run) == rid
    with pytest.raises(RunNotFoundError):
        resolve_run("no-such-run")
    with pytest.raises(RunNotFoundError):
        mj.lineage("no-such-run")
    env = {**__import__("os").environ}
    got = tmp_path / "got.txt"
    for args in (
        ["data", "lineage", run.id],
        ["artifacts", "ls", "resolve-me", "--json"],
        ["artifacts", "get", run.id[:8], "notes.txt", "-o", str(got)],
        ["data", "drift", "train", "live", "--json"],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "mlops_jupyter", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, (args, p.stderr)
        if args[:2] == ["artifacts", "ls"]:
            assert [a["name"] for a in json.loads(p.stdout)] == ["notes.txt"]
    assert got.read_text() == "hello"
    assert json.loads(p.stdout)["current"]["id"] == mdata.get_version("live").id


def test_notebook_export_links_the_servers_run(remote, monkeypatch, tmp_path):
    use_remote(monkeypatch, remote, tmp_path)
    nb = tmp_path / "train.ipynb"
    cell = {"cell_type": "code", "source": "x = 1\n", "metadata": {}, "outputs": []}
    nb.write_text(json.dumps({"cells": [{**cell, "execution_count": None}], "metadata": {},
                              "nbformat": 4, "nbformat_minor": 5}))  # fmt: skip
    assert mj.export_notebook(nb, tmp_path / "p0").source_run is None  # no run of it yet
    with mj.start_run("nb-run", experiment="nb-exp") as run:
        mj.set_tags({"notebook.path": str(nb.resolve())})  # what the notebook capture records
    res = mj.export_notebook(nb, tmp_path / "p1")
    assert res.source_run == run.id
    with mj.start_run("other", experiment="nb-exp") as other:
        pass
    assert mj.export_notebook(nb, tmp_path / "p2", source_run="other").source_run == other.id


def _llm_script(tag: str) -> dict[str, Any]:
    kw = dict(metrics=["exact_match", "token_f1", "rougeL"], judge=judge, n_boot=200)
    with mj.start_run(f"llm-a-{tag}", experiment="llm-more") as a:
        mj.llm_eval(QA, **kw)
    with mj.start_run(f"llm-b-{tag}", experiment="llm-more") as b:
        mj.llm_eval(QA2, **kw)
    table = mj.llm.eval_table(a)
    ex = mj.llm.compare_examples(a, b, metric="token_f1")
    scores = mj.llm.compare_scores([a, b]).drop("run", "run_id")
    reg = mj.llm_regressions(b, a)
    alerts = [
        (e["level"], e["data"]["metric"], e["data"]["current"])
        for e in mj.get_run(b.id)["events"]
        if e["kind"] == "alert"
    ]
    listed = mj.alerts([b]).select("run_name", "kind", "rule", "level", "active")
    listed = listed.with_columns(listed["run_name"].str.replace(f"-{tag}", ""))
    return {"table": table, "ex": ex, "scores": scores, "reg": reg, "alerts": alerts, "ls": listed}


def test_llm_evaluation_through_the_server_equals_local(remote, monkeypatch, tmp_path, local_loc):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    _local(monkeypatch, local_loc)
    local = _llm_script("local")
    use_remote(monkeypatch, remote, tmp_path)
    over = _llm_script("remote")
    for k in ("table", "ex", "scores", "reg", "ls"):
        assert over[k].equals(local[k]), k
    assert over["alerts"] == local["alerts"] and local["alerts"]  # the regressions recorded
    assert local["table"].height == 4


def test_read_token_refused_retries_store_once_bad_input(remote, monkeypatch, tmp_path):
    use_remote(monkeypatch, remote, tmp_path)
    with mj.start_run("writes", experiment="data-more") as run:
        v = mj.version(TRAIN, name="train")
    count = lambda: remote.rows("SELECT COUNT(*) FROM drift_reports")[0][0]  # noqa: E731
    events = lambda: remote.rows(  # noqa: E731
        "SELECT COUNT(*) FROM run_events e JOIN runs r ON r.id=e.run_id WHERE r.uid=?", run.id
    )[0][0]
    n, ne = count(), events()
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote.rtok)
    with pytest.raises(StoreError, match="scope write"):
        mj.drift(TRAIN, LIVE, run=run.id)
    with pytest.raises(StoreError, match="scope write"):
        mj.preflight(TRAIN, min_rows=1, run=run.id)
    assert len(mdata.drift_reports()) == n  # reads work with a read token
    assert resolve_run(run.id) > 0
    assert (count(), events()) == (n, ne)
    # a report sent twice (a retry after a lost answer) is stored once, with one event
    body = {
        "id": "0123456789ab",
        "reference": v.id,
        "current": v.id,
        "run": run.id,
        "n_columns": 1,
        "n_drifted": 0,
        "drift_share": 0.0,
        "dataset_drift": False,
        "mode": "raw",
        "result": {"columns": [], "settings": {}, "skipped": []},
    }
    url, w = remote.srv.url, remote.wtok
    assert request(url, "POST", "/api/v1/data/drift", w, body) == (
        200,
        {"id": body["id"], "new": True},
    )
    assert request(url, "POST", "/api/v1/data/drift", w, body)[1]["new"] is False
    pre = {"key": "k1", "level": "info", "message": "preflight passed", "data": {}, "passed": True}
    path = f"/api/v1/runs/{run.id}/preflight"
    assert request(url, "POST", path, w, pre)[1] == request(url, "POST", path, w, pre)[1]
    assert (count(), events()) == (n + 1, ne + 2)
    # bad input: 4xx, nothing stored
    for b, status in (
        ({**body, "id": "x"}, 400),
        ({**body, "id": "0123456789ac", "reference": "no-such-version"}, 404),
        ({**body, "id": "0123456789ad", "run": "no-such-run"}, 404),
        ({**body, "id": "0123456789ae", "n_drifted": 2}, 400),
        ({**body, "id": "0123456789af", "drift_share": float("inf")}, 400),
    ):
        raw = json.dumps(b).encode()
        assert request(url, "POST", "/api/v1/data/drift", w, raw=raw)[0] == status, b
    assert request(url, "POST", "/api/v1/runs/nope/preflight", w, pre)[0] == 404
    assert request(url, "POST", path, w, {**pre, "level": "loud"})[0] == 400
    assert request(url, "GET", "/api/v1/data/drift?limit=0", w)[0] == 400
    assert request(url, "GET", "/api/v1/data/versions/nope/runs", w)[0] == 404
    assert request(url, "POST", "/api/v1/data/drift", remote.rtok, body)[0] == 403
    assert (count(), events()) == (n + 1, ne + 2)
