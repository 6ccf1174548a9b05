"""The closed loop through a real `mlops-jupyter server` process (real tokens): a gate run in
this process stores its verdict on the server; the promotion policy is applied by the server
(a direct request cannot skip it); the model card, the lineage graph and the audit frame
over the server equal those read from the server's store directly; approvals are audited
under the token's name; a read token cannot approve, store a gate or write card fields; an
admin token is needed for policies; the watcher's claims are compare-and-set on the
server (one of eight racing claims wins). One server for the module (SQLite, or PostgreSQL in the
CI's suites)."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest
from loop_helpers import clf as _clf
from trackserver_helpers import RemoteServer, module_remote, request, use_remote

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.errors import StoreError
from mlops_jupyter.loop import not_worse, threshold
from mlops_jupyter.loop.approve import approval
from mlops_jupyter.registry import ModelNotFoundError, StageTransitionError
from mlops_jupyter.store import gates as gstore

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(120)

RNG = np.random.default_rng(11)
N = 2_000
X = RNG.normal(size=(N, 2)).astype(np.float32)
Y = (X[:, 0] + 0.3 * RNG.normal(size=N) > 0).astype(np.int64)


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, request):
    yield from module_remote(tmp_path_factory, request, "remote-loop")


@pytest.fixture
def rs(remote_server, monkeypatch, tmp_path) -> RemoteServer:
    return use_remote(monkeypatch, remote_server, tmp_path)


def _as(monkeypatch, tok: str) -> None:
    monkeypatch.setenv("MLOPS_JUPYTER_TOKEN", tok)


def _direct(rs: RemoteServer, monkeypatch) -> None:
    """From here on this process opens the server's store itself."""
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(rs.loc))
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", str(rs.artifacts))
    monkeypatch.delenv("MLOPS_JUPYTER_TOKEN")


