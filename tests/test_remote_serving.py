"""Serving over a real `mlops-jupyter server` process: a real serving process started with
`mj.serve` and MLOPS_JUPYTER_STORE=http://... loads the model through the registry routes,
logs its predictions, feedback and input windows through the serving routes, and follows a
rollout set over the server; what it logged is what mj.ab_report and mj.serving_drift read
on the server's store directly; predictions keep being answered while the tracking server
is stopped, and are delivered once it is back; a read (or write) token cannot set a
rollout; a canary set over the server is walked by the serving process's controller; the
routes refuse bad input (nothing stored) and store a repeated batch once. One tracking server and one serving process for the module (SQLite, or
PostgreSQL in the CI's suites)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from trackserver_helpers import module_remote, use_remote
from trackserver_helpers import request as hreq

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main  # noqa: E402
from mlops_jupyter.errors import InvalidInputError  # noqa: E402
from mlops_jupyter.serving.client import request  # noqa: E402
from mlops_jupyter.store import serving as sstore  # noqa: E402
from mlops_jupyter.store import serving_profiles as sp  # noqa: E402
from mlops_jupyter.store import serving_rollouts as sr  # noqa: E402

pytestmark = pytest.mark.timeout(180)

MODEL = "scorer"
SIG = {"x": {"shape": [4], "dtype": "float32"}}
RNG = np.random.default_rng(3)
TRAIN = RNG.normal(size=(3000, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def remote(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-serving")


@pytest.fixture(scope="module")
def served(remote, tmp_path_factory):
    """v1 (production) and v2 registered on the server's store by a run that read TRAIN;
    a serving process of the bare NAME over the server (write token, 1 s windows)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("remote-serving-client")
    mp.setenv("MLOPS_JUPYTER_ARTIFACTS", str(remote.artifacts))
    mp.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    mj.set_store(remote.loc)
    try:
        with mj.start_run(name="train-scorer"):
            mj.version(TRAIN, name="scorer-train")
            for seed in (1, 2):
                torch.manual_seed(seed)
                mj.register_model(MODEL, torch.nn.Linear(4, 2).eval(), signature=SIG)
        mj.promote_model(MODEL, 1, "staging")
        mj.promote_model(MODEL, 1, "production")
    finally:
        mj.set_store(None)
        mp.delenv("MLOPS_JUPYTER_ARTIFACTS")
    mp.setenv("MLOPS_JUPYTER_STORE", remote.srv.url)
    mp.setenv("MLOPS_JUPYTER_TOKEN", remote.wtok)
    mp.setenv("MLOPS_JUPYTER_CACHE", str(tmp / "cache"))
    mp.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp / "spool"))
    srv = mj.serve(MODEL, workers=2, monitor_window="1s")
    try:
        yield {"srv": srv}
    finally:
        srv.stop()
        mp.undo()


def _post(url: str, user: str, x: np.ndarray) -> tuple[int, dict, float]:
    t0 = time.perf_counter()
    status, _, raw = request(
        url + "/predict",
        "POST",
        json.dumps({"inputs": x.tolist()}).encode(),
        {"Content-Type": "application/json", "X-User-Id": user},
    )
    return status, json.loads(raw), time.perf_counter() - t0


