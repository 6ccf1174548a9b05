"""The sidebar over a tracking server: a real `jupyter lab` with
MLOPS_JUPYTER_STORE=http://... and MLOPS_JUPYTER_TOKEN forwards `/mlops/api/v1/...` to a
real `mlops-jupyter server`, and answers exactly what a `jupyter lab` opened on the same
store directly answers; a refused token and a stopped server are clear JSON errors."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from browser_helpers import start_lab, stop_lab
from sidebar_helpers import ODD_NAME, populate
from trackserver_helpers import Server, request

pytest.importorskip("jupyter_server")
pytestmark = pytest.mark.timeout(180)

API = "mlops/api/v1/"
ARTIFACT = b"weights \x00\x01\x02" * 5000
VICTIM = os.urandom(9 << 20)  # two chunks of the artifact store: changed bytes show at the end
# fields computed from the clock at answer time (a running run's duration, a timing)
VOLATILE = {"elapsed_ms", "duration_s", "now", "age_s", "heartbeat_age_s"}


@pytest.fixture(scope="module")
def labs(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("sbr")
    root = tmp / "root"
    (root / "work").mkdir(parents=True)
    (tmp / "store").mkdir()
    store: object = tmp / "store" / "store.db"
    env = {"MLOPS_JUPYTER_STORE": str(store)}
    saved = os.environ.get("MLOPS_JUPYTER_ARTIFACTS")
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        store = request.getfixturevalue("pg_server").new_database("sbr")
        env = {"MLOPS_JUPYTER_STORE": str(store), "MLOPS_JUPYTER_ARTIFACTS": str(tmp / "arts")}
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = env["MLOPS_JUPYTER_ARTIFACTS"]
    labs: list = []
    servers: list[Server] = []
    try:
        ids = _fill(store, root, tmp)
        from mlops_jupyter.store import open_store, tokens

        good = tokens.add(open_store(store), "sidebar", "read")
        child = {**os.environ, **env}
        main = Server(child, tmp).start()
        spare = Server(child, tmp).start()  # stopped by the last test
        servers += [main, spare]
        remote = {"MLOPS_JUPYTER_TOKEN": good, "MLOPS_JUPYTER_STORE": main.url}
        wrong = {
            "MLOPS_JUPYTER_TOKEN": "mjt_not-a-token",
            "MLOPS_JUPYTER_STORE": spare.url,
            "MLOPS_JUPYTER_SIDEBAR_TIMEOUT": "2",
        }
        # three labs start at once: their start-up is mostly waiting
        with ThreadPoolExecutor(3) as pool:
            futs = [pool.submit(start_lab, root, store, e) for e in (env, remote, wrong)]
            for f in futs:
                labs.append(f.result())
        yield {
            "direct": labs[0],
            "remote": labs[1],
            "wrong": labs[2],
            "ids": ids,
            "store": store,
            "env": env,
            "token": good,
            "spare": spare,
        }
    finally:
        for lab in labs:
            stop_lab(lab)
        for s in servers:
            s.stop()
        if saved is None:
            os.environ.pop("MLOPS_JUPYTER_ARTIFACTS", None)
        else:
            os.environ["MLOPS_JUPYTER_ARTIFACTS"] = saved


def _fill(store, root, tmp) -> dict:
    """populate()'s runs (a 100k-point series, telemetry, alerts, odd names) and a run
    with an artifact."""
    import mlops_jupyter as mj

    ids = populate(store, notebook=root / "work" / "train.ipynb", n_runs=6)
    files = {"model.bin": ARTIFACT, "victim.bin": VICTIM, "small.bin": os.urandom(1000)}
    mj.set_store(store)
    try:
        with mj.start_run("with-artifact", experiment="exp-b", params={"lr": 0.3}) as run:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
                run.log_artifact(tmp / name)
            mj.log(step=0, loss=0.5)
            mj.log_text("notes", "<b>not bold</b>", step=0)
        ids["art"] = run.id
    finally:
        mj.set_store(None)
    return ids


def _get(lab, path: str, auth: bool = True) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"token {lab.token}"} if auth else {}
    req = urllib.request.Request(lab.url + API + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _stable(obj):
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _paths(ids: dict) -> list[str]:
    long, art, running, odd = ids["long"], ids["art"], ids["running"], quote(ids["odd"])
    a = ids["exp_a"]
    return [
        "health",
        "experiments",
        "metric-keys",
        "metric-keys?system=1",
        "runs",
        "runs?experiment=exp-a&sort=metric&order=asc&limit=3",
        "runs?where=params.lr%3E%3D0.03&where=params.opt%3Dadam",
        f"runs/{running}",  # its notebook.path lies under the root: notebook_relpath
        f"runs/{art}",
        f"runs/{odd}",
        f"runs/{long}/metrics/loss?max_points=500",
        f"runs/{quote(ids['odd'])}/metrics/{quote('val/loss 50%')}",
        f"runs/{long}/data",
        f"compare?ids={a[0]},{a[1]}&max_points=100",
        f"telemetry?ids={running}",
        "alerts",
        "drift",
        "columns?experiment=exp-a",
        "table?experiment=exp-a&columns=params.lr,metrics.loss.last&limit=4",
        "groups?by=params.opt&metrics=metrics.loss.last",
        f"runs/{art}/media",
        "serving",
        f"sweeps/{a[0]}",
        # errors answer the same JSON too
        "runs?limit=abc",
        "runs/no-such-run",
        "no/such/route",
        "serving/no-model",
        f"llm/compare?runs={a[0]}",
    ]


def test_every_route_answers_as_over_the_store(labs):
    assert labs["ids"]["odd"] and ODD_NAME
    paths = _paths(labs["ids"])
    for path in paths:
        s1, h1, b1 = _get(labs["direct"], path)
        s2, h2, b2 = _get(labs["remote"], path)
        assert s1 == s2, (path, b1[:300], b2[:300])
        assert h2["Content-Type"] == h1["Content-Type"], path
        assert _stable(json.loads(b1)) == _stable(json.loads(b2)), path
        assert labs["token"].encode() not in b2 and labs["token"] not in json.dumps(h2)
    # the run detail carries what the sidebar needs to open the notebook from this root
    _, _, body = _get(labs["remote"], f"runs/{labs['ids']['running']}")
    assert json.loads(body)["notebook_relpath"] == "work/train.ipynb"


def test_downloads_stream_through(labs):
    art = labs["ids"]["art"]
    s1, h1, b1 = _get(labs["direct"], f"runs/{art}/artifacts/model.bin")
    s2, h2, b2 = _get(labs["remote"], f"runs/{art}/artifacts/model.bin")
    assert s1 == s2 == 200 and b1 == b2 == ARTIFACT
    for name in ("Content-Type", "Content-Disposition", "Content-Length"):
        assert h1[name] == h2[name], name
    _, _, listing = _get(labs["remote"], f"runs/{art}/media")
    (item,) = json.loads(listing)["media"]
    assert item["url"].startswith(f"/{API}runs/{art}/media/")
    s1, h1, b1 = _get(labs["direct"], item["url"][len(API) + 1 :])
    s2, h2, b2 = _get(labs["remote"], item["url"][len(API) + 1 :])
    assert s1 == s2 == 200 and b1 == b2 and b"not bold" in b2
    assert h1["Content-Type"] == h2["Content-Type"]
    s1, h1, b1 = _get(
        labs["direct"], "export.csv?experiment=exp-a&columns=params.lr,metrics.loss.last"
    )
    s2, h2, b2 = _get(
        labs["remote"], "export.csv?experiment=exp-a&columns=params.lr,metrics.loss.last"
    )
    assert s1 == s2 == 200 and b1 == b2 and b"params.lr" in b2
    assert h1["Content-Disposition"] == h2["Content-Disposition"]


def _overwrite(store, run: str, name: str, data: bytes, tmp) -> None:
    """Replace the stored bytes of an artifact (as a damaged disk would)."""
    from mlops_jupyter.artifacts.base import blob_key
    from mlops_jupyter.store import artifact_refs, open_store
    from mlops_jupyter.store import runs as rstore

    st = open_store(store)
    row = artifact_refs.run_artifact(st, rstore.resolve_run(st, run), name)
    (tmp / "bad").write_bytes(data)
    st.artifacts.put_file(blob_key(row["digest"]), tmp / "bad")


def test_changed_bytes_are_never_delivered_whole(labs, tmp_path, monkeypatch):
    for k, v in labs["env"].items():  # the servers' artifact store, not this test's own
        monkeypatch.setenv(k, v)
    art = labs["ids"]["art"]
    bad = bytearray(VICTIM)
    bad[-1] ^= 0xFF  # same size, last byte changed: found only after the last chunk
    _overwrite(labs["store"], art, "victim.bin", bytes(bad), tmp_path)
    _overwrite(labs["store"], art, "small.bin", bytes(1000), tmp_path)
    req = urllib.request.Request(
        labs["remote"].url + API + f"runs/{art}/artifacts/victim.bin",
        headers={"Authorization": f"token {labs['remote'].token}"},
    )
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            r.read()
    status, _, body = _get(labs["remote"], f"runs/{art}/artifacts/small.bin")  # one chunk
    assert status == 500 and "does not match its digest" in json.loads(body)["error"]
    # the proxy still answers after a cut download
    status, _, body = _get(labs["remote"], f"runs/{art}/artifacts/model.bin")
    assert status == 200 and body == ARTIFACT


def test_jupyter_authentication_still_guards_the_proxy(labs):
    status, _, body = _get(labs["remote"], "runs", auth=False)
    assert status == 403 and json.loads(body)["status"] == 403
    # only the sidebar's API is forwarded: no way out of it with dot segments
    status, _, body = _get(labs["remote"], "runs/%2e%2e/%2E%2E/api/2.0/mlflow/runs/search")
    assert status == 400 and "segments" in json.loads(body)["error"]


def test_tracking_server_checks_its_token_on_sidebar_routes(labs):
    spare = labs["spare"]
    assert request(spare.url, "GET", "/" + API + "runs")[0] == 401
    status, body = request(spare.url, "GET", "/" + API + "runs", labs["token"])
    assert status == 200 and body["total"] == 6 + 5 + 1
    # anything but GET needs a write token; errors keep the sidebar's shape
    status, body = request(spare.url, "POST", "/" + API + "runs", labs["token"], body={})
    assert status == 403 and body == {"error": body["error"], "status": 403}
    assert "scope read, not write" in body["error"]
    # media URLs are made under the base URL of the Jupyter server that forwards the request
    media = "/" + API + f"runs/{labs['ids']['art']}/media"
    for base, want in [("/user/ann/", "/user/ann/"), ("//evil.example/", "/"), ("x", "/")]:
        hdrs = {"X-Mlops-Base-Url": base}
        status, body = request(spare.url, "GET", media, labs["token"], headers=hdrs)
        assert status == 200 and body["media"][0]["url"].startswith(want + API), base


def test_wrong_token_then_stopped_server_are_clear_json(labs):
    lab, spare = labs["wrong"], labs["spare"]
    status, _, body = _get(lab, "runs")
    err = json.loads(body)
    assert status == 401 and err["status"] == 401
    assert "refused MLOPS_JUPYTER_TOKEN" in err["error"] and "invalid or expired" in err["error"]
    assert "mjt_not-a-token" not in err["error"]
    spare.stop()
    t0 = time.monotonic()
    status, _, body = _get(lab, "runs")
    took = time.monotonic() - t0
    err = json.loads(body)
    assert status == 503 and err["status"] == 503 and "cannot be reached" in err["error"]
    assert spare.url in err["error"] and took < 5
    # a server that takes the connection and never answers: 504 after the timeout
    with socket.socket() as hung:
        hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hung.bind(("127.0.0.1", spare.port))
        hung.listen(8)
        t0 = time.monotonic()
        status, _, body = _get(lab, "runs")
        took = time.monotonic() - t0
    err = json.loads(body)
    assert status == 504 and "did not answer in time" in err["error"] and 1.5 < took < 10
