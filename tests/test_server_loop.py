"""The Loop view's routes (`/mlops/api/v1/loop...`) on a real `jupyter lab` and on a real
tracking server, over a store where the real watcher (loop.watch.poll) retrained, gated and
now waits for an approval: the list and the detail say what the store holds (stages, the
gate's verdict per rule, the pending approval, the signal, the lineage graph); approving
through the route writes the same approval and audit row as `mlops-jupyter approve`; bad
input is a JSON 4xx; names full of HTML come back as plain JSON strings. On the tracking
server, reading needs a read token and deciding a write token.

`prepare` is shared with tests/test_browser_loop.py."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest
from browser_helpers import running_lab
from loop_helpers import clf as _clf

import mlops_jupyter as mj
from mlops_jupyter.store import loop_state, open_store

torch = pytest.importorskip("torch")  # the watcher's retrain script builds a torch model
pytest.importorskip("jupyter_server")
pytestmark = pytest.mark.timeout(240)

API = "mlops/api/v1/"
EVIL = '<img src=x onerror="window.__mj_xss=1">'  # a run, data and rule name, a reason
EVIL_MODEL = "<svg onload=window.__mj_xss=2>"  # a model name only a foreign writer can make
RULE = "reviewed"

TRAIN = """
import os
import torch
import mlops_jupyter as mj

m = torch.nn.Linear(2, 2, bias=False)
with torch.no_grad():
    m.weight[:] = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
with mj.start_run("retrain", tags={"loop.signal": os.environ["MLOPS_JUPYTER_LOOP_SIGNAL"]}):
    mj.register_model("clf", m)
"""

RULES = f"""
from mlops_jupyter.loop import custom, not_worse

TARGET = "y"
RULES = [
    not_worse("accuracy", by=0.01),
    custom(lambda ctx: (True, {{"note": {EVIL!r}}}), {EVIL!r}),
]
"""


def prepare(store: object, tmp: Path) -> dict:
    """v1 of "clf" (trained in a run named EVIL on a data version named EVIL) in
    production; then the watcher's rule RULE (new data -> retrain -> register -> gate ->
    promote, approval = true) retrains v2, gates it and waits for an approval. Also a model
    named EVIL_MODEL, written straight into the store as an importer might."""
    from mlops_jupyter.loop.watch import poll
    from mlops_jupyter.store import registry as rs

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 2)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=2000) > 0).astype(np.int64)
    frame = pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "y": y})
    frame.write_parquet(tmp / "eval.parquet")
    frame.head(500).write_parquet(tmp / "train.parquet")
    frame.head(400).write_parquet(tmp / "train0.parquet")
    (tmp / "train.py").write_text(TRAIN)
    (tmp / "rules.py").write_text(RULES)
    cfg = tmp / "loop.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [[rule]]
        name = "{RULE}"
        on = "new_data"
        dataset = "train-data"
        model = "clf"
        retrain = ["{{python}}", "{tmp / "train.py"}"]
        do = ["retrain", "register", "gate", "promote"]
        gate_rules = "{tmp / "rules.py"}"
        gate_data = "{tmp / "eval.parquet"}"
        approval = true
        """)
    )
    mj.set_store(store)
    try:
        with mj.start_run(EVIL) as run:
            mj.data.version(str(tmp / "train0.parquet"), name=EVIL)
            v1 = mj.register_model("clf", _clf(0.5))
        mj.promote_model("clf", v1, "staging")
        mj.promote_model("clf", v1, "production")
        mj.data.version(str(tmp / "train.parquet"), name="train-data")
        states = [o["state"] for o in poll(str(cfg))]
        assert states == ["waiting"], states
        st = open_store(store)
        rs.create_version(st, EVIL_MODEL, "file", "nowhere", "0" * 64, 0, None, None, None, "x")
    finally:
        mj.set_store(None)
    return {"store": store, "run": run, "config": cfg, "candidate": 2}


