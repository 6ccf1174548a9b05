"""The unmodified `mlflow` client (3.17.2) against our tracking server: runs it logs show in
mj.runs() / mj.metrics() with the same values, and it reads them back."""

from __future__ import annotations

import pytest
from trackserver_helpers import Server, request, token

import mlops_jupyter as mj

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def mlflow_server(child_env, tmp_path, monkeypatch):
    tok = token(child_env, "mlflow-client", "write")
    with Server(child_env, tmp_path) as srv:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tok)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mlflow.set_tracking_uri(srv.url)
        yield srv, tok
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


def test_mlflow_client_logs_runs_we_read(mlflow_server, tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    mlflow.set_experiment("mlflow-exp")
    with mlflow.start_run(run_name="from-mlflow") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"bs": 32, "opt": "adam"})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.75}, step=3)
        mlflow.set_tag("team", "vision")
        f = tmp_path / "notes.txt"
        f.write_text("hello from mlflow")
        mlflow.log_artifact(str(f))
        mlflow.log_artifact(str(f), artifact_path="sub")
        rid = run.info.run_id
    client = MlflowClient()
    client.log_batch(
        rid,
        metrics=[Metric("batch", float(i), 1_700_000_000_000 + i, i) for i in range(1500)],
        params=[Param("extra", "yes")],
        tags=[RunTag("stage", "2")],
    )

    got = client.get_run(rid)
    assert got.info.status == "FINISHED" and got.info.run_name == "from-mlflow"
    assert got.data.params == {"lr": "0.01", "bs": "32", "opt": "adam", "extra": "yes"}
    assert got.data.metrics["loss"] == 0.2 and got.data.metrics["batch"] == 1499.0
    assert got.data.tags["team"] == "vision" and got.data.tags["stage"] == "2"
    hist = client.get_metric_history(rid, "loss")
    assert [(m.step, m.value) for m in hist] == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert len(client.get_metric_history(rid, "batch")) == 1500

    found = mlflow.search_runs(
        experiment_names=["mlflow-exp"],
        filter_string="metrics.loss < 0.5 and params.opt = 'adam' and tags.team = 'vision'",
        output_format="list",
    )
    assert [r.info.run_id for r in found] == [rid]
    assert not mlflow.search_runs(
        experiment_names=["mlflow-exp"], filter_string="params.opt = 'sgd'", output_format="list"
    )
    names = sorted(a.path for a in client.list_artifacts(rid))
    assert names == ["notes.txt", "sub"]
    local = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="sub/notes.txt")
    assert open(local).read() == "hello from mlflow"

    # the same run, seen through our own API
    df = mj.runs(experiment="mlflow-exp")
    row = df.row(0, named=True)
    assert row["id"] == rid and row["name"] == "from-mlflow" and row["status"] == "finished"
    assert row["params.opt"] == "adam" and row["params.lr"] == "0.01"
    pts = mj.metrics(rid, "loss")
    assert pts["step"].to_list() == list(range(5))
    assert pts["value"].to_list() == [1.0 / (s + 1) for s in range(5)]
    ts = mj.metrics(rid, "batch")["ts"].dt.epoch("ms").to_list()
    assert ts[:3] == [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002]
    d = mj.get_run(rid)
    assert {a["name"] for a in d["artifacts"]} == {"notes.txt", "sub/notes.txt"}
    assert d["tags"]["team"] == "vision"


def test_mlflow_reads_runs_logged_with_our_api(mlflow_server):
    from mlflow import MlflowClient

    with mj.start_run("ours", experiment="mj-exp", params={"lr": 0.1, "name": "x"}) as run:
        for i in range(3):
            run.log_metric("loss", 1.0 - i / 10, step=i)
    client = MlflowClient()
    exp = client.get_experiment_by_name("mj-exp")
    got = client.get_run(run.id)
    assert got.info.experiment_id == exp.experiment_id and got.info.status == "FINISHED"
    assert got.data.params == {"lr": "0.1", "name": "x"}
    assert [m.value for m in client.get_metric_history(run.id, "loss")] == [1.0, 0.9, 0.8]


def test_mlflow_errors_keep_mlflows_shape(mlflow_server):
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _get_store

    srv, tok = mlflow_server
    run = mlflow.MlflowClient().create_run("0")
    rest = _get_store()  # the REST store: no client-side splitting of big batches
    for kw, what in [
        ({"metrics": [Metric("x", 1.0, 0, i) for i in range(1001)]}, "1000 metrics"),
        ({"params": [Param(f"p{i}", "v") for i in range(101)]}, "100 params"),
    ]:
        args = {"metrics": [], "params": [], "tags": [], **kw}
        with pytest.raises(MlflowException) as e:
            rest.log_batch(run.info.run_id, **args)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE" and what in str(e.value)
    # over 1 MB in one request
    big = [Param(f"p{i}", "v" * 6000) for i in range(100)] + []
    body = {"run_id": run.info.run_id, "params": [{"key": p.key, "value": p.value} for p in big]}
    body["tags"] = [{"key": f"t{i}", "value": "w" * 5000} for i in range(100)]
    st, out = request(srv.url, "POST", "/api/2.0/mlflow/runs/log-batch", tok, body)
    assert st == 400 and out["error_code"] == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        mlflow.MlflowClient().get_run("does-not-exist")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    st, out = request(srv.url, "POST", "/api/2.0/mlflow/registered-models/create", tok, {})
    assert st == 404 and out == {
        "error_code": "ENDPOINT_NOT_FOUND",
        "message": "no endpoint /api/2.0/mlflow/registered-models/create",
    }
    assert mj.metrics(run.info.run_id).height == 0  # refused batches wrote nothing
    st, _ = request(srv.url, "GET", "/api/2.0/mlflow/runs/get?run_id=" + run.info.run_id)
    assert st == 401