def test_gate_policy_card_lineage_audit_over_the_server(rs, monkeypatch, capsys):
    with mj.start_run("train-v1", experiment="remote-loop"):
        mj.log(accuracy=0.8)
        v1 = mj.register_model("clf", _clf(0.8))
    v2 = mj.register_model("clf", _clf(0.0))  # better
    v3 = mj.register_model("clf", _clf(3.0))  # worse
    mj.promote_model("clf", v1, "staging")
    _as(monkeypatch, rs.atok)
    mj.promote_model("clf", v1, "production", reason="first release")
    # policies need an admin token
    assert mj.set_model_policy("clf", require_gate=True) == {"require_gate": True}
    _as(monkeypatch, rs.wtok)
    with pytest.raises(StoreError, match="may not set the policy of 'clf'.*needs admin") as e:
        mj.set_model_policy("clf", require_gate=False)
    assert rs.wtok not in str(e.value)
    assert mj.loop.model_policy("clf") == {"require_gate": True}
    # gates: evaluated here, stored by the server (what its store shows)
    rules = [not_worse("accuracy", by=0.01)]
    good = mj.gate("clf", v2, (X, Y), rules)
    bad = mj.gate("clf", v3, (X, Y), rules + [threshold("accuracy", ">=", 0.5)], notify=False)
    assert good.passed and not bad.passed and good.baseline == v1
    stored = gstore.list_gates(rs.store, "clf")
    assert [(g["id"], g["version"], g["passed"]) for g in stored] == [
        (good.id, v2, True),
        (bad.id, v3, False),
    ]
    assert stored[0]["user"].endswith("(token writer)")
    assert stored[1]["report"]["results"][0]["evidence"]["n"] == N
    assert mj.gates("clf") == stored
    assert mj.gates("clf", v3) == stored[1:]
    from mlops_jupyter.remote import loop as rloop

    assert rloop.latest_gate(rs.srv.url, "clf", v2, v1)["id"] == good.id
    assert rloop.latest_gate(rs.srv.url, "clf", v2, None) is None
    with pytest.raises(ModelNotFoundError, match="no registered model named 'nope'"):
        mj.gates("nope")
    # the policy is the server's: the client's call and a direct request are both refused
    mj.promote_model("clf", v3, "staging")
    _as(monkeypatch, rs.atok)
    with pytest.raises(StageTransitionError, match=r"newest gate .* failed: not_worse"):
        mj.promote_model("clf", v3, "production")
    st, out = request(
        rs.srv.url,
        "POST",
        f"/api/v1/models/clf/versions/{v3}/stage",
        rs.atok,
        {"stage": "production"},
    )
    assert st == 409 and "requires a passing gate" in out["message"]
    mj.promote_model("clf", v2, "staging")
    mj.promote_model("clf", v2, "production", reason="gate passed")
    _as(monkeypatch, rs.wtok)
    # card fields, card, lineage, audit over the server
    fields = mj.set_model_card_fields("clf", intended_use="demo", owners=["ana"], ticket="ML-1")
    assert fields == {"intended_use": "demo", "owners": ["ana"], "ticket": "ML-1"}
    assert mj.set_model_card_fields("clf", ticket=None) == {
        "intended_use": "demo",
        "owners": ["ana"],
    }
    card = mj.model_card("clf")
    assert card.version == v2 and card.data["fields"]["owners"] == ["ana"]
    assert [g["id"] for g in card.data["gates"]] == [good.id]
    assert "## Intended use" in card.markdown() or "demo" in card.markdown()
    card_v1 = mj.model_card("clf", v1).to_dict()
    assert card_v1["run"]["name"] == "train-v1"
    graph = mj.lineage("clf")
    assert f"model:clf@v{v2}" in graph.nodes and any(
        n["kind"] == "run" for n in graph.nodes.values()
    )
    assert mj.lineage("clf", version=v1).to_dict()["nodes"][0]["version"] == v1
    aud = mj.audit("clf")
    promo = aud.filter((pl.col("action") == "transition") & (pl.col("to_stage") == "production"))
    assert promo["version"].to_list() == [v1, v2] and promo["gate_ids"].to_list() == [[], [good.id]]
    assert mj.audit("clf", action="gate")["gate_ids"].to_list() == [[good.id], [bad.id]]
    assert cli_main(["card", "clf", "--format", "json"]) == 0
    assert '"intended_use": "demo"' in capsys.readouterr().out
    assert cli_main(["audit", "--model", "clf", "--action", "policy"]) == 0
    assert "(token releaser)" in capsys.readouterr().out
    remote = (card.to_dict(), card_v1, graph.to_dict(), aud)
    # the server's store opened directly: the same card, graph and audit frame
    _direct(rs, monkeypatch)
    assert mj.model_card("clf").to_dict() == remote[0]
    assert mj.model_card("clf", v1).to_dict() == remote[1]
    assert mj.lineage("clf").to_dict() == remote[2]
    assert mj.audit("clf").equals(remote[3])
    assert mj.gates("clf") == stored


def test_approvals_are_audited_under_the_token_and_scopes_hold(rs, monkeypatch, capsys):
    v = mj.register_model("appr", _clf(0.0))
    before = len(gstore.list_gates(rs.store))
    # a read token: may read, may not approve, store a gate or write card fields
    _as(monkeypatch, rs.rtok)
    assert approval("appr", v) is None
    with pytest.raises(StoreError, match="may not approve appr v1.*need") as e:
        mj.approve("appr", v)
    assert rs.rtok not in str(e.value)
    with pytest.raises(StoreError, match="may not store the gate of appr v1"):
        mj.gate("appr", v, (X, Y), [threshold("accuracy", ">=", 0.5)], notify=False)
    with pytest.raises(StoreError, match="may not write the card fields"):
        mj.set_model_card_fields("appr", owners=["eve"])
    assert len(gstore.list_gates(rs.store)) == before
    assert rs.rows("SELECT count(*) FROM loop_approvals") == [(0,)]
    # the write token approves (the CLI too); the audit log names the token
    _as(monkeypatch, rs.wtok)
    d = mj.approve("appr", v, reject=True, reason="not yet")
    assert d["decision"] == "rejected" and d["user"].endswith("(token writer)")
    assert cli_main(["approve", "appr", "--version", str(v), "--reason", "ok now"]) == 0
    assert "approved" in capsys.readouterr().out
    assert approval("appr", v)["reason"] == "ok now"
    log = mj.audit("appr", action=["approve", "reject"])
    assert log["action"].to_list() == ["reject", "approve"]
    assert all(u.endswith("(token writer)") for u in log["user"].to_list())
    assert log["reason"].to_list() == ["not yet", "ok now"]
    with pytest.raises(ModelNotFoundError):
        mj.approve("appr", 9)
    # reads answer as on a local store: nothing recorded, nothing to show
    assert approval("appr", 9) is None and mj.loop.model_policy("nope") == {}


