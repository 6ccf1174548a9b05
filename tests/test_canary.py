"""Canary ramps with checks and automatic rollback: a real `mlops-jupyter serve NAME` (whose
supervisor runs the controller) answers traffic while a canary walks a short ramp, or is
rolled back when it errs or is slow; two `rollout watch` controllers at once take each step
once; the rules themselves on known figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serving_helpers import module_store

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main  # noqa: E402
from mlops_jupyter.serving import canary as cn  # noqa: E402
from mlops_jupyter.serving.client import request  # noqa: E402
from mlops_jupyter.store import (
    open_store,  # noqa: E402
    telemetry,  # noqa: E402
)
from mlops_jupyter.store import serving as sstore  # noqa: E402
from mlops_jupyter.store import serving_rollouts as sr  # noqa: E402

SIG = {"x": ((2,), "float64")}
FNS = """
import time
import numpy as np

def double(x):
    return np.asarray(x) * 2

def triple(x):
    return np.asarray(x) * 3

def flaky(x):
    x = np.asarray(x)
    if (x[:, 0] > 0.5).any():
        raise ValueError("flaky model: x0 > 0.5")
    return x * 2

def slow(x):
    time.sleep(0.3)
    return np.asarray(x) * 2
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    """Model "cn": v1 double (production), v2 triple, v3 flaky (logged by a run), v4 slow."""
    root = tmp_path_factory.mktemp("canary")
    mods = root / "mods"
    mods.mkdir()
    (mods / "canary_fns.py").write_text(FNS)
    sys.path.insert(0, str(mods))
    import canary_fns as f

    try:
        with module_store(root, request, "canary") as (store, art):
            mj.register_model("cn", f.double, signature=SIG)
            mj.register_model("cn", f.triple, signature=SIG)
            with mj.start_run(name="train-flaky") as run:
                mj.register_model("cn", f.flaky, signature=SIG, run=run)
            mj.register_model("cn", f.slow, signature=SIG)
            mj.promote_model("cn", 1, "staging")
            mj.promote_model("cn", 1, "production")
            for fn in (f.double, f.triple):  # "cc", "cl": tests without a server
                mj.register_model("cc", fn, signature=SIG)
                mj.register_model("cl", fn, signature=SIG)
            pp = os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")])
            srv = mj.serve("cn", trusted=True, max_wait_ms=1, extra_env={"PYTHONPATH": pp, **art})
    finally:
        sys.path.remove(str(mods))
    yield {"store": store, "srv": srv, "run": run, "art": art}
    srv.stop()


