"""Model serving: real `mlops-jupyter serve` processes on 127.0.0.1 serving models from a
real SQLite store (a torch MLP with 2 workers, a scikit-learn estimator, a plain callable,
a model that cannot load)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serving_helpers import wait_logged

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.serving.client import ServeError, request  # noqa: E402
from mlops_jupyter.store import open_store  # noqa: E402
from mlops_jupyter.store import serving as sstore  # noqa: E402

SIG = {"x": {"shape": [4], "dtype": "float32"}}


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    return m.eval()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store with the models registered, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("serving")
    store = root / "store.db"
    mods = root / "mods"
    mods.mkdir()
    (mods / "served_fns.py").write_text(
        "import numpy as np\n\ndef double(x):\n    return np.asarray(x) * 2\n"
    )
    (mods / "gone_mod.py").write_text("class Gone:\n    def predict(self, x):\n        return x\n")
    sys.path.insert(0, str(mods))
    import gone_mod
    import served_fns

    mj.set_store(store)
    model = _mlp()
    mj.register_model("mlp", model, signature=SIG, alias="champion")
    mj.register_model("double", served_fns.double, signature={"x": ((2,), "float64")})
    mj.register_model("gone", gone_mod.Gone())
    (mods / "gone_mod.py").unlink()  # the class cannot be imported any more
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    est = LogisticRegression().fit(X, y)
    mj.register_model("lr", est, signature={"columns": {"a": "float64", "b": "float64"}})
    mj.set_store(None)
    sys.path.remove(str(mods))
    yield {"store": store, "model": model, "est": est, "mods": mods}


@pytest.fixture(scope="module")
def mlp_server(env):
    mj.set_store(env["store"])
    srv = mj.serve("mlp@champion", workers=2, max_batch=64, max_wait_ms=20)
    mj.set_store(None)
    yield srv
    srv.stop()


def _arrow(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _post(srv, body, ctype="application/json", headers=None):
    h = {"Content-Type": ctype, **(headers or {})}
    status, hdrs, raw = request(srv.url + "/predict", "POST", body, h)
    return status, hdrs, json.loads(raw)


def test_predictions_equal_the_model_json_and_arrow(env, mlp_server):
    import pyarrow as pa

    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    with torch.inference_mode():
        want = env["model"](torch.from_numpy(x)).numpy()
    got = mlp_server.predict(x)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    # instances (rows) and Arrow IPC (a fixed-size-list column, and plain columns)
    st, _, obj = _post(mlp_server, json.dumps({"instances": x.tolist()}).encode())
    assert st == 200 and np.array_equal(np.asarray(obj["predictions"], np.float32), want)
    col = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 4)
    for table in (pa.table({"x": col}), pa.table({f"f{i}": x[:, i] for i in range(4)})):
        st, _, obj = _post(mlp_server, _arrow(table), "application/vnd.apache.arrow.stream")
        assert st == 200, obj
        assert obj["dtype"] == "float32"
        assert np.array_equal(np.asarray(obj["predictions"], np.float32), want)


def test_bad_input_is_422_naming_field_and_signature(mlp_server):
    cases = [
        ({"inputs": [[1.0, 2.0, 3.0]]}, "field 'x': each instance has shape [3], expected [4]"),
        ({"inputs": [["a", "b", "c", "d"]]}, "field 'x': expected float32 values, got strings"),
        ({"inputs": {"y": [[1, 2, 3, 4]]}}, "unknown field 'y'"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, "field 'x': instances have different shapes"),
    ]
    for body, msg in cases:
        st, hdrs, obj = _post(mlp_server, json.dumps(body).encode())
        assert st == 422, obj
        assert msg in obj["error"] and "x: float32[batch, 4]" in obj["error"]
        assert obj["signature"]["fields"][0]["name"] == "x"
        assert hdrs["x-request-id"] == obj["request_id"]
    st, _, obj = _post(mlp_server, b"{not json")
    assert st == 400


def test_health_ready_openapi(mlp_server):
    assert request(mlp_server.url + "/health")[0] == 200
    ready = mlp_server.ready()
    assert ready["model"] == "mlp" and ready["version"] == 1 and ready["kind"] == "torch"
    st, _, raw = request(mlp_server.url + "/openapi.json")
    spec = json.loads(raw)
    assert st == 200 and spec["openapi"].startswith("3.")
    assert {"/predict", "/feedback", "/ready", "/health"} <= set(spec["paths"])
    st, _, raw = request(mlp_server.url + "/nope")
    assert st == 404 and "/nope" in json.loads(raw)["error"]


def test_concurrent_requests_are_batched_and_split_back(env, mlp_server):
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(48)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(24)

    def client(k: int) -> None:
        try:
            for j in range(k, len(xs), 24):
                if j == k:
                    barrier.wait()
                results[j] = mlp_server.predict(xs[j], request_id=f"batch-{j}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    with torch.inference_mode():
        for j, x in enumerate(xs):  # each client got its own rows
            want = env["model"](torch.from_numpy(x)).numpy()
            # in a stacked batch a row may differ in the last bit from an unbatched call
            # (the BLAS kernel blocks by batch size); other clients' rows differ entirely
            assert results[j].dtype == np.float32 and results[j].shape == want.shape
            np.testing.assert_allclose(results[j], want, rtol=1e-5, atol=1e-6, err_msg=str(j))
    rows = wait_logged(env["store"], "mlp", lambda r: r["request_id"].startswith("batch-"), 48)
    sizes = [r["batch_size"] for r in rows]
    assert max(sizes) > 1, sizes  # the model saw stacked requests
    assert all(
        r["status"] == 200 and r["n_rows"] == len(xs[int(r["request_id"][6:])]) for r in rows
    )


def test_predictions_and_feedback_land_in_the_store(env, mlp_server):
    x = np.ones((2, 4), np.float32)
    out = mlp_server.predict(x, request_id="req-fb-1")
    mlp_server.predict(x, request_id="req-fb-2")
    mlp_server.feedback("req-fb-1", 1)
    st, _, raw = request(
        mlp_server.url + "/feedback", "POST", b'{"value": 1}', {"Content-Type": "application/json"}
    )
    assert st == 422
    rows = wait_logged(env["store"], "mlp", lambda r: r["request_id"].startswith("req-fb-"), 2)
    assert {r["request_id"] for r in rows} == {"req-fb-1", "req-fb-2"}
    r = next(r for r in rows if r["request_id"] == "req-fb-1")
    assert (r["model"], r["version"], r["variant"], r["status"]) == ("mlp", 1, "v1", 200)
    assert r["latency_ms"] > 0 and np.allclose(json.loads(r["outputs"]), out)
    outcomes = sstore.outcomes(open_store(env["store"]), "mlp")
    by_id = {o["request_id"]: o for o in outcomes["v1"]}
    assert by_id["req-fb-1"]["value"] == 1 and by_id["req-fb-1"]["value_num"] == 1.0
    assert by_id["req-fb-2"]["value"] is None


def test_sklearn_estimator_and_callable(env):
    mj.set_store(env["store"])
    extra = {"PYTHONPATH": os.pathsep.join([str(env["mods"]), os.environ.get("PYTHONPATH", "")])}
    with mj.serve("lr", trusted=True) as srv:
        rows = [{"a": 0.5, "b": -1.0}, {"a": 2.0, "b": 1.0}, {"a": -3.0, "b": 0.1}]
        st, _, obj = _post(srv, json.dumps({"instances": rows}).encode())
        X = np.array([[r["a"], r["b"]] for r in rows])
        assert st == 200 and obj["predictions"] == env["est"].predict(X).tolist()
        st, _, obj = _post(srv, json.dumps({"instances": [{"a": "x", "b": 1.0}]}).encode())
        assert st == 422 and "field 'a'" in obj["error"] and "a: float64" in obj["error"]
    with mj.serve("double:1", trusted=True, extra_env=extra) as srv:
        got = srv.predict(np.array([[1.5, 2.0]]))
        assert got.dtype == np.float64 and got.tolist() == [[3.0, 4.0]]
    mj.set_store(None)


def test_load_failure_is_not_ready_with_reason(env):
    mj.set_store(env["store"])
    with pytest.raises(ServeError) as e:  # trusted, but its class is gone
        mj.serve("gone", trusted=True)
    assert e.value.status == 503 and "gone_mod" in str(e.value)
    with pytest.raises(mj.registry.ModelNotFoundError):
        mj.serve("mlp@nosuchalias")
    mj.set_store(None)
    env_ = {**os.environ, "MLOPS_JUPYTER_STORE": str(env["store"])}
    p = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", "serve", "mlp:7"],
        env=env_,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "error:" in p.stderr and "7" in p.stderr
    assert "Traceback" not in p.stderr


def test_worker_killed_under_load_others_serve(env, mlp_server):
    import psutil

    workers = psutil.Process(mlp_server.proc.pid).children()
    assert len(workers) == 2
    x = np.ones((1, 4), np.float32)
    stop = threading.Event()
    ok_after: list[int] = []
    failed: list[str] = []
    killed = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                mlp_server.predict(x, timeout=20)
                if killed.is_set():
                    ok_after.append(1)
            except Exception as e:  # requests in the killed worker's hands
                failed.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(workers[0].pid, signal.SIGKILL)
    killed.set()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(ok_after) >= 20, (len(ok_after), failed[:3])
    assert len(failed) <= 4, failed[:5]  # at most the ones in flight on the killed worker
    assert mlp_server.proc.poll() is None


def test_signature_is_checked_at_registration_and_kept():
    model = torch.nn.Linear(3, 1)
    for bad, msg in [
        ({"x": {"shape": [3], "dtype": "complex64"}}, "dtype must be one of"),
        ({"x": {"shape": "3", "dtype": "float32"}}, "shape must be a list"),
        ({"columns": {}}, "no columns"),
        ([1, 2], "must be a non-empty dict"),
    ]:
        with pytest.raises(mj.InvalidInputError, match=msg):
            mj.register_model("sig", model, signature=bad)
    v = mj.register_model("sig", model, signature=mj.serving.infer_signature(torch.zeros(2, 3)))
    meta = mj.registry.model_version("sig", version=v)["meta"]
    assert meta["signature"] == {
        "kind": "tensor",
        "fields": [{"name": "inputs", "dtype": "float32", "shape": [3]}],
    }