def test_bad_verdicts_are_refused_and_nothing_is_stored(rs):
    mj.register_model("raw", _clf(0.0))
    before = len(gstore.list_gates(rs.store))
    path = "/api/v1/models/raw/versions/1/gates"
    ok = {"rule": "r", "status": "pass"}
    bad_bodies = [
        {"summary": "x"},
        {"report": {"results": [], "passed": False, "n": 1}, "summary": "x"},
        {
            "report": {"results": [{"rule": "r", "status": "fail"}], "passed": True, "n": 1},
            "summary": "x",
        },
        {"report": {"results": [ok], "passed": True, "n": -1}, "summary": "x"},
        {
            "report": {"results": [{"rule": "r", "status": "maybe"}], "passed": False, "n": 1},
            "summary": "x",
        },
        {"report": {"results": [ok], "passed": True, "n": 1, "baseline": 0}, "summary": "x"},
        {"report": {"results": [ok], "passed": True, "n": 1}},
    ]
    for body in bad_bodies:
        st, out = request(rs.srv.url, "POST", path, rs.wtok, body)
        assert st == 400 and out["error_code"] == "INVALID_PARAMETER_VALUE", (body, out)
    st, _ = request(
        rs.srv.url,
        "POST",
        "/api/v1/models/raw/versions/7/gates",
        rs.wtok,
        {"report": {"results": [ok], "passed": True, "n": 1}, "summary": "x"},
    )
    assert st == 404
    assert len(gstore.list_gates(rs.store)) == before
    st, out = request(rs.srv.url, "PUT", "/api/v1/models/raw/policy", rs.rtok, {})
    assert st == 403
    st, out = request(rs.srv.url, "GET", "/api/v1/models/raw/policy", rs.rtok)
    assert (st, out) == (200, {"policy": {}})
    assert os.environ["MLOPS_JUPYTER_STORE"] == rs.srv.url


def test_cli_gate_gates_lineage_over_the_server(rs, tmp_path, capsys):
    v = mj.register_model("cli-clf", _clf(0.0))
    data = tmp_path / "eval.npz"
    np.savez(data, X=X, y=Y)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ntype = "threshold"\nmetric = "accuracy"\nvalue = 0.8\n')
    args = ["gate", "cli-clf", "--candidate", str(v), "--data", str(data), "--rules", str(rules)]
    assert cli_main([*args, "--json"]) == 0
    assert '"passed": true' in capsys.readouterr().out
    rules.write_text('[[rule]]\ntype = "threshold"\nmetric = "accuracy"\nvalue = 0.99\n')
    assert cli_main(args) == 1
    capsys.readouterr()
    assert cli_main(["gates", "cli-clf", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [g["passed"] for g in rows] == [True, False]
    assert [g["passed"] for g in gstore.list_gates(rs.store, "cli-clf")] == [True, False]
    assert cli_main(["lineage", "cli-clf", "--format", "svg"]) == 0
    assert capsys.readouterr().out.startswith("<svg")
    # evaluation slices travel with the verdict; the card shows them
    grp = np.where(X[:, 1] > 0, "a", "b")
    df = pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "grp": grp, "y": Y})
    rule = [threshold("accuracy", ">=", 0.8)]
    r = mj.gate("cli-clf", v, df, rule, features=["x0", "x1"], slices=["grp"], notify=False)
    table = gstore.list_gates(rs.store, "cli-clf")[-1]["report"]["slices"]
    assert table["slices"] == ["grp"] and table["rows"] == json.loads(json.dumps(r.slices["rows"]))
    assert "grp=a" in mj.model_card("cli-clf").markdown()


