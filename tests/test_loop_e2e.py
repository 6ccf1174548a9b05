"""The closed loop end to end on real team parts: the team store on a real PostgreSQL
server, artifacts on a real S3-compatible server (SeaweedFS), a real tracking server
process over that store, a live `mlops-jupyter serve` with input monitoring (1 s windows)
and its canary controller, a real local HTTP receiver for the notifications.

Drift is injected into the served inputs (a client shifts a column): serving raises its
drift alert for a closed window, the watcher (team infrastructure, on the store itself)
retrains (the job logs through the tracking server with a write token), registers, gates,
starts a canary on the live server, which ramps it to 100 %, and promotes it. Then a
candidate trained on corrupted labels is stopped by the gate, and (a rule without a gate)
rolled back by the canary's business-metric Andon rule; production is unchanged.

PostgreSQL is the point of this test: it runs in the PostgreSQL pass only (the check of
the watcher's options it needs runs in both)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import HTTPServer

import numpy as np
import polars as pl
import pytest
from conftest import _AWS_VARS, BACKEND
from loop_helpers import Receiver as _Receiver
from loop_helpers import linear as _linear
from trackserver_helpers import RemoteServer

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("scipy")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.loop.watch import poll  # noqa: E402
from mlops_jupyter.serving.client import request  # noqa: E402
from mlops_jupyter.store import loop_state  # noqa: E402
from mlops_jupyter.store import serving_rollouts as sr  # noqa: E402
from mlops_jupyter.tracking.api import current_store  # noqa: E402

pytestmark = pytest.mark.timeout(240)
on_postgresql = pytest.mark.skipif(BACKEND != "postgresql", reason="the team store is PostgreSQL")

SIG = {"columns": {"x0": "float32", "x1": "float32"}}
# rows per request: a canary's 1 s windows hold thousands of rows, far from the sizes where
# sampling noise alone crosses the drift threshold (serving/input_drift.py)
ROWS = 400

# The retraining job the watcher runs: fits the classifier to the newest training data by
# least squares and registers it, logging through the tracking server (its environment).
TRAIN = """
import os, sys
import numpy as np
import polars as pl
import torch
import mlops_jupyter as mj

df = pl.read_parquet(sys.argv[1])
X = df.select("x0", "x1").to_numpy().astype(np.float64)
w, *_ = np.linalg.lstsq(X, 2.0 * df["y"].to_numpy() - 1.0, rcond=None)
m = torch.nn.Linear(2, 2, bias=False)
with torch.no_grad():
    m.weight[:] = torch.tensor([[0.0, 0.0], [float(w[0]), float(w[1])]])
tags = {"loop.signal": os.environ["MLOPS_JUPYTER_LOOP_SIGNAL"]}
with mj.start_run("retrain-clf", experiment="clf-train", tags=tags):
    mj.data.version(df, name="clf-train")  # the canary's drift check compares with it
    mj.log_params({"w0": float(w[0]), "w1": float(w[1])})
    mj.register_model("clf", m, signature={"columns": {"x0": "float32", "x1": "float32"}})
