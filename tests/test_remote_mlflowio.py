"""MLflow import and export through a real `mlops-jupyter server` process, with an MLflow
SQLite store made by the real `mlflow` client: importing over the server gives exactly what
importing into a direct store gives (runs, params, tags, metric steps and timestamps,
artifact bytes), a second import adds nothing, a run that was still running is completed;
exporting over the server to a fresh MLflow store reads back equal through MlflowClient; a
read token cannot import. One server for the module (SQLite, or PostgreSQL in the CI)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from trackserver_helpers import module_remote, request, use_remote

pytest.importorskip("mlflow")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main  # noqa: E402
from mlops_jupyter.errors import StoreError  # noqa: E402
from mlops_jupyter.mlflowio import export_runs, import_runs  # noqa: E402
from mlops_jupyter.mlflowio.exporter import as_text  # noqa: E402
from mlops_jupyter.remote import files  # noqa: E402
from mlops_jupyter.remote.api import remote_store  # noqa: E402
from mlops_jupyter.tracking.api import current_store  # noqa: E402

pytestmark = pytest.mark.timeout(180)

T0 = 1_700_000_000_123  # ms: a float second would round this millisecond away


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _build_source(root: Path) -> str:
    """Two experiments, a nested run, failed and killed runs, NaN and inf, two points at
    one step, explicit steps and millisecond timestamps, artifacts (a file, a folder)."""
    from mlflow.entities import Metric

    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = _client(uri)
    c.search_experiments()  # MLflow makes its tables (slow): keep an empty copy for exports
    shutil.copyfile(root / "mlflow.db", root / "empty.db")
    a = c.create_experiment("exp-a", artifact_location=str(root / "art-a"))
    b = c.create_experiment("exp-b", artifact_location=str(root / "art-b"))
    good = c.create_run(a, start_time=T0, run_name="good", tags={"team": "vision"}).info.run_id
    c.log_batch(
        good,
        metrics=[Metric("loss", 1.0 / (i + 1), T0 + 10 * i + 1, i) for i in range(5000)],
    )
    c.log_param(good, "lr", "0.01")
    c.log_metric(good, "acc", float("nan"), timestamp=T0 + 5, step=0)
    c.log_metric(good, "acc", 0.5, timestamp=T0 + 7, step=2)
    c.log_metric(good, "acc", 0.75, timestamp=T0 + 9, step=2)
    (root / "files" / "plots").mkdir(parents=True)
    (root / "files" / "model.txt").write_text("weights")
    (root / "files" / "plots" / "curve.csv").write_bytes(b"x,y\n1,2\n\x00\xff")
    c.log_artifact(good, str(root / "files" / "model.txt"))
    c.log_artifacts(good, str(root / "files" / "plots"), artifact_path="plots")
    c.set_terminated(good, "FINISHED", end_time=T0 + 60_001)
    child = c.create_run(
        a, start_time=T0 + 1000, run_name="child", tags={"mlflow.parentRunId": good}
    ).info.run_id
    c.log_metric(child, "loss", float("inf"), timestamp=T0 + 1501, step=7)
    c.set_terminated(child, "FAILED", end_time=T0 + 2003)
    killed = c.create_run(b, start_time=T0 + 4000, run_name="stopped").info.run_id
    c.log_param(killed, "note", "ü ñ")
    c.set_terminated(killed, "KILLED", end_time=T0 + 4107)
    return uri


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return _build_source(tmp_path_factory.mktemp("mlflow-src"))


@pytest.fixture(scope="module")
def remote(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-mlflowio")


@pytest.fixture
def local_loc(tmp_path, request):
    from conftest import BACKEND

    if BACKEND == "postgresql":
        return request.getfixturevalue("pg_server").new_database()
    return str(tmp_path / "local.db")


def _floats(xs: list) -> list:
    return ["nan" if isinstance(x, float) and math.isnan(x) else x for x in xs]


def _snapshot(blob) -> dict[str, Any]:
    """What the current store holds, by MLflow run id, without our own ids and the host."""
    out = {}
    for uid in mj.runs()["id"].to_list():
        d = mj.get_run(uid)
        parent = mj.get_run(d["parent_id"])["tags"]["mlflow.run_id"] if d["parent_id"] else None
        m = mj.metrics(uid)
        out[d["tags"]["mlflow.run_id"]] = {
            "name": d["name"],
            "experiment": d["experiment"],
            "status": d["status"],
            "times": (round(d["start_time"] * 1000), round(d["end_time"] * 1000)),
            "params": d["params"],
            "tags": d["tags"],
            "parent": parent,
            "metrics": {
                k: (
                    g["step"].to_list(),
                    g["ts"].dt.epoch("ms").to_list(),
                    _floats(g["value"].to_list()),
                )
                for (k,), g in m.group_by("key", maintain_order=True)
            },
            "artifacts": {a["name"]: blob(uid, a) for a in d["artifacts"]},
        }
    return out


def _remote_bytes(url: str):
    def read(uid: str, a: dict) -> bytes:
        return files.artifact_path(remote_store(url), uid, a["name"]).read_bytes()

    return read


def _local_bytes(uid: str, a: dict) -> bytes:
    return current_store().artifacts.blob_file(a["digest"]).read_bytes()


def test_import_over_the_server_equals_a_direct_import(
    source, remote, local_loc, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(local_loc))
    direct_counts = import_runs(source, quiet=True)
    direct = _snapshot(_local_bytes)

    use_remote(monkeypatch, remote, tmp_path)
    counts = import_runs(source, quiet=True)
    assert counts == direct_counts
    assert counts["imported"] == 3 and counts["points"] == 5000 + 3 + 1
    assert counts["artifacts"] == 2 and counts["refused"] == []
    got = _snapshot(_remote_bytes(remote.srv.url))
    assert got == direct
    good = next(v for v in got.values() if v["name"] == "good")
    assert good["times"] == (T0, T0 + 60_001)
    assert good["metrics"]["loss"][1][:2] == [T0 + 1, T0 + 11]
    assert good["artifacts"]["plots/curve.csv"] == b"x,y\n1,2\n\x00\xff"

    # a second import adds nothing: no run, no point, no artifact row
    before = (len(mj.runs()), len(mj.metrics()))
    again = import_runs(source, quiet=True)
    assert again["skipped"] == 3 and again["imported"] == again["points"] == 0
    assert (len(mj.runs()), len(mj.metrics())) == before
    assert _snapshot(_remote_bytes(remote.srv.url)) == direct


def test_a_running_run_is_completed_over_the_server(source, remote, monkeypatch, tmp_path, capsys):
    use_remote(monkeypatch, remote, tmp_path)
    uri = f"sqlite:///{tmp_path / 'copy.db'}"
    shutil.copyfile(source[len("sqlite:///") :], tmp_path / "copy.db")
    c = _client(uri)
    exp = c.create_experiment("exp-live", artifact_location=str(tmp_path / "art"))
    live = c.create_run(exp, start_time=T0 + 9000, run_name="live").info.run_id
    c.log_metric(live, "loss", 1.0, timestamp=T0 + 9001, step=0)
    assert import_runs(uri, "exp-live", quiet=True)["imported"] == 1
    assert mj.get_run("live")["status"] in ("running", "crashed")
    c.log_metric(live, "loss", 0.5, timestamp=T0 + 9002, step=1)
    c.log_param(live, "late", "yes")
    c.set_terminated(live, "FINISHED", end_time=T0 + 9500)
    counts = import_runs(uri, "exp-live", quiet=True)
    assert counts["completed"] == 1 and counts["points"] == 1
    d = mj.get_run("live")
    assert d["status"] == "finished" and round(d["end_time"] * 1000) == T0 + 9500
    assert d["params"] == {"late": "yes"}
    m = mj.metrics("live", "loss")
    assert m["step"].to_list() == [0, 1] and m["value"].to_list() == [1.0, 0.5]
    assert main(["mlflow", "import", "--from", uri, "-e", "exp-live", "-q"]) == 0
    assert "skipped 1 already imported; 0 metric points" in capsys.readouterr().out


def test_an_interrupted_import_is_resumed(source, remote, monkeypatch, tmp_path):
    from mlflow.entities import Metric

    from mlops_jupyter.remote.mlflowio import _b64

    use_remote(monkeypatch, remote, tmp_path)
    shutil.copyfile(Path(source[len("sqlite:///") :]).parent / "empty.db", tmp_path / "cut.db")
    uri = f"sqlite:///{tmp_path / 'cut.db'}"
    c = _client(uri)
    exp = c.create_experiment("exp-cut", artifact_location=str(tmp_path / "art"))
    mid = c.create_run(exp, start_time=T0, run_name="cut").info.run_id
    c.log_batch(mid, metrics=[Metric("loss", i / 7, T0 + 3 * i, i) for i in range(4500)])
    (tmp_path / "cut.txt").write_text("cut")
    c.log_artifact(mid, str(tmp_path / "cut.txt"))
    c.set_terminated(mid, "FINISHED", end_time=T0 + 20_000)
    # what an import stopped after its first ingest request leaves on the server: the run
    # with its MLflow run id, and the first chunk of its points
    url, tok = remote.srv.url, remote.wtok
    body = {"experiment": "exp-cut", "name": "cut", "tags": {"mlflow.run_id": mid}}
    st, run = request(url, "POST", "/api/v1/runs", tok, body)
    assert st == 200
    first = {
        "key": "loss",
        "seq": 0,
        "values_b64": _b64([i / 7 for i in range(4096)], "<f8"),
        "steps_b64": _b64(list(range(4096)), "<i8"),
        "timestamps_ms_b64": _b64([T0 + 3 * i for i in range(4096)], "<i8"),
    }
    st, _ = request(
        url, "POST", "/api/v1/ingest", tok, {"runs": [{"id": run["id"], "chunks": [first]}]}
    )
    assert st == 200

    counts = import_runs(uri, "exp-cut", quiet=True)
    assert counts["completed"] == 1 and counts["imported"] == 0
    assert counts["points"] == 4500 - 4096 and counts["artifacts"] == 1
    d = mj.get_run(run["id"])
    assert d["status"] == "finished" and round(d["end_time"] * 1000) == T0 + 20_000
    assert round(d["start_time"] * 1000) == T0 and d["tags"]["mlflow.run_id"] == mid
    m = mj.metrics(run["id"], "loss")
    assert m["step"].to_list() == list(range(4500))
    assert m["ts"].dt.epoch("ms").to_list() == [T0 + 3 * i for i in range(4500)]
    assert m["value"].to_list() == [i / 7 for i in range(4500)]
    assert [a["name"] for a in d["artifacts"]] == ["cut.txt"]
    again = import_runs(uri, "exp-cut", quiet=True)
    assert again["skipped"] == 1 and again["points"] == 0
    assert len(mj.metrics(run["id"], "loss")) == 4500


def test_export_over_the_server_reads_back_in_mlflow(source, remote, monkeypatch, tmp_path):
    use_remote(monkeypatch, remote, tmp_path)
    monkeypatch.chdir(tmp_path)  # MLflow's SQL store puts artifacts under ./mlruns
    import_runs(source, quiet=True)  # the imported runs (a no-op if imported already)
    (tmp_path / "w.bin").write_bytes(bytes(range(256)) * 10)
    with mj.start_run("native", experiment="exp-native", params={"lr": 0.1, "dims": [3, 4]}):
        for i in range(1500):
            mj.log(step=i, loss=1 / (i + 1))
        mj.log_artifact(tmp_path / "w.bin", "model/w.bin")
    shutil.copyfile(Path(source[len("sqlite:///") :]).parent / "empty.db", tmp_path / "export.db")
    target = f"sqlite:///{tmp_path / 'export.db'}"  # a fresh MLflow store
    chosen = ["exp-a", "exp-b", "exp-native"]  # not the other tests' runs
    counts = export_runs(target, chosen, quiet=True)
    ours = {uid: mj.get_run(uid) for e in chosen for uid in mj.runs(experiment=e)["id"].to_list()}
    assert counts["exported"] == len(ours) and counts["skipped"] == 0

    c = _client(target)
    exps = {e.experiment_id: e.name for e in c.search_experiments()}
    runs = c.search_runs(list(exps), max_results=1000)
    by_ours = {r.data.tags["mlops_jupyter.run_id"]: r for r in runs}
    assert set(by_ours) == set(ours)
    status = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
    for uid, d in ours.items():
        r = by_ours[uid]
        assert exps[r.info.experiment_id] == d["experiment"] and r.info.run_name == d["name"]
        assert r.info.status == status[d["status"]]
        assert (r.info.start_time, r.info.end_time) == (
            round(d["start_time"] * 1000),
            round(d["end_time"] * 1000),
        )
        assert r.data.params == {k: as_text(v) for k, v in d["params"].items()}
        tags = {k: as_text(v) for k, v in d["tags"].items() if k != "mlflow.parentRunId"}
        assert tags.items() <= r.data.tags.items()
        if d["parent_id"]:
            assert r.data.tags["mlflow.parentRunId"] == by_ours[d["parent_id"]].info.run_id
        m = mj.metrics(uid)
        for key in {x["key"] for x in d["metrics"]}:
            hist = sorted(
                c.get_metric_history(r.info.run_id, key), key=lambda p: (p.step, p.timestamp)
            )
            g = m.filter(m["key"] == key).sort(["step", "ts"])
            assert [p.step for p in hist] == g["step"].to_list()
            assert [p.timestamp for p in hist] == g["ts"].dt.epoch("ms").to_list()
            assert _floats([p.value for p in hist]) == _floats(g["value"].to_list())
        for a in d["artifacts"]:
            got = Path(c.download_artifacts(r.info.run_id, a["name"], str(tmp_path / "dl")))
            want = files.artifact_path(remote_store(remote.srv.url), uid, a["name"])
            assert got.read_bytes() == want.read_bytes()
    native = by_ours[next(u for u, d in ours.items() if d["name"] == "native")]
    assert native.data.params == {"lr": "0.1", "dims": "[3, 4]"}
    assert len(c.get_metric_history(native.info.run_id, "loss")) == 1500

    again = export_runs(target, chosen, quiet=True)  # idempotent
    assert again["skipped"] == len(ours) and again["exported"] == again["points"] == 0
    assert len(c.search_runs(list(exps), max_results=1000)) == len(runs)


def test_a_read_token_cannot_import_and_bad_times_are_refused(
    source, remote, monkeypatch, tmp_path
):
    use_remote(monkeypatch, remote, tmp_path)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", remote.rtok)
    before = remote.rows("SELECT count(*) FROM runs")
    uri = f"sqlite:///{tmp_path / 'copy.db'}"
    shutil.copyfile(source[len("sqlite:///") :], tmp_path / "copy.db")
    c = _client(uri)
    exp = c.create_experiment("exp-new", artifact_location=str(tmp_path / "art"))
    c.set_terminated(c.create_run(exp, start_time=T0).info.run_id, "FINISHED", end_time=T0 + 1)
    with pytest.raises(StoreError, match="scope write"):
        import_runs(uri, "exp-new", quiet=True)
    assert remote.rows("SELECT count(*) FROM runs") == before

    st, run = request(remote.srv.url, "POST", "/api/v1/runs", remote.wtok, {"experiment": "t"})
    assert st == 200
    for bad in (
        {"status": "done", "start_time": 1.0},
        {"status": "finished"},
        {"status": "finished", "start_time": -1},
        {"status": "finished", "start_time": 1.0, "end_time": 1e12},
        "finished",
    ):
        body = {"runs": [{"id": run["id"], "recorded": bad}]}
        st, err = request(remote.srv.url, "POST", "/api/v1/ingest", remote.wtok, body)
        assert st == 400, (bad, err)
    assert mj.get_run(run["id"])["status"] == "running"
    body = {"runs": [{"id": run["id"], "recorded": {"status": "finished", "start_time": 5.0}}]}
    st, _ = request(remote.srv.url, "POST", "/api/v1/ingest", remote.rtok, body)
    assert st == 403
    st, _ = request(remote.srv.url, "POST", "/api/v1/ingest", remote.wtok, body)
    assert st == 200
    d = mj.get_run(run["id"])
    assert (d["status"], d["start_time"], d["end_time"]) == ("finished", 5.0, None)