class Traffic:
    """Clients sending one-row requests (x0 uniform in [0, 1)) without pause, new users."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.answers, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, k: int) -> None:
        rng = np.random.default_rng(k)
        i = 0
        while not self.stop.is_set():
            body = json.dumps({"inputs": [[float(rng.random()), 1.0]]}).encode()
            h = {"Content-Type": "application/json", "X-User-Id": f"u{k}-{i}-{time.time()}"}
            status, _, raw = request(self.url + "/predict", "POST", body, h)
            self.answers.append((time.monotonic(), status, json.loads(raw).get("variant")))
            i += 1

    def recent(self, s: float = 0.5) -> list[tuple]:
        t = time.monotonic() - s
        return [a for a in list(self.answers) if a[0] >= t]

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _wait_state(store, model: str, state: str, timeout: float = 30) -> dict:
    s = open_store(store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = sr.get(s, model)
        if row and row["state"] == state:
            return row
        time.sleep(0.2)
    raise AssertionError(f"{model} not {state!r} in {timeout} s: {sr.get(s, model)}")


def _reasons(store, model: str) -> list[str]:
    mj.set_store(store)
    try:
        h = mj.registry.history(model)
    finally:
        mj.set_store(None)
    return h.filter(h["action"] == "rollout")["reason"].to_list()


def _canary(env, canary: str, ramp: str, every: float, **rules) -> None:
    mj.set_store(env["store"])
    try:
        s = open_store(env["store"])
        cn.set_split(s, "cn", "v1=100", None, "test")
        cn.start_canary(s, "cn", canary, ramp, every, rules=cn.Rules(**rules), user="test")
    finally:
        mj.set_store(None)


def _show(env, capsys) -> str:
    capsys.readouterr()
    try:
        assert main(["--store", str(env["store"]), "rollout", "show", "cn"]) == 0
    finally:
        mj.set_store(None)
    return capsys.readouterr().out


def test_healthy_canary_walks_the_ramp(env, capsys):
    _canary(env, "v2", "20,50,100", 1.0, min_requests=5, max_p99_ms=5000)
    with Traffic(env["srv"].url) as traffic:
        _wait_state(env["store"], "cn", "promoted")
        time.sleep(1.5)  # the worker polls the layout about once a second
        last = traffic.recent()
    assert last and {v for _, _, v in last} == {"v2"}
    assert {s for _, s, _ in traffic.answers} == {200}
    reasons = _reasons(env["store"], "cn")
    i = max(k for k, r in enumerate(reasons) if r.startswith("canary v2 (v2) against v1"))
    steps = reasons[i:]
    assert len(steps) == 3, steps
    assert "step 2/3: 50 %" in steps[1] and "promoted: 100 %" in steps[2], steps
    out = _show(env, capsys)
    assert "promoted" in out and "v2=100" in out


def test_erroring_canary_is_rolled_back(env, capsys):
    _canary(env, "v3", "50,100", 3600)
    with Traffic(env["srv"].url) as traffic:
        row = _wait_state(env["store"], "cn", "rolled back")
        time.sleep(1.5)
        last = traffic.recent()
    assert last and {v for _, _, v in last} == {"v1"} and {s for _, s, _ in last} == {200}
    assert row["layout"]["variants"] == [["v1", 1, 10000]]
    assert "error rate" in row["reason"] and "requests failed" in row["reason"]
    assert "rolled back at step 1/2" in _reasons(env["store"], "cn")[-1]
    out = _show(env, capsys)
    assert "rolled back" in out and "error rate" in out
    # an event on the run that logged the canary's version
    events = telemetry.list_events(open_store(env["store"]), None, ("rollback",))
    assert any(e[1] == env["run"].id and "error rate" in e[5] for e in events), events


def test_slow_canary_is_rolled_back(env):
    _canary(env, "v4", "50,100", 3600, max_p99_ms=100)
    with Traffic(env["srv"].url, clients=8):
        row = _wait_state(env["store"], "cn", "rolled back")
    assert "p99 latency" in row["reason"] and "> 100 ms" in row["reason"], row["reason"]


def test_two_controllers_take_each_step_once(env):
    """Two `rollout watch` processes on one canary (no server: rows logged directly)."""
    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "cc", "v1=100", None, "test")  # the control (else the newest)
        cn.start_canary(s, "cc", "v2", "10,20,50,100", 0.3, rules=cn.Rules(min_requests=5))
    finally:
        mj.set_store(None)
    stop = threading.Event()

    def feed() -> None:
        k = 0
        while not stop.is_set():
            now = time.time()
            rows = [(f"cc-{k}-{v}", "cc", n, v, now, 1.0, 200, None, 1, 1, None, "t")
                    for v, n in (("v1", 1), ("v2", 2))]  # fmt: skip
            sstore.log_predictions(s, rows * 3)
            k += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    envv = {**os.environ, "MLOPS_JUPYTER_STORE": str(env["store"])}
    cmd = [sys.executable, "-m", "mlops_jupyter", "rollout", "watch", "cc", "--interval", "0.02"]
    procs = [subprocess.Popen([*cmd, "--for", "20"], env=envv, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    try:
        _wait_state(env["store"], "cc", "promoted", timeout=40)
    finally:
        stop.set()
        feeder.join()
        for p in procs:
            p.terminate()
        outs = [p.communicate(timeout=10)[0] for p in procs]
    reasons = _reasons(env["store"], "cc")
    for step in ("step 2/4: 20 %", "step 3/4: 50 %", "promoted: 100 %"):
        assert sum(step in r for r in reasons) == 1, (step, reasons)
    # both controllers ran, and between them they took each step once
    taken = [
        ln for o in outs for ln in o.splitlines() if ln.startswith("cc: ") and "lost" not in ln
    ]
    assert len(taken) == 3, outs


def test_canary_whose_inputs_drift_is_rolled_back(env, tmp_path, monkeypatch):
    """Both versions were trained on the same data; the canary's live inputs (1 s windows,
    serving/monitor.py) drift from it and the controller rolls it back on that rule."""
    pl = pytest.importorskip("polars")
    pytest.importorskip("scipy")
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "drift_cn.py").write_text("def score(x):\n    return x.sum(axis=1)\n")
    sys.path.insert(0, str(mods))
    art = env["art"]  # the module's store keeps its files there
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", art["MLOPS_JUPYTER_ARTIFACTS"])
    mj.set_store(env["store"])
    try:
        import drift_cn

        rng = np.random.default_rng(0)
        train = pl.DataFrame({"a": rng.normal(size=3000), "b": rng.normal(2, 1, size=3000)})
        sig = {"columns": {"a": "float64", "b": "float64"}}
        with mj.start_run(name="train-dd"):
            mj.version(train, name="train-dd")
            mj.register_model("dd", drift_cn.score, signature=sig)
            mj.register_model("dd", drift_cn.score, signature=sig)
        s = open_store(env["store"])
        cn.set_split(s, "dd", "v1=100", None, "test")
        cn.start_canary(s, "dd", "v2", "50,100", 3600, rules=cn.Rules(max_p99_ms=5000), user="t")
        pp = os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")])
        srv = mj.serve("dd", trusted=True, monitor_window="1s", extra_env={"PYTHONPATH": pp, **art})
    finally:
        mj.set_store(None)
        sys.path.remove(str(mods))
        sys.modules.pop("drift_cn", None)
    with srv:
        end = time.monotonic() + 20
        while time.monotonic() < end and sr.get(s, "dd")["state"] == "ramping":
            a, b = rng.normal(size=200), rng.normal(5, 1, size=200)  # b shifted by 3
            body = json.dumps({"inputs": {"a": a.tolist(), "b": b.tolist()}}).encode()
            h = {"Content-Type": "application/json", "X-User-Id": f"d{time.time()}"}
            status, _, raw = request(srv.url + "/predict", "POST", body, h)
            assert status == 200, raw
            time.sleep(0.02)
    row = sr.get(s, "dd")
    assert row["state"] == "rolled back", row
    assert "input drift" in row["reason"] and "b" in row["reason"], row["reason"]


def test_refused_canary_is_rolled_back_by_the_controller(env):
    """A worker's record that the canary's version did not load (no server here: recorded
    directly) rolls it back at the next tick, with the worker and the error as evidence; a
    failing shadow alone does not, and each worker's refusal is recorded once."""
    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "cl", "v1=100", None, "test")
        cn.start_canary(s, "cl", "v2", "5,100", 3600, shadow="v1", user="test")
    finally:
        mj.set_store(None)
    gen = sr.get(s, "cl")["generation"]
    shadow_only = [{"name": "v1", "version": 1, "error": "OSError: disk gone"}]
    assert sr.record_refusal(s, "cl", gen, "h:1", "v2=5,v1=95 shadow v1", shadow_only)
    assert not sr.record_refusal(s, "cl", gen, "h:1", "v2=5,v1=95 shadow v1", shadow_only)
    assert cn.tick(s, "cl")["action"] == "wait"
    err = "ModuleNotFoundError: No module named 'gone'"
    both = [{"name": "v2", "version": 2, "error": err}, *shadow_only]
    assert sr.record_refusal(s, "cl", gen, "h:2", "v2=5,v1=95 shadow v1", both)
    out = cn.tick(s, "cl")
    assert out["action"] == "rollback", out
    assert out["reason"] == f"canary load: worker h:2 could not load v2 (v2): {err}"
    row = sr.get(s, "cl")
    assert row["state"] == "rolled back" and row["layout"]["variants"] == [["v1", 1, 10000]]
    assert "rolled back at step 1/2 (5 %): canary load: worker h:2" in row["reason"]
    assert [r["worker"] for r in sr.refusals(s, "cl", gen)] == ["h:1", "h:2"]
    shown = cn.show(s, "cl")["refused"]
    assert {r["generation"] for r in shown} == {gen} and len(shown) == 2