"""


def _data(n: int, x1_mean: float, seed: int, flip: bool = False) -> pl.DataFrame:
    """y = [x0 + noise > 0] whatever x1 does (x1 is noise that drifts); `flip` plants a
    labelling bug (every label inverted)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n).astype(np.float32)
    x1 = rng.normal(x1_mean, 1.0, size=n).astype(np.float32)
    y = (x0 + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return pl.DataFrame({"x0": x0, "x1": x1, "y": (1 - y) if flip else y})


class Traffic:
    """One client sending requests of ROWS rows drawn with x1 ~ N(`shift`, 1) and, for each
    answer, its accuracy as feedback; records (time, version, variant) of every answer."""

    def __init__(self, url: str) -> None:
        self.url, self.shift, self.answers, self.errors = url, 0.0, [], []
        self.stop = threading.Event()
        self.rng = np.random.default_rng(7)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _post(self, path: str, obj: dict) -> tuple[int, dict]:
        st, _, raw = request(
            self.url + path, "POST", json.dumps(obj).encode(), {"Content-Type": "application/json"}
        )
        return st, json.loads(raw)

    def _run(self) -> None:
        while not self.stop.is_set():
            x0 = self.rng.normal(size=ROWS)
            x1 = self.rng.normal(self.shift, 1.0, size=ROWS)
            y = (x0 + 0.3 * self.rng.normal(size=ROWS) > 0).astype(int)
            try:
                st, out = self._post("/predict", {"inputs": {"x0": x0.tolist(), "x1": x1.tolist()}})
                if st != 200:
                    self.errors.append((st, out))
                    continue
                acc = float((np.argmax(out["predictions"], axis=1) == y).mean())
                self._post("/feedback", {"request_id": out["request_id"], "value": acc})
                self.answers.append((time.monotonic(), out["version"], out["variant"]))
            except OSError as e:  # recorded: the test asserts there were none
                self.errors.append((0, str(e)))
            time.sleep(0.02)

    def versions_since(self, t: float) -> set[int]:
        return {v for ts, v, _ in list(self.answers) if ts >= t}

    def wait_only(self, version: int, timeout: float = 20) -> None:
        """Until every answer of the last second comes from `version`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if self.versions_since(time.monotonic() - 1.0) == {version}:
                return
        raise AssertionError(f"still {self.versions_since(time.monotonic() - 1.0)}, not v{version}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3_server, pg_server):
    """The team's parts: store (PostgreSQL), artifacts (S3), tracking server, production
    v1 served live with 1 s monitoring windows, a client, a webhook receiver."""
    tmp = tmp_path_factory.mktemp("loop-e2e")
    env = {k: v for k, v in s3_server.env().items()}
    env.update(
        MLOPS_JUPYTER_STORE=pg_server.new_database("loop_e2e"),
        MLOPS_JUPYTER_ARTIFACTS=s3_server.url(f"loop-{uuid.uuid4().hex[:10]}"),
        MLOPS_JUPYTER_ARTIFACTS_RETRY_S="3",
        MLOPS_JUPYTER_CACHE=str(tmp / "cache"),
        MLOPS_JUPYTER_TELEMETRY="0",
    )
    hook = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    srv = traffic = remote = None
    with pytest.MonkeyPatch.context() as mp:
        for var in _AWS_VARS:
            mp.delenv(var, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        mj.set_store(None)
        try:
            # the tracking server stores files on S3 and rows in the team's database
            remote = RemoteServer(env["MLOPS_JUPYTER_STORE"], env["MLOPS_JUPYTER_ARTIFACTS"], tmp)
            remote.srv.start()
            # production v1, trained on x1 ~ N(0, 1) (its data version: the drift reference)
            with mj.start_run("train-v1", experiment="clf-train"):
                mj.data.version(_data(5000, 0.0, 1), name="clf-train")
                v1 = mj.register_model("clf", _linear(1.0, 0.5), signature=SIG)
            mj.promote_model("clf", v1, "staging")
            mj.promote_model("clf", v1, "production")
            srv = mj.serve("clf", monitor_window="1s", max_wait_ms=1)
            traffic = Traffic(srv.url)
            (tmp / "train.py").write_text(TRAIN)
            (tmp / "rules.toml").write_text(
                'target = "y"\n\n[[rule]]\ntype = "not_worse"\nmetric = "accuracy"\nby = 0.01\n'
            )
            yield {
                "env": env,
                "tmp": tmp,
                "remote": remote,
                "serve": srv,
                "traffic": traffic,
                "hook": f"http://127.0.0.1:{hook.server_address[1]}/hook",
            }
        finally:
            if traffic is not None:
                traffic.close()
            if srv is not None:
                srv.stop()
            if remote is not None:
                remote.srv.stop()
            hook.shutdown()
            mj.set_store(None)
            from mlops_jupyter.artifacts import forget

            forget()


@pytest.fixture
def on_team(team, monkeypatch, tmp_path):
    """This test's process is the watcher on the team store (the job it runs gets the
    tracking server's URL from the rule and this write token from the environment)."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    for k, v in team["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", team["remote"].wtok)
    monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.chdir(team["tmp"])
    mj.set_store(None)
    _Receiver.got.clear()
    return team


def _config(team, name: str, rule: str) -> str:
    p = team["tmp"] / name
    p.write_text(f'[[webhook]]\nurl = "{team["hook"]}"\n\n' + rule)
    return str(p)


def _rule(team, name: str, steps: list[str], ramp_every: str, extra: str = "") -> str:
    t = team["tmp"]
    return f"""
[[rule]]
name = "{name}"
on = "drift"
model = "clf"
retrain = ["{{python}}", "{t / "train.py"}", "{t / "new-data.parquet"}"]
retrain_store = "{team["remote"].srv.url}"
do = {json.dumps(steps)}
ramp = "50,100"
canary_every = "{ramp_every}"
{extra}
"""


def _gated_config(team) -> str:
    """The team's watcher: drift -> retrain, register, gate, canary (50 %, then 100 % after
    2 s and 20 requests), promote."""
    return _config(
        team,
        "loop.toml",
        _rule(
            team,
            "drift-retrain",
            ["retrain", "register", "gate", "canary", "promote"],
            "2s",
            'gate_rules = "rules.toml"\ngate_data = "eval.parquet"\n'
            "canary_rules = {min_requests = 20, fail_after = 10, min_feedback = 10}",
        ),
    )


def _poll_until(cfg: str, done, timeout: float) -> list[dict]:
    """Poll the watcher (as `mlops-jupyter watch` does, every 0.2 s) until `done(results)`."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += poll(cfg)
        if done(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"not done in {timeout} s: {got}; {loop_state.signals(current_store())}")


def _diagnose() -> str:
    """Why a chain stopped, and the newest judged input windows (for a failure message)."""
    from mlops_jupyter.store import serving_profiles as sp

    store = current_store()
    lines = [
        f"{s['signal']}: {s['state']} {s['detail'].get('reason')}"
        for s in loop_state.signals(store)
    ]
    for r in sp.profiles(store, "clf", limit=12, with_profile=False):
        cols = [
            (c["column"], round(c["statistic"], 3)) for c in (r["drift"] or {}).get("columns", [])
        ]
        lines.append(f"window {r['window_start']:.0f} {r['variant']} n={r['n_sampled']} {cols}")
    return "\n".join(lines)


def _production() -> list[int]:
    f = mj.registry.versions("clf")
    return f.filter(pl.col("stage") == "production")["version"].to_list()


def _step_events(signal: str) -> list[dict]:
    """The loop_step events of the chain's runs (experiment loop) for `signal`, in order."""
    runs = mj.runs(experiment="loop")
    events = []
    for rid in reversed(runs["id"].to_list()):  # oldest first
        run = mj.get_run(rid)
        if run["tags"].get("loop.signal") == signal:
            events += [e for e in run["events"] if e["kind"] == "loop_step"]
    return events


def _steps(signal: str) -> list[str]:
    return [e["data"]["step"] for e in _step_events(signal)]


@on_postgresql
def test_drift_retrains_through_the_tracking_server_canaries_and_promotes(on_team):
    team, traffic = on_team, on_team["traffic"]
    tmp = team["tmp"]
    traffic.wait_only(1)
    # the newest labelled data and the evaluation set, as a feedback export would write them
    _data(4000, 4.0, 2).write_parquet(tmp / "new-data.parquet")
    _data(4000, 4.0, 3).write_parquet(tmp / "eval.parquet")
    cfg = _gated_config(team)
    assert poll(cfg) == []  # no drift yet
    t0, wall0 = time.monotonic(), time.time()
    traffic.shift = 4.0  # the drift: x1 moves from N(0, 1) to N(4, 1)
    out = _poll_until(cfg, lambda o: any(r["state"] != "waiting" for r in o), 60)
    t_promoted = time.monotonic()
    assert [r["state"] for r in out][-1] == "done", _diagnose()
    sig = out[0]["signal"]
    assert sig.startswith("drift:1:v1:"), sig
    assert _production() == [2]
    traffic.wait_only(2)
    t_served = time.monotonic()
    # the figure (docs/loop.md): from the injected drift to v2 in production, by step
    (s,) = loop_state.signals(current_store(), "drift-retrain")
    marks = [("alert", s["detail"]["info"]["alert"]["created"])]
    marks += [(e["data"]["step"], e["end_time"] or e["start_time"]) for e in _step_events(sig)]
    print(
        f"\nloop e2e: injected drift -> v2 in production {t_promoted - t0:.1f} s, the live "
        f"server answering only v2 {t_served - t0:.1f} s ("
        + ", ".join(f"{k} {t - wall0:.1f}" for k, t in marks)
        + ")"
    )
    # every step ran, on tracked runs linked to the signal
    assert _steps(sig) == ["retrain", "register", "gate", "canary", "promote"]
    train = mj.runs(experiment="clf-train")
    row = train.filter(pl.col("name") == "retrain-clf").row(0, named=True)
    run = mj.get_run(row["id"])
    assert run["tags"]["loop.signal"] == sig and run["status"] == "finished"
    # the job logged through the tracking server: its registration is the token's user
    hist = mj.model_history("clf")
    reg = hist.filter((pl.col("version") == 2) & (pl.col("action") == "register"))
    (who,) = reg["user"].to_list()
    assert who.endswith("(token writer)"), who
    # the audit log: register, gate (passed), canary steps, then staging and production
    audit = mj.audit(model="clf").filter(pl.col("version").is_null() | (pl.col("version") == 2))
    acts = audit["action"].to_list()
    for a in ("register", "gate", "rollout", "transition"):
        assert a in acts, acts
    reasons = " | ".join(r or "" for r in audit["reason"].to_list())
    assert "canary v2 (v2) against v1 (v1)" in reasons and "canary v2 promoted" in reasons
    prom = audit.filter(pl.col("to_stage") == "production")
    assert sig in prom["reason"].to_list()[0]
    gates = mj.gates("clf")
    assert [g["passed"] for g in gates if g["version"] == 2] == [True]
    # the promotion names its evidence: the gate the watcher ran
    assert prom["gate_ids"].to_list()[0] == [g["id"] for g in gates if g["version"] == 2]
    assert sr.get(current_store(), "clf")["state"] == "promoted"
    assert _Receiver.got == []  # nothing went wrong: nothing to tell
    assert traffic.errors == []
    assert poll(cfg) == []  # handled once; v2 fits the new inputs


@on_postgresql
def test_worse_candidates_are_stopped_by_the_gate_and_rolled_back_by_the_canary(on_team):
    team, traffic = on_team, on_team["traffic"]
    tmp = team["tmp"]
    assert _production() == [2], "needs the first test's promotion"
    # a second drift, and a labelling bug in the new data: its model is worse
    _data(4000, -4.0, 4, flip=True).write_parquet(tmp / "new-data.parquet")
    _data(4000, -4.0, 5).write_parquet(tmp / "eval.parquet")
    traffic.shift = -4.0
    gated = _gated_config(team)  # the same watcher config as before
    (r,) = _poll_until(gated, lambda o: bool(o), 60)
    assert r["state"] == "failed" and r["signal"].startswith("drift:2:v2:"), r
    assert _production() == [2]
    assert [e["event"]["kind"] for e in _Receiver.got] == ["gate_failed"]
    assert _Receiver.got[0]["event"]["version"] == 3
    assert [g["passed"] for g in mj.gates("clf") if g["version"] == 3] == [False]
    assert _steps(r["signal"]) == ["retrain", "register"]  # stopped at the gate
    assert traffic.versions_since(time.monotonic() - 1.0) == {2}
    # the same data, a rule without a gate: the canary's feedback shows it, rolled back
    _Receiver.got.clear()
    canary = _config(
        team,
        "loop-canary.toml",
        _rule(
            team,
            "drift-canary",
            ["retrain", "register", "canary", "promote"],
            "60s",
            "canary_rules = {min_requests = 20, fail_after = 10, min_feedback = 10}",
        ),
    )
    out = _poll_until(canary, lambda o: any(r["state"] != "waiting" for r in o), 60)
    assert out[-1]["state"] == "failed", out
    assert _production() == [2]
    row = sr.get(current_store(), "clf")
    assert row["state"] == "rolled back" and "business metric" in row["reason"], _diagnose()
    traffic.wait_only(2)
    assert _steps(out[0]["signal"]) == ["retrain", "register"]
    assert [e["event"]["kind"] for e in _Receiver.got] == ["loop_failed"]
    ev = _Receiver.got[0]["event"]
    assert ev["step"] == "canary" and "rolled back" in ev["reason"] and ev["rule"] == "drift-canary"
    # audited: the failed gate of v3, the rollback of v4's canary
    audit = mj.audit(model="clf")
    assert any(a == "gate" and v == 3 for a, v in audit.select("action", "version").rows())
    rollbacks = [r for r in audit["reason"].to_list() if r and "rolled back" in r]
    assert rollbacks and "canary v4" in rollbacks[-1]
    assert traffic.errors == []


def test_watch_options_for_the_loop(tmp_path):
    """canary_rules and retrain_store are checked when the config is read."""
    from mlops_jupyter.errors import InvalidInputError
    from mlops_jupyter.loop.triggers import load_config

    base = """[[rule]]\nname = "r"\non = "drift"\nmodel = "clf"\ndo = ["retrain", "canary"]
retrain = ["{python}", "train.py"]\n"""
    p = tmp_path / "loop.toml"
    p.write_text(base + 'retrain_store = "http://127.0.0.1:9"\ncanary_rules = {min_requests = 5}\n')
    (rule,) = load_config(p)["rules"]
    assert rule.params["canary_rules"] == {"min_requests": 5}
    for bad, match in (
        ("canary_rules = {min_request = 5}", "unknown canary_rules min_request"),
        ("canary_rules = {min_requests = 2.5}", "canary_rules.min_requests"),
        ('canary_rules = {drift = "no"}', "canary_rules.drift"),
        ("canary_rules = 3", "must be a table"),
        ('retrain_store = ""', "retrain_store"),
    ):
        p.write_text(base + bad + "\n")
        with pytest.raises(InvalidInputError, match=match):
            load_config(p)
