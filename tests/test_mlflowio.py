"""MLflow import and export with the real `mlflow` client: an MLflow SQLite store built by the
client, a real `mlflow server` process, and read-back through our Run API and MlflowClient."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main  # noqa: E402
from mlops_jupyter.errors import InvalidInputError  # noqa: E402
from mlops_jupyter.mlflowio import MlflowError, export_runs, import_runs  # noqa: E402
from mlops_jupyter.tracking.api import current_store  # noqa: E402

T0 = 1_700_000_000_123  # ms


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _build_source(root: Path) -> str:
    """An MLflow SQLite store with two experiments, a nested run, a failed run, a killed
    run, NaN values, explicit steps and timestamps, and artifacts (a file and a folder)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = _client(uri)
    a = c.create_experiment("exp-a", artifact_location=str(root / "mlartifacts-a"))
    b = c.create_experiment("exp-b", artifact_location=str(root / "mlartifacts-b"))
    from mlflow.entities import Metric

    good = c.create_run(a, start_time=T0, run_name="good", tags={"team": "vision"}).info.run_id
    c.log_param(good, "lr", "0.01")
    c.log_param(good, "layers", "[64, 32]")
    c.set_tag(good, "note", "first try")
    loss = [Metric("loss", 1.0 / (i + 1), T0 + 10 * i, i) for i in range(50)]
    c.log_batch(good, metrics=loss)
    c.log_metric(good, "acc", float("nan"), timestamp=T0 + 5, step=0)
    c.log_metric(good, "acc", 0.5, timestamp=T0 + 7, step=2)
    c.log_metric(good, "acc", 0.75, timestamp=T0 + 9, step=2)  # two points at one step
    files = root / "files"
    (files / "plots").mkdir(parents=True)
    (files / "model.txt").write_text("weights")
    (files / "plots" / "curve.csv").write_text("x,y\n1,2\n")
    c.log_artifact(good, str(files / "model.txt"))
    c.log_artifacts(good, str(files / "plots"), artifact_path="plots")
    c.set_terminated(good, "FINISHED", end_time=T0 + 60_000)

    child = c.create_run(
        a, start_time=T0 + 1000, run_name="child", tags={"mlflow.parentRunId": good}
    ).info.run_id
    c.log_metric(child, "loss", 0.3, timestamp=T0 + 1500, step=7)
    c.set_terminated(child, "FINISHED", end_time=T0 + 2000)

    bad = c.create_run(a, start_time=T0 + 3000, run_name="bad").info.run_id
    c.log_param(bad, "lr", "10")
    c.log_metric(bad, "loss", float("inf"), timestamp=T0 + 3100, step=0)
    c.set_terminated(bad, "FAILED", end_time=T0 + 3500)

    killed = c.create_run(b, start_time=T0 + 4000, run_name="stopped-early").info.run_id
    c.set_terminated(killed, "KILLED", end_time=T0 + 4100)
    return uri


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """URI of the MLflow SQLite store (built once; tests that change it copy it)."""
    return _build_source(tmp_path_factory.mktemp("mlflow-src"))


def _ours_by_mlflow_id() -> dict[str, dict]:
    out = {}
    for uid in mj.runs()["id"].to_list():
        d = mj.get_run(uid)
        out[d["tags"]["mlflow.run_id"]] = d
    return out


def _same_floats(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)
    )