@pytest.fixture(scope="module")
def loop(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("loop-view")
    mp = pytest.MonkeyPatch()
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        store: object = request.getfixturevalue("pg_server").new_database("loopview")
        mp.setenv("MLOPS_JUPYTER_ARTIFACTS", str(tmp / "artifacts"))
    else:
        store = tmp / "store.db"
    mp.setenv("MLOPS_JUPYTER_STORE", str(store))
    mp.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    try:
        data = prepare(store, tmp)
        with running_lab(tmp / "root", store, env={"MLOPS_JUPYTER_TELEMETRY": "0"}) as lab:
            yield {**data, "lab": lab, "tmp": tmp}
    finally:
        mj.set_store(None)
        mp.undo()


def test_list_and_detail_say_what_the_store_holds(loop):
    lab = loop["lab"]
    status, body = lab.api(API + "loop")
    assert status == 200, body
    models = {m["name"]: m for m in body["models"]}
    assert sorted(models) == sorted(["clf", EVIL_MODEL])
    clf = models["clf"]
    assert (clf["production"], clf["staging"], clf["latest"], clf["versions"]) == (1, [], 2, 2)
    assert clf["pending"] == 1 and clf["signals"] == {"waiting": 1}
    assert clf["last_gate"]["version"] == 2 and clf["last_gate"]["passed"] is True
    assert models[EVIL_MODEL]["pending"] == 0 and models[EVIL_MODEL]["last_gate"] is None

    status, d = lab.api(API + "loop/clf")
    assert status == 200, d
    assert [v["version"] for v in d["versions"]] == [2, 1]
    v2 = d["versions"][0]
    assert v2["stage"] == "none" and v2["approval"] is None and v2["gates"] == 1
    gate = v2["gate"]
    assert gate["passed"] is True and gate["baseline_version"] == 1 and gate["n"] == 2000
    rules = {r["rule"]: r for r in gate["results"]}
    evil = rules[f"custom({EVIL})"]
    assert evil["status"] == "pass" and evil["evidence"] == {"note": EVIL}
    nw = next(r for name, r in rules.items() if name.startswith("not_worse"))
    assert nw["status"] == "pass" and len(nw["evidence"]["interval"]) == 2
    (p,) = d["pending"]
    assert (p["version"], p["rule"], p["gate"]) == (2, RULE, gate["id"])
    (s,) = d["signals"]
    assert (s["rule"], s["state"], s["waiting_for"], s["version"]) == (
        RULE,
        "waiting",
        "approval",
        2,
    )
    assert d["decisions"] == []
    # the verdict and the lineage graph are the ones the Python API gives
    mj.set_store(loop["store"])
    try:
        stored = mj.gates("clf")[-1]
        want = mj.lineage("clf").to_dict()
    finally:
        mj.set_store(None)
    assert (stored["id"], stored["passed"]) == (gate["id"], gate["passed"])
    assert d["lineage"] == want
    labels = [n["label"] for n in d["lineage"]["nodes"]]
    assert any(EVIL in label for label in labels)  # stored text, as it is: JSON, not markup


def test_hostile_model_name_is_plain_json(loop):
    lab = loop["lab"]
    status, d = lab.api(API + "loop/" + quote(EVIL_MODEL, safe=""))
    assert status == 200, d
    assert d["name"] == EVIL_MODEL and d["lineage"]["model"] == EVIL_MODEL
    assert d["versions"][0]["gate"] is None and d["pending"] == []


def test_bad_input_is_a_json_4xx(loop):
    lab = loop["lab"]
    cases = [
        ("GET", "loop/no-such-model", None, 404),
        ("POST", "loop/no-such-model/approve", {"version": 1}, 404),
        ("POST", "loop/clf/approve", {"version": 99}, 404),
        ("POST", "loop/clf/approve", {"version": 0}, 400),
        ("POST", "loop/clf/approve", {"version": "two"}, 400),
        ("POST", "loop/clf/approve", {"version": True}, 400),
        ("POST", "loop/clf/approve", {}, 400),
        ("POST", "loop/clf/approve", [2], 400),
        ("POST", "loop/clf/approve", {"version": 2, "reason": 5}, 400),
        ("POST", "loop/clf/approve", {"version": 2, "reason": "x" * 2001}, 400),
        ("POST", "loop/clf/approve", {"version": 2, "reason": "a\x00b"}, 400),
        ("POST", "loop/clf/approve", {"version": 2, "decision": "rejected"}, 400),
        ("POST", "loop/clf/maybe", {"version": 2}, 405),
    ]
    for method, path, body, code in cases:
        status, answer = lab.api(API + path, method=method, body=body)
        assert status == code, (path, body, answer)
        assert answer["status"] == code and answer["error"], answer
    status, answer = _raw_post(lab, API + "loop/clf/approve", b"{not json")
    assert status == 400 and "JSON" in answer["error"]
    # nothing was decided by any of them
    assert loop_state.get_approval(open_store(loop["store"]), "clf", 2) is None


def _raw_post(lab, path: str, raw: bytes):
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        lab.url + path, data=raw, method="POST", headers={"Authorization": f"token {lab.token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_no_authentication_no_answer(loop):
    import urllib.error
    import urllib.request

    lab = loop["lab"]
    for method, data in (("GET", None), ("POST", b'{"version": 2}')):
        path = "loop" if method == "GET" else "loop/clf/approve"
        req = urllib.request.Request(lab.url + API + path, data=data, method=method)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 403
    assert loop_state.get_approval(open_store(loop["store"]), "clf", 2) is None


def test_approve_writes_what_the_command_line_writes(loop):
    """The route's decision is the CLI's: the approvals row, the audit line; the next poll
    of the watcher promotes the candidate."""
    from mlops_jupyter.loop.watch import poll

    lab, store = loop["lab"], open_store(loop["store"])
    status, got = lab.api(
        API + "loop/clf/approve", method="POST", body={"version": 2, "reason": EVIL}
    )
    assert status == 200, got
    assert (got["model"], got["version"], got["decision"], got["reason"]) == (
        "clf",
        2,
        "approved",
        EVIL,
    )
    from mlops_jupyter.registry import _user

    assert got["user"] == _user()  # Jupyter's anonymous token user: the server's login
    assert loop_state.get_approval(store, "clf", 2) == {
        k: got[k] for k in ("decision", "reason", "user", "time")
    }
    mj.set_store(loop["store"])
    try:
        rows = mj.audit(model="clf", action="approve")
        assert rows.height == 1
        assert (rows["version"][0], rows["reason"][0], rows["user"][0]) == (2, EVIL, _user())
        assert [o["state"] for o in poll(str(loop["config"]))] == ["done"]
        prod = mj.registry.versions("clf").filter(pl.col("stage") == "production")
        assert prod["version"].to_list() == [2]
    finally:
        mj.set_store(None)
    status, d = lab.api(API + "loop/clf")
    assert d["pending"] == [] and d["production"] == 2
    assert d["signals"][0]["state"] == "done"
    assert [(x["action"], x["version"], x["reason"]) for x in d["decisions"]] == [
        ("approve", 2, EVIL)
    ]
    # a rejection is recorded the same way (and is the newest decision)
    status, got = lab.api(API + "loop/clf/reject", method="POST", body={"version": 1})
    assert status == 200 and got["decision"] == "rejected" and got["reason"] is None
    _, d = lab.api(API + "loop/clf")
    assert [x["action"] for x in d["decisions"]] == ["reject", "approve"]


def test_tracking_server_needs_read_to_look_and_write_to_decide(loop):
    from trackserver_helpers import Server, request

    from mlops_jupyter.store import tokens

    store = open_store(loop["store"])
    reader = tokens.add(store, "loop-reader", "read")
    writer = tokens.add(store, "loop-writer", "write")
    env = {**os.environ, "MLOPS_JUPYTER_STORE": str(loop["store"])}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHON", sys.executable)
    with Server(env, loop["tmp"]) as srv:
        base = srv.url + "/mlops/api/v1/"
        status, body = request(base, "GET", "loop", reader)
        assert status == 200 and "clf" in [m["name"] for m in body["models"]]
        status, d = request(base, "GET", "loop/clf", reader)
        assert status == 200 and d["name"] == "clf" and d["lineage"]["model"] == "clf"
        assert request(base, "GET", "loop", None)[0] == 401
        status, err = request(base, "POST", "loop/clf/reject", reader, {"version": 2})
        assert status == 403 and "write" in err["error"]
        status, got = request(base, "POST", "loop/clf/reject", writer, {"version": 2})
        assert status == 200 and got["user"] == "token loop-writer", got
        status, err = request(base, "POST", "loop/clf/reject", writer, {"version": "x"})
        assert status == 400 and err["status"] == 400
        # a Jupyter server whose store is the tracking server forwards the view's routes
        remote = {"MLOPS_JUPYTER_STORE": srv.url, "MLOPS_JUPYTER_TOKEN": writer}
        with running_lab(loop["tmp"] / "root2", srv.url, env=remote) as proxied:
            status, d = proxied.api(API + "loop/clf")
            assert status == 200 and d == loop["lab"].api(API + "loop/clf")[1]
            status, got = proxied.api(
                API + "loop/clf/approve", method="POST", body={"version": 2, "reason": "via"}
            )
            assert status == 200 and got["user"] == "token loop-writer", got
            status, err = proxied.api(API + "loop/clf/approve", method="POST", body={})
            assert status == 400 and "version" in err["error"]
    rows = open_store(loop["store"]).read(
        'SELECT a.action, a."user" FROM model_audit a WHERE a.action=? ORDER BY a.id', ("reject",)
    )
    assert rows[-1] == ("reject", "token loop-writer")
    got = loop_state.get_approval(open_store(loop["store"]), "clf", 2)
    assert (got["decision"], got["reason"], got["user"]) == ("approved", "via", "token loop-writer")