def test_mlflow_delete_restore_and_update(mlflow_server):
    from mlflow import MlflowClient

    client = MlflowClient()
    eid = client.create_experiment("life")
    run = client.create_run(eid, run_name="a")
    client.set_terminated(run.info.run_id, "FAILED")
    client.delete_run(run.info.run_id)
    assert client.search_runs([eid]) == []
    assert [r.info.run_id for r in client.search_runs([eid], run_view_type=3)] == [run.info.run_id]
    client.restore_run(run.info.run_id)
    (got,) = client.search_runs([eid])
    assert got.info.status == "FAILED" and got.info.lifecycle_stage == "active"
    client.update_run(run.info.run_id, name="renamed")
    assert mj.get_run(run.info.run_id)["name"] == "renamed"
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.create_experiment("life")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"


def test_sklearn_autolog_run_shows_in_our_store(mlflow_server):
    sklearn = pytest.importorskip("sklearn")
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    assert sklearn
    mlflow.set_experiment("autolog")
    mlflow.sklearn.autolog(log_models=False, log_datasets=False)
    try:
        x = np.array([[0.0], [1.0], [2.0], [3.0]])
        y = np.array([0, 0, 1, 1])
        with mlflow.start_run() as run:
            LogisticRegression(C=0.5).fit(x, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    d = mj.get_run(run.info.run_id)
    assert d["params"]["C"] == "0.5"
    assert "training_accuracy_score" in {m["key"] for m in d["metrics"]}
    assert d["status"] == "finished"


def test_mlflow_artifacts_land_in_object_storage(s3_url, child_env, tmp_path, monkeypatch):
    """`--artifacts s3://...`: mlflow.log_artifact goes through the artifact-store contract
    to a real S3-compatible server (SeaweedFS), and reads back through the server and mj."""
    from mlflow import MlflowClient

    tok = token(child_env, "s3-client", "write")
    with Server(child_env, tmp_path, "--artifacts", s3_url) as srv:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tok)
        mlflow.set_tracking_uri(srv.url)
        try:
            f = tmp_path / "weights.bin"
            f.write_bytes(bytes(range(256)) * 4096)
            # the fluent API remembers the last test's experiment id: name one in this store
            mlflow.set_experiment("s3-artifacts")
            with mlflow.start_run() as run:
                mlflow.log_artifact(str(f), artifact_path="model")
            rid = run.info.run_id
            assert [a.path for a in MlflowClient().list_artifacts(rid, "model")] == [
                "model/weights.bin"
            ]
            local = mlflow.artifacts.download_artifacts(
                run_id=rid, artifact_path="model/weights.bin", dst_path=str(tmp_path / "dl")
            )
            assert open(local, "rb").read() == f.read_bytes()
        finally:
            mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", s3_url)
    (art,) = mj.get_run(rid)["artifacts"]
    assert art["name"] == "model/weights.bin" and art["size"] == 256 * 4096
    store = mj.set_store(None)
    assert store.artifacts.location.startswith("s3://")
    assert store.artifacts.blob_file(art["digest"]).read_bytes() == f.read_bytes()


def test_runs_deleted_through_mlflow_leave_our_lists(mlflow_server, child_env, store_path):
    """MLflow's soft delete hides a run from mj.runs(), the sidebar's list and `runs` in the
    CLI too (as from MLflow's own search); asked for, it is there; restore brings it back."""
    from mlflow import MlflowClient
    from trackserver_helpers import cli

    from mlops_jupyter.store import api_queries as aq
    from mlops_jupyter.store import open_store
    from mlops_jupyter.store import query as q

    client = MlflowClient()
    eid = client.create_experiment("gone")
    keep = client.create_run(eid, run_name="keep").info.run_id
    drop = client.create_run(eid, run_name="drop").info.run_id
    client.delete_run(drop)
    store = open_store(str(store_path))

    def listed(**kw) -> list[str]:
        return [r["id"] for r in aq.list_runs(store, experiment="gone", **kw)["runs"]]

    assert mj.runs(experiment="gone")["id"].to_list() == [keep]
    assert listed() == [keep]
    assert aq.list_runs(store, experiment="gone")["total"] == 1
    counts = {e["name"]: e["runs"] for e in aq.experiments(store)}
    assert counts["gone"] == 1
    assert drop not in cli(child_env, "runs", "--experiment", "gone").stdout
    assert listed(deleted=True) == [drop]
    assert sorted(listed(deleted=None)) == sorted([keep, drop])
    assert q.runs_frame(store, "gone", deleted=True)["id"].to_list() == [drop]
    with pytest.raises(mj.InvalidInputError):
        q.runs_frame(store, "gone", deleted="yes")  # type: ignore[arg-type]

    client.restore_run(drop)
    assert sorted(mj.runs(experiment="gone")["id"].to_list()) == sorted([keep, drop])
    assert {e["name"]: e["runs"] for e in aq.experiments(store)}["gone"] == 2
    assert drop in cli(child_env, "runs", "--experiment", "gone").stdout