def _check_imported(uri: str) -> None:
    """Every MLflow run of `uri` reads back exactly through mj.runs()/get_run/metrics."""
    c = _client(uri)
    exps = {e.experiment_id: e.name for e in c.search_experiments()}
    src = c.search_runs(list(exps))
    ours = _ours_by_mlflow_id()
    assert len(mj.runs()) == len(src) == len(ours)
    status = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
    for r in src:
        d = ours[r.info.run_id]
        assert d["name"] == r.info.run_name
        assert d["experiment"] == exps[r.info.experiment_id]
        assert d["status"] == status[r.info.status]
        assert round(d["start_time"] * 1000) == r.info.start_time
        assert round(d["end_time"] * 1000) == r.info.end_time
        assert d["params"] == r.data.params
        assert {k: v for k, v in d["tags"].items() if k != "mlflow.tracking_uri"} == {
            **r.data.tags,
            "mlflow.run_id": r.info.run_id,
        }
        assert {m["key"] for m in d["metrics"]} == set(r.data.metrics)
        for key in r.data.metrics:
            hist = sorted(c.get_metric_history(r.info.run_id, key), key=lambda m: m.timestamp)
            got = mj.metrics(d["id"], key).sort("ts")
            assert got["step"].to_list() == [m.step for m in hist]
            assert (got["ts"].dt.epoch("ms")).to_list() == [m.timestamp for m in hist]
            assert _same_floats(got["value"].to_list(), [m.value for m in hist])
        parent = r.data.tags.get("mlflow.parentRunId")
        assert d["parent_id"] == (ours[parent]["id"] if parent else None)
    assert {d["name"] for d in ours.values()} >= {"good", "child", "bad", "stopped-early"}
    good = next(d for d in ours.values() if d["name"] == "good")
    arts = {a["name"]: a for a in good["artifacts"]}
    assert set(arts) == {"model.txt", "plots/curve.csv"}
    store = current_store()
    assert store.artifacts.blob_file(arts["model.txt"]["digest"]).read_text() == "weights"
    assert store.artifacts.blob_file(arts["plots/curve.csv"]["digest"]).read_text() == (
        "x,y\n1,2\n"
    )


def _points() -> int:
    return len(mj.metrics())


def test_import_reads_back_exactly_and_twice_adds_nothing(source):
    counts = import_runs(source, quiet=True)
    assert counts["imported"] == 4 and counts["points"] == 50 + 3 + 1 + 1
    assert counts["artifacts"] == 2 and counts["refused"] == []
    _check_imported(source)
    before = (_points(), len(mj.runs()))
    again = import_runs(source, quiet=True)
    assert again["skipped"] == 4 and again["imported"] == again["points"] == 0
    assert (_points(), len(mj.runs())) == before
    _check_imported(source)
    # exporting them back to where they came from adds nothing there
    c = _client(source)
    n = len(c.search_runs([e.experiment_id for e in c.search_experiments()]))
    back = export_runs(source, quiet=True)
    assert back["skipped"] == 4 and back["exported"] == 0
    assert len(c.search_runs([e.experiment_id for e in c.search_experiments()])) == n


def test_cli_import_one_experiment(source, capsys):
    assert main(["mlflow", "import", "--from", source, "--experiment", "exp-b", "-q"]) == 0
    assert "imported 1 run(s)" in capsys.readouterr().out
    runs = mj.runs()
    assert runs["name"].to_list() == ["stopped-early"] and runs["status"][0] == "killed"
    assert main(["mlflow", "import", "--from", source, "-e", "no-such", "-q"]) == 2
    assert "no MLflow experiment named ['no-such']" in capsys.readouterr().err


def test_running_run_is_completed_by_the_next_import(source, tmp_path):
    uri = f"sqlite:///{tmp_path / 'copy.db'}"
    shutil.copyfile(source[len("sqlite:///") :], tmp_path / "copy.db")
    c = _client(uri)
    exp = c.get_experiment_by_name("exp-b").experiment_id
    live = c.create_run(exp, start_time=T0 + 9000, run_name="live").info.run_id
    c.log_metric(live, "loss", 1.0, timestamp=T0 + 9001, step=0)
    assert import_runs(uri, "exp-b", quiet=True)["imported"] == 2
    assert mj.get_run("live")["status"] in ("running", "crashed")
    c.log_metric(live, "loss", 0.5, timestamp=T0 + 9002, step=1)
    c.set_terminated(live, "FINISHED", end_time=T0 + 9500)
    counts = import_runs(uri, "exp-b", quiet=True)
    assert counts["completed"] == 1 and counts["skipped"] == 1 and counts["points"] == 1
    d = mj.get_run("live")
    assert d["status"] == "finished" and round(d["end_time"] * 1000) == T0 + 9500
    m = mj.metrics("live", "loss")
    assert m["step"].to_list() == [0, 1] and m["value"].to_list() == [1.0, 0.5]
    assert len(mj.runs()) == 2