def test_watcher_claims_are_compare_and_set_on_the_server(rs, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from mlops_jupyter.remote import loop as rloop
    from mlops_jupyter.store import loop_state

    url = rs.srv.url

    def race(owner: str) -> bool:
        body = {"rule": "r1", "signal": "s-race", "detail": {"o": owner}, "owner": owner}
        st, out = request(url, "POST", "/api/v1/loop/signals", rs.wtok, body)
        assert st == 200, out
        return out["claimed"]

    with ThreadPoolExecutor(8) as ex:
        won = list(ex.map(race, [f"w{i}" for i in range(8)]))
    assert won.count(True) == 1
    held = [s for s in loop_state.signals(rs.store, "r1") if s["signal"] == "s-race"]
    assert held[0]["owner"] == f"w{won.index(True)}"
    # the client functions: claim once, wait, resume once, finish
    assert rloop.claim(url, "r1", "s1", {"step": 0, "x": np.float64(1.5)}, "host:1")
    assert rloop.claim(url, "r1", "s1", {"step": 0}, "host:1")  # its own claim, sent again
    assert not rloop.claim(url, "r1", "s1", {"step": 0}, "host:2")
    rloop.update(url, "r1", "s1", "waiting", {"step": 1, "x": 1.5})
    assert [s["state"] for s in rloop.signals(url, "r1", "waiting")] == ["waiting"]
    assert rloop.resume(url, "r1", "s1", "host:2") == {"step": 1, "x": 1.5}
    assert rloop.resume(url, "r1", "s1", "host:3") is None
    rloop.update(url, "r1", "s1", "done", {"step": 2})
    assert loop_state.signals(rs.store, "r1", "done")[0]["owner"] == "host:2"
    assert rloop.drift_alerts(url, "nothing-served") == []
    st, out = request(
        url, "PUT", "/api/v1/loop/signals/state", rs.wtok,
        {"rule": "r1", "signal": "nope", "state": "done"},
    )  # fmt: skip
    assert st == 404
    _as(monkeypatch, rs.rtok)
    with pytest.raises(StoreError, match="may not claim signal"):
        rloop.claim(url, "r1", "s2", {}, "host:1")
    assert rloop.signals(url, "r1", "done")[0]["signal"] == "s1"  # reading is allowed


def _gate_body(key: object) -> dict:
    ok = {"rule": "r", "status": "pass"}
    return {"report": {"results": [ok], "passed": True, "n": 1}, "summary": "r ok", "key": key}


def test_gate_verdict_sent_again_with_its_key_is_stored_once(rs):
    v = mj.register_model("idem", _clf(0.0))
    path = f"/api/v1/models/idem/versions/{v}/gates"
    # the same request twice (a retry after a lost answer): one verdict, one audit line
    first = request(rs.srv.url, "POST", path, rs.wtok, _gate_body("k-1"))
    again = request(rs.srv.url, "POST", path, rs.wtok, _gate_body("k-1"))
    assert first[0] == 200 and again == first
    assert [g["id"] for g in gstore.list_gates(rs.store, "idem")] == [first[1]["id"]]
    assert len(mj.audit("idem", action="gate")) == 1
    # another key is another verdict; so is a request without one
    other = request(rs.srv.url, "POST", path, rs.wtok, _gate_body("k-2"))
    plain = {k: x for k, x in _gate_body(None).items() if k != "key"}
    plain_ids = [request(rs.srv.url, "POST", path, rs.wtok, plain)[1]["id"] for _ in range(2)]
    ids = [g["id"] for g in gstore.list_gates(rs.store, "idem")]
    assert ids == [first[1]["id"], other[1]["id"], *plain_ids] and len(set(ids)) == 4
    assert len(mj.audit("idem", action="gate")) == 4
    # a key that is not a short string is refused, nothing stored
    for bad in ("", "k" * 65, 7, "k\x00"):
        st, out = request(rs.srv.url, "POST", path, rs.wtok, _gate_body(bad))
        assert st == 400 and "key" in out["message"], (bad, out)
    assert len(gstore.list_gates(rs.store, "idem")) == 4


def test_save_gate_retries_with_one_key_when_answers_are_lost(rs):
    from lossy_proxy import LossyProxy

    from mlops_jupyter.remote import loop as rloop

    v = mj.register_model("idem-retry", _clf(0.0))
    report = mj.gate("idem-retry", v, (X, Y), [threshold("accuracy", ">=", 0.5)], notify=False)
    # two connections closed after the server stored the verdict, before its answer: the
    # client's fresh connection, then its retry, send the same key; the third try answers
    with LossyProxy(rs.srv.url, drop=2) as proxy:
        gid = rloop.save_gate(proxy.url, report)
    sent = [r for r in proxy.requests() if r["path"].endswith("/gates")]
    assert len(sent) == 3
    keys = {r["body"]["key"] for r in sent}
    assert len(keys) == 1 and all(keys)
    stored = gstore.list_gates(rs.store, "idem-retry")
    assert [g["id"] for g in stored] == [report.id, gid] and gid != report.id
    assert stored[1]["report"]["results"] == stored[0]["report"]["results"]


def test_resume_sent_again_with_its_key_resumes_once(rs):
    from lossy_proxy import LossyProxy

    from mlops_jupyter.remote import loop as rloop
    from mlops_jupyter.remote import loop_watch as lw
    from mlops_jupyter.remote.registry import _store
    from mlops_jupyter.store import loop_state

    url, path = rs.srv.url, "/api/v1/loop/signals/resume"

    def row() -> dict:
        return next(s for s in loop_state.signals(rs.store, "r-idem") if s["signal"] == "s1")

    def resume(owner: str, key: str) -> tuple[int, dict]:
        body = {"rule": "r-idem", "signal": "s1", "owner": owner, "key": key}
        return request(url, "POST", path, rs.wtok, body)

    assert rloop.claim(url, "r-idem", "s1", {"step": 0}, "host:1")
    rloop.update(url, "r-idem", "s1", "waiting", {"step": 1})
    first = resume("host:2", "k-1")
    assert first == (200, {"detail": {"step": 1}})
    moved = row()
    assert (moved["state"], moved["owner"]) == ("running", "host:2")
    # sent again (its answer was lost): the same answer, nothing changed
    assert resume("host:2", "k-1") == first
    assert row() == moved
    # another key is another compare-and-set: the signal is not waiting any more
    assert resume("host:3", "k-2") == (200, {"detail": None})
    assert row() == moved
    # waiting again: the old key never resumes twice, a new one does
    rloop.update(url, "r-idem", "s1", "waiting", {"step": 2})
    assert resume("host:2", "k-1") == (200, {"detail": None})
    assert row()["state"] == "waiting"
    assert resume("host:4", "k-3") == (200, {"detail": {"step": 2}})
    assert resume("host:4", "k-3") == (200, {"detail": {"step": 2}})
    # the client: its answers lost twice, it sends one key three times and gets the detail
    rloop.update(url, "r-idem", "s1", "waiting", {"step": 3})
    with LossyProxy(url, drop=2) as proxy:
        assert rloop.resume(proxy.url, "r-idem", "s1", "host:5") == {"step": 3}
    sent = [r["body"] for r in proxy.requests() if r["path"] == path]
    assert len(sent) == 3 and len({b["key"] for b in sent}) == 1
    assert (row()["state"], row()["owner"]) == ("running", "host:5")
    # a take-back (of a dead watcher's signal) likewise
    with LossyProxy(url, drop=2) as proxy:
        got = lw.take_back(_store(proxy.url), "r-idem", "s1", "host:5", "host:6")
    assert got == {"step": 3}
    sent = [r["body"] for r in proxy.requests() if r["path"].endswith("/take-back")]
    assert len(sent) == 3 and len({b["key"] for b in sent}) == 1
    assert (row()["state"], row()["owner"]) == ("running", "host:6")