def _rollout(monkeypatch, capsys, remote, tok: str, *args: str) -> tuple[int, str, str]:
    """`mlops-jupyter rollout ARGS` in this process, over the server with token `tok`."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", remote.srv.url)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", tok)
    capsys.readouterr()
    try:
        code = main(["rollout", *args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_read_or_write_token_cannot_set_a_rollout(remote, served, monkeypatch, capsys):
    for tok in (remote.rtok, remote.wtok):
        code, _, err = _rollout(monkeypatch, capsys, remote, tok, "set", MODEL, "--split",
                                "v1=50,v2=50")  # fmt: skip
        assert code != 0 and "admin" in err, err
        assert remote.rtok not in err and remote.wtok not in err
    assert sr.get(remote.store, MODEL) is None  # nothing stored


def test_a_rollout_set_over_the_server_is_followed(remote, served, monkeypatch, capsys):
    url = served["srv"].url
    code, _, err = _rollout(monkeypatch, capsys, remote, remote.atok, "set", MODEL, "--split",
                            "v1=50,v2=50")  # fmt: skip
    assert code == 0, err
    row = sr.get(remote.store, MODEL)
    assert row["layout"]["variants"] == [["v1", 1, 5000], ["v2", 2, 5000]]
    deadline = time.monotonic() + 15
    seen: set[str] = set()
    i = 0
    while seen != {"v1", "v2"} and time.monotonic() < deadline:
        status, obj, _ = _post(url, f"probe-{i}", TRAIN[:2])
        assert status == 200
        seen.add(obj["variant"])
        i += 1
    assert seen == {"v1", "v2"}
    code, out, err = _rollout(monkeypatch, capsys, remote, remote.rtok, "show", MODEL, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["generation"] == row["generation"] and "token releaser" in info["updated_by"]
    assert any("v1=50,v2=50" in h["reason"] for h in info["history"])


def test_predictions_over_the_server_are_what_ab_report_and_drift_read(
    remote, served, monkeypatch, tmp_path
):
    use_remote(monkeypatch, remote, tmp_path)  # this process reads through the server too
    srv = served["srv"]
    rng = np.random.default_rng(11)
    t0 = time.time()
    sent: dict[str, str] = {}
    end = time.monotonic() + 3.0  # three 1 s windows of traffic
    i = 0
    while time.monotonic() < end:
        x = rng.normal(size=(20, 4)).astype(np.float32)
        status, obj, _ = _post(srv.url, f"user-{i}", x)
        assert status == 200
        rid = obj["request_id"]
        sent[rid] = obj["variant"]
        p = 0.7 if obj["variant"] == "v2" else 0.4
        srv.feedback(rid, int(rng.random() < p))
        i += 1
    store = remote.store
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = {r["request_id"] for r in sstore.predictions(store, MODEL) if r["ts"] >= t0}
        if set(sent) <= got:
            break
        time.sleep(0.1)
    assert set(sent) <= got
    # the direct store's view equals the server's view of the same log
    direct = sstore.outcomes(store, MODEL, since=t0)
    assert {v: len(rs) for v, rs in direct.items()} == {
        v: sum(1 for x in sent.values() if x == v) for v in set(sent.values())
    }
    assert all(r["value"] in (0, 1) for rs in direct.values() for r in rs)
    over = mj.ab_report(MODEL, since=t0)  # this process: over the server (write token)
    over_c = mj.ab_report(MODEL, since=t0, metric="continuous")
    # the server counts: (successes, n) per variant, not the log's rows
    from mlops_jupyter.remote.serving import ab_inputs

    counts, versions = ab_inputs(remote.srv.url, MODEL, t0, None, None)
    assert counts == {v: (sum(r["value"] for r in rs), len(rs)) for v, rs in direct.items()}
    assert versions == {"v1": {1}, "v2": {2}}
    with pytest.raises(InvalidInputError, match="metric"):
        ab_inputs(remote.srv.url, MODEL, t0, None, "median")
    mj.set_store(remote.loc)
    try:
        here = mj.ab_report(MODEL, since=t0)
        here_c = mj.ab_report(MODEL, since=t0, metric="continuous")
    finally:
        mj.set_store(None)
    assert over.to_dict() == here.to_dict()
    assert over_c.to_dict() == here_c.to_dict() and here_c.metric == "continuous"
    assert here.control == "v1" and [v.variant for v in here.variants] == ["v2"]
    # windows: stored by the serving process through the server, judged against TRAIN
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        wins = [r for r in sp.profiles(store, MODEL, since=t0 - 1) if r["n_rows"]]
        if sum(r["n_rows"] for r in wins) >= 20 * len(sent) - 20 * 5:
            break
        time.sleep(0.2)
    assert wins and all(r["reference"] for r in wins)
    over_df = mj.serving_drift(MODEL)
    mj.set_store(remote.loc)
    try:
        here_df = mj.serving_drift(MODEL)
    finally:
        mj.set_store(None)
    assert over_df.equals(here_df) and here_df.height >= 2
    assert here_df["reference"].drop_nulls().len() == here_df.height


def test_predictions_are_answered_while_the_tracking_server_is_stopped(remote, served):
    srv = served["srv"]
    remote.srv.stop()
    try:
        answered, worst = [], 0.0
        for i in range(40):
            status, obj, dt = _post(srv.url, f"away-{i}", TRAIN[:3])
            assert status == 200, obj
            answered.append(obj["request_id"])
            worst = max(worst, dt)
        assert worst < 1.0  # no request waits for the tracking server
        # rows wait in the workers' memory (either worker may answer /stats)
        queued = [json.loads(request(srv.url + "/stats", "GET")[2]) for _ in range(6)]
        assert max(q["log_queued"] for q in queued) >= 1
        assert all(q["log_dropped"] == 0 for q in queued)
    finally:
        remote.restart()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = {r["request_id"] for r in sstore.predictions(remote.store, MODEL)}
        if set(answered) <= got:
            break
        time.sleep(0.2)
    assert set(answered) <= got  # queued while away, delivered once back, once each
    rows = [r for r in sstore.predictions(remote.store, MODEL) if r["request_id"] in answered]
    assert len(rows) == len(answered)


def test_a_canary_over_the_server_is_walked_by_the_serving_process(
    remote, served, monkeypatch, capsys
):
    """The serving process's controller asks the server for each check: the ramp steps
    and ends promoted with the traffic only it sends."""
    srv = served["srv"]
    code, _, err = _rollout(monkeypatch, capsys, remote, remote.atok, "set", MODEL,
                            "--canary", "v2", "--ramp", "50,100", "--every", "1s",
                            "--min-requests", "5", "--no-drift")  # fmt: skip
    assert code == 0, err
    assert sr.get(remote.store, MODEL)["state"] == "ramping"
    deadline = time.monotonic() + 30
    i = 0
    while sr.get(remote.store, MODEL)["state"] == "ramping" and time.monotonic() < deadline:
        assert _post(srv.url, f"canary-{i}", TRAIN[:2])[0] == 200
        i += 1
    row = sr.get(remote.store, MODEL)
    assert row["state"] == "promoted" and row["updated_by"] == "controller", row
    assert row["layout"]["variants"] == [["v2", 2, 10000]]


def test_serving_routes_refuse_bad_input_and_store_a_repeated_batch_once(remote):
    url, t = remote.srv.url, time.time()
    row = ["dup-1", MODEL, 1, "v1", t, 1.5, 200, None, 2, 2, "[[0.1]]", "h:1"]
    path = "/api/v1/serving/predictions"
    assert hreq(url, "POST", path, remote.rtok, {"rows": [row]})[0] == 403
    assert hreq(url, "POST", path, remote.wtok, {"rows": [row]}) == (
        200,
        {"stored": 1, "duplicates": 0},
    )
    assert hreq(url, "POST", path, remote.wtok, {"rows": [row, row]}) == (
        200,
        {"stored": 0, "duplicates": 2},
    )
    for bad in ([*row[:6], "200", *row[7:]], row[:5], [*row[:4], float("nan"), *row[5:]]):
        body = json.dumps({"rows": [["ok-1", *row[1:]], bad]}).encode()
        status, out = hreq(url, "POST", path, remote.wtok, raw=body)
        assert status == 400 and "rows[1]" in out["message"], out
    got = [
        r for r in sstore.predictions(remote.store, MODEL) if r["request_id"] in ("dup-1", "ok-1")
    ]
    assert [r["request_id"] for r in got] == ["dup-1"]  # nothing of a refused batch
    win = {"model": MODEL, "version": 1, "variant": "v1", "worker": "h:1",
           "window_start": 1.0, "window_end": 2.0, "n_rows": 3, "n_sampled": 3,
           "n_requests": 1, "profile": [{"name": "0", "count": 3}]}  # fmt: skip
    prof = "/api/v1/serving/profiles"
    assert hreq(url, "POST", prof, remote.wtok, {"row": win})[1] == {"stored": True}
    assert hreq(url, "POST", prof, remote.wtok, {"row": win})[1] == {"stored": False}
    assert hreq(url, "POST", prof, remote.wtok, {"row": {**win, "n_rows": -1}})[0] == 400
    assert len([r for r in sp.profiles(remote.store, MODEL) if r["window_start"] == 1.0]) == 1
    body = {"action": "rollback"}
    for tok in (remote.rtok, remote.wtok):
        assert hreq(url, "POST", f"/api/v1/serving/rollouts/{MODEL}", tok, body)[0] == 403
    assert hreq(url, "GET", "/api/v1/serving/rollouts/nope/show", remote.rtok)[0] == 404