def test_import_from_a_file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to write
    folder = tmp_path / "mlruns"
    c = _client(str(folder))
    run = c.create_run(c.create_experiment("old"), start_time=T0, run_name="legacy").info.run_id
    c.log_metric(run, "loss", 0.5, timestamp=T0 + 1, step=3)
    (tmp_path / "a.txt").write_text("old file")
    c.log_artifact(run, str(tmp_path / "a.txt"))
    c.set_terminated(run, "FINISHED", end_time=T0 + 2)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # reading needs no setting of the user's
    assert import_runs(str(folder), quiet=True)["imported"] == 1
    assert import_runs(f"file://{folder}", quiet=True)["skipped"] == 1
    d = mj.get_run("legacy")
    assert d["status"] == "finished" and round(d["end_time"] * 1000) == T0 + 2
    assert [a["name"] for a in d["artifacts"]] == ["a.txt"]
    m = mj.metrics("legacy", "loss")
    assert m["step"].to_list() == [3] and m["ts"].dt.epoch("ms").to_list() == [T0 + 1]


def test_negative_steps_are_refused_clearly_and_the_rest_imported(tmp_path):
    uri = f"sqlite:///{tmp_path / 'neg.db'}"
    c = _client(uri)
    exp = c.create_experiment("neg", artifact_location=str(tmp_path / "art"))
    ok = c.create_run(exp, start_time=T0, run_name="ok").info.run_id
    c.set_terminated(ok, "FINISHED", end_time=T0 + 1)
    odd = c.create_run(exp, start_time=T0 + 5, run_name="odd").info.run_id
    c.log_metric(odd, "loss", 1.0, timestamp=T0 + 6, step=-1)
    c.set_terminated(odd, "FINISHED", end_time=T0 + 7)
    with pytest.warns(RuntimeWarning, match="negative steps"):
        counts = import_runs(uri, quiet=True)
    assert counts["imported"] == 1 and len(counts["refused"]) == 1
    assert "'loss' has negative steps (min -1)" in counts["refused"][0]
    assert mj.runs()["name"].to_list() == ["ok"]