def _fig(n, errors=0, lat=5.0, fb=None, fb_n=0):
    return {
        "n": n,
        "errors": errors,
        "latencies": [lat] * (n - errors),
        "feedback_n": fb_n,
        "feedback_mean": fb,
    }


def test_rules_on_known_figures():
    r = cn.Rules()
    ok = cn.evaluate(r, _fig(200), _fig(2000), None)
    assert ok["failed"] == [] and ok["enough"] and ok["healthy"]
    # one error in twenty is not enough evidence; five are
    assert cn.evaluate(r, _fig(20, 1), _fig(200), None)["failed"] == []
    assert not cn.evaluate(r, _fig(20, 1), _fig(200), None)["healthy"]
    bad = cn.evaluate(r, _fig(20, 5), _fig(200), None)["failed"]
    assert [f["rule"] for f in bad] == ["error rate"] and "5 of 20" in bad[0]["evidence"]
    slow = cn.evaluate(r, _fig(30, lat=400.0), _fig(200), None)["failed"]
    assert [f["rule"] for f in slow] == ["p99 latency"]
    # the business metric against the control, with a margin and enough feedback
    worse = cn.evaluate(r, _fig(200, fb=0.30, fb_n=50), _fig(200, fb=0.50, fb_n=500), None)
    assert [f["rule"] for f in worse["failed"]] == ["business metric"]
    close = cn.evaluate(r, _fig(200, fb=0.47, fb_n=50), _fig(200, fb=0.50, fb_n=500), None)
    assert close["failed"] == []
    few = cn.evaluate(r, _fig(200, fb=0.0, fb_n=10), _fig(200, fb=0.50, fb_n=500), None)
    assert few["failed"] == []
    lower = cn.Rules(higher_is_better=False)
    assert (
        cn.evaluate(lower, _fig(200, fb=0.30, fb_n=50), _fig(200, fb=0.5, fb_n=50), None)["failed"]
        == []
    )
    drift = {"drifted": True, "share": 0.6, "window_start": 0.0, "columns": ["x"]}
    d = cn.evaluate(r, _fig(200), _fig(200), drift)["failed"]
    assert [f["rule"] for f in d] == ["input drift"] and "0.60" in d[0]["evidence"]
    assert cn.evaluate(cn.Rules(drift=False), _fig(200), _fig(200), drift)["failed"] == []
    # a worker that could not load the canary: at once, before any request
    refused = [{"worker": f"h:{k}", "failed": [{"name": "v2", "version": 2, "error": "E: x"}]}
               for k in (1, 2)]  # fmt: skip
    ld = cn.evaluate(r, _fig(0), _fig(200), None, refused)["failed"]
    assert ld == [
        {"rule": "canary load", "evidence": "worker h:1 could not load v2 (v2): E: x "
         "(and 1 more worker)"}
    ]  # fmt: skip
    with pytest.raises(mj.errors.InvalidInputError):
        cn.Rules(max_error_rate=1.5)