def test_bad_uris_give_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MlflowError, match="no MLflow SQLite store at"):
        import_runs(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()  # not created by the attempt
    with pytest.raises(MlflowError, match="no MLflow file store"):
        import_runs(str(tmp_path / "no-mlruns"))
    port = _free_port()
    with pytest.raises(MlflowError, match="cannot reach the MLflow server"):
        import_runs(f"http://127.0.0.1:{port}")
    with pytest.raises(MlflowError, match="cannot use MLflow tracking URI bogus://x"):
        import_runs("bogus://x")
    with pytest.raises(MlflowError, match=r"database postgresql://me:\*\*\*@127.0.0.1"):
        import_runs(f"postgresql://me:secret@127.0.0.1:{port}/db")
    rc = main(["mlflow", "export", "--to", f"http://127.0.0.1:{port}", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the MLflow server" in err


def _log_our_runs(tmp_path: Path) -> None:
    f = tmp_path / "report.txt"
    f.write_text("report")
    d = tmp_path / "model"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"\x00\x01")
    with mj.start_run(
        "train", "exp-x", params={"lr": 0.1, "opt": "adam", "dims": [3, 4]}, tags={"k": "v"}
    ) as run:
        for i in range(2500):  # more than one log_batch call
            run.log(step=i, loss=1.0 / (i + 1))
        run.log(step=3, odd=float("nan"))
        run.log_artifact(f)
        run.log_artifact(d)
        with mj.start_run("inner", "exp-x") as child:
            child.log(step=0, acc=0.9)
    with pytest.raises(RuntimeError):
        with mj.start_run("broken", "exp-y", params={"seed": 1}):
            raise RuntimeError("boom")


def test_export_round_trips_through_mlflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts under ./mlruns
    _log_our_runs(tmp_path)
    uri = f"sqlite:///{tmp_path / 'out.db'}"
    counts = export_runs(uri, quiet=True)
    assert counts["exported"] == 3 and counts["points"] == 2500 + 1 + 1
    assert counts["artifacts"] == 2
    c = _client(uri)
    exps = {e.name: e.experiment_id for e in c.search_experiments()}
    got = {r.info.run_name: r for r in c.search_runs([exps["exp-x"], exps["exp-y"]])}
    assert set(got) == {"train", "inner", "broken"}
    status = {"finished": "FINISHED", "failed": "FAILED"}
    for name, r in got.items():
        d = mj.get_run(name)
        assert r.data.tags["mlops_jupyter.run_id"] == d["id"]
        assert r.info.status == status[d["status"]]
        assert r.info.start_time == round(d["start_time"] * 1000)
        assert r.info.end_time == round(d["end_time"] * 1000)
        assert r.data.params == {
            k: v if isinstance(v, str) else str(v).replace("'", '"') for k, v in d["params"].items()
        }
        for k, v in d["tags"].items():
            assert r.data.tags[k] == v
        for m in d["metrics"]:
            ours = mj.metrics(d["id"], m["key"])
            hist = sorted(c.get_metric_history(r.info.run_id, m["key"]), key=lambda x: x.step)
            assert [h.step for h in hist] == ours["step"].to_list()
            assert [h.timestamp for h in hist] == ours["ts"].dt.epoch("ms").to_list()
            assert _same_floats([h.value for h in hist], ours["value"].to_list())
    assert got["train"].data.params == {"lr": "0.1", "opt": "adam", "dims": "[3, 4]"}
    assert got["inner"].data.tags["mlflow.parentRunId"] == got["train"].info.run_id
    arts = tmp_path / "dl"
    c.download_artifacts(got["train"].info.run_id, "", str(arts))
    assert (arts / "report.txt").read_text() == "report"
    assert (arts / "model" / "weights.bin").read_bytes() == b"\x00\x01"
    again = export_runs(uri, quiet=True)
    assert again["skipped"] == 3 and again["exported"] == again["points"] == 0
    assert len(c.search_runs(list(exps.values()))) == 3


def test_export_refuses_values_mlflow_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mj.start_run("long", params={"prompt": "x" * 7000}):
        pass
    target = tmp_path / "out.db"
    with pytest.raises(InvalidInputError, match="param 'prompt' is 7000 characters long"):
        export_runs(f"sqlite:///{target}", quiet=True)
    assert not target.exists()  # checked before anything was written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_import_from_a_running_mlflow_server(source, tmp_path):
    # a copy: a run is logged through the server, with an artifact it proxies
    shutil.copyfile(source[len("sqlite:///") :], tmp_path / "copy.db")
    db = f"sqlite:///{tmp_path / 'copy.db'}"
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            db,
            "--artifacts-destination",
            str(tmp_path / "served-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.time() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        c = _client(url)
        exp = c.create_experiment("served")  # artifacts proxied: mlflow-artifacts:/...
        run = c.create_run(exp, start_time=T0, run_name="via-server").info.run_id
        (tmp_path / "proxied.txt").write_text("through the server")
        c.log_artifact(run, str(tmp_path / "proxied.txt"))
        c.log_metric(run, "loss", 0.25, timestamp=T0 + 1, step=4)
        c.set_terminated(run, "FINISHED", end_time=T0 + 2)
        assert c.get_run(run).info.artifact_uri.startswith("mlflow-artifacts:")
        counts = import_runs(url, quiet=True)
        assert counts["imported"] == 5 and counts["artifacts"] == 3
        _check_imported(db)
        (art,) = mj.get_run("via-server")["artifacts"]
        assert art["name"] == "proxied.txt"
        path = current_store().artifacts.blob_file(art["digest"])
        assert path.read_text() == "through the server"
        # the same runs through their SQLite store: recognised by their MLflow run ids
        assert import_runs(db, quiet=True)["skipped"] == 5
        assert len(mj.runs()) == 5
        # and export through the server: the imported runs are there already
        (tmp_path / "out.txt").write_text("ours")
        with mj.start_run("ours", "served", params={"lr": 0.5}) as ours:
            ours.log(step=1, loss=0.125)
            ours.log_artifact(tmp_path / "out.txt")
        back = export_runs(url, quiet=True)
        assert back["exported"] == 1 and back["skipped"] == 5 and back["artifacts"] == 1
        query = f"tags.`mlops_jupyter.run_id` = '{ours.id}'"
        (mr,) = c.search_runs([exp], filter_string=query)
        assert mr.data.params == {"lr": "0.5"} and mr.info.status == "FINISHED"
        assert [(h.step, h.value) for h in c.get_metric_history(mr.info.run_id, "loss")] == [
            (1, 0.125)
        ]
        got = Path(c.download_artifacts(mr.info.run_id, "out.txt", str(tmp_path / "dl")))
        assert got.read_text() == "ours"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
