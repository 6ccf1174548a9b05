"""Serving several versions at once: real `mlops-jupyter serve --split/--shadow` processes on
127.0.0.1 over a real SQLite store, with two torch versions of one model that answer
differently (and a third that cannot load)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serving_helpers import SIG, X, linear, wait_logged

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.serving.client import request  # noqa: E402
from mlops_jupyter.serving.rollout import Split  # noqa: E402
from mlops_jupyter.store import open_store  # noqa: E402
from mlops_jupyter.store import serving as sstore  # noqa: E402


def _want(m: torch.nn.Module) -> np.ndarray:
    with torch.inference_mode():
        return m(torch.from_numpy(X)).numpy()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Model "ab": v1 and v2 (alias "challenger") answer differently; v3 cannot load."""
    root = tmp_path_factory.mktemp("split")
    store = root / "store.db"
    mods = root / "mods"
    mods.mkdir()
    (mods / "gone_ab.py").write_text("class Gone:\n    def predict(self, x):\n        return x\n")
    sys.path.insert(0, str(mods))
    import gone_ab

    m1, m2 = linear(1), linear(2)
    mj.set_store(store)
    mj.register_model("ab", m1, signature=SIG)
    mj.register_model("ab", m2, signature=SIG, alias="challenger")
    mj.register_model("ab", gone_ab.Gone())  # v3: its class is gone below
    m4 = torch.nn.Linear(3, 2).eval()  # v4: another input signature
    mj.register_model("ab", m4, signature={"x": {"shape": [3], "dtype": "float32"}})
    mj.set_store(None)
    (mods / "gone_ab.py").unlink()
    sys.path.remove(str(mods))
    sys.modules.pop("gone_ab", None)
    yield {"store": store, "want": {1: _want(m1), 2: _want(m2)}, "m4": m4}


@pytest.fixture(scope="module")
def split_server(env):
    mj.set_store(env["store"])
    srv = mj.serve("ab", split="v1=70,v2=30", workers=2, max_wait_ms=2)
    mj.set_store(None)
    yield srv
    srv.stop()


def _post(url: str, user: str | None = None, rid: str | None = None, x=X, ok: bool = True) -> dict:
    h = {"Content-Type": "application/json"}
    if user is not None:
        h["X-User-Id"] = user
    if rid is not None:
        h["X-Request-Id"] = rid
    status, _, raw = request(
        url + "/predict", "POST", json.dumps({"inputs": x.tolist()}).encode(), h
    )
    obj = json.loads(raw)
    if ok:
        assert status == 200, obj
    obj["_status"] = status
    return obj


def test_split_is_sticky_weighted_and_answers_with_each_version(env, split_server):
    users = [f"user-{i}" for i in range(400)]
    again = users[:60] * 3  # repeated users, on new connections: both workers answer them
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda u: _post(split_server.url, u, f"s1-{u}"), users))
        later = list(
            pool.map(lambda k: _post(split_server.url, again[k], f"s2-{k}"), range(len(again)))
        )
    seen = {u: o["variant"] for u, o in zip(users, first)}
    split = Split([("v1", 7000), ("v2", 3000)])
    for u, o in zip(users, first):
        assert o["variant"] == f"v{o['version']}" and o["variant"] == split.assign(u, "ab"), (u, o)
        np.testing.assert_allclose(o["predictions"], env["want"][o["version"]], rtol=1e-6)
    for k, o in enumerate(later):
        assert o["variant"] == seen[again[k]]
    share = sum(v == "v2" for v in seen.values()) / len(users)
    se = (0.3 * 0.7 / len(users)) ** 0.5
    assert abs(share - 0.3) <= 4 * se, share
    # the log: one row per request with its variant and version; both workers served
    rows = wait_logged(
        env["store"], "ab", lambda r: r["request_id"].startswith(("s1-", "s2-")), 580
    )
    assert len(rows) == 580
    assert all(r["variant"] == f"v{r['version']}" and r["status"] == 200 for r in rows)
    by_user = {r["request_id"][3:]: r["variant"] for r in rows if r["request_id"][:3] == "s1-"}
    assert by_user == seen
    assert len({r["worker"] for r in rows}) == 2
    # without a user id the split is random per request
    anon = {_post(split_server.url)["variant"] for _ in range(40)}
    assert anon == {"v1", "v2"}


def test_ready_lists_variants_and_audit_has_rollout(env, split_server):
    ready = split_server.ready()
    assert ready["variant"] == "v1" and ready["version"] == 1  # the control: largest weight
    assert {n: (v["version"], v["weight"], v["ready"]) for n, v in ready["variants"].items()} == {
        "v1": (1, 70.0, True),
        "v2": (2, 30.0, True),
    }
    mj.set_store(env["store"])
    try:
        h = mj.registry.history("ab")
    finally:
        mj.set_store(None)
    reasons = h.filter(h["action"] == "rollout")["reason"].to_list()
    assert "split v1=70,v2=30" in reasons


def test_feedback_and_ab_report_show_both_variants(env, split_server):
    rids: dict[str, list[str]] = {"v1": [], "v2": []}
    for i in range(60):
        o = _post(split_server.url, f"fb-user-{i}", f"fb-{i}")
        rids[o["variant"]].append(o["request_id"])
    assert rids["v1"] and rids["v2"]
    for variant, ids in rids.items():
        for k, rid in enumerate(ids):
            split_server.feedback(rid, int(k % (2 if variant == "v1" else 3) == 0))
    wait_logged(env["store"], "ab", lambda r: r["request_id"].startswith("fb-"), 60)
    mj.set_store(env["store"])
    try:
        rep = mj.ab_report("ab", control="v1", since=time.time() - 600)
    finally:
        mj.set_store(None)
    assert rep.control == "v1" and rep.metric == "binary"
    v2 = rep["v2"]
    assert v2.n >= len(rids["v2"]) and v2.n_control >= len(rids["v1"])


def test_shadow_runs_after_the_answer_and_failed_variant_falls_back(env):
    """v1=50,v3=50 with v3 unloadable: v3's users are answered by v1 (the control) and
    logged as v1; every request also runs on the shadow (v2 by its alias), logged only."""
    mj.set_store(env["store"])
    try:
        with mj.serve("ab", split="v1=50,v3=50", shadow="challenger", trusted=True) as srv:
            ready = srv.ready()
            assert ready["variants"]["v3"]["ready"] is False
            assert "gone_ab" in ready["errors"]["v3"]
            assert ready["shadow"]["shadow:challenger"]["version"] == 2
            outs = [_post(srv.url, f"sh-user-{i}", f"sh-{i}") for i in range(12)]
            assert all(o["variant"] == "v1" and o["version"] == 1 for o in outs)
            for o in outs:
                np.testing.assert_allclose(o["predictions"], env["want"][1], rtol=1e-6)
        # stopped at once: the shadow requests under way finish and are logged first
        rows = wait_logged(
            env["store"], "ab", lambda r: r["request_id"].startswith("sh-"), 24, timeout=1
        )
        h = mj.registry.history("ab")
    finally:
        mj.set_store(None)
    main = [r for r in rows if r["variant"] == "v1"]
    shadow = [r for r in rows if r["variant"] == "shadow:challenger"]
    assert len(main) == 12 and len(shadow) == 12
    assert {r["request_id"] for r in main} == {r["request_id"] for r in shadow}
    assert all(r["version"] == 2 and r["status"] == 200 for r in shadow)
    np.testing.assert_allclose(json.loads(shadow[0]["outputs"]), env["want"][2], rtol=1e-6)
    assert all(r["latency_ms"] > 0 for r in shadow)
    # the shadow never answered anyone: the A/B outcomes leave it out
    assert "shadow:challenger" not in sstore.outcomes(open_store(env["store"]), "ab")
    reasons = h.filter(h["action"] == "rollout")["reason"].to_list()
    assert "split v1=50,v3=50 shadow challenger (challenger = v2)" in reasons


def test_each_variant_checks_its_own_signature(env):
    """v1 takes 4 features, v4 takes 3: a request is checked against the signature of the
    variant its user is routed to."""
    split = Split([("v1", 5000), ("v4", 5000)])
    users = [f"sig-user-{i}" for i in range(8)]
    x3 = X[:, :3].copy()
    mj.set_store(env["store"])
    try:
        srv = mj.serve("ab", split="v1=50,v4=50")
    finally:
        mj.set_store(None)
    with srv:
        for u in users:
            want = split.assign(u, "ab")
            o4 = _post(srv.url, u, x=X, ok=False)
            o3 = _post(srv.url, u, x=x3, ok=False)
            good, bad = (o4, o3) if want == "v1" else (o3, o4)
            assert good["_status"] == 200 and good["variant"] == want, good
            assert bad["_status"] == 422, bad
            n = 4 if want == "v1" else 3
            assert f"expected [{n}]" in bad["error"] and bad["signature"]["fields"][0]["shape"] == [
                n
            ]
            if want == "v4":
                with torch.inference_mode():
                    expect = env["m4"](torch.from_numpy(x3)).numpy()
                np.testing.assert_allclose(good["predictions"], expect, rtol=1e-6)
        assert {split.assign(u, "ab") for u in users} == {"v1", "v4"}


@pytest.mark.parametrize(
    "args, msg",
    [
        (["ab", "--split", "v1=50,v9=50"], "'v9'"),
        (["ab", "--split", "v1=50,nosuchalias=50"], "nosuchalias"),
        (["ab", "--split", "v1=60,v2=30"], "add up to 100"),
        (["ab:1", "--split", "v1=50,v2=50"], "NAME only"),
        (["ab:1", "--shadow", "v9"], "'v9'"),
    ],
)
def test_bad_split_fails_at_start_exit_2(env, args, msg):
    p = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", "serve", *args, "--port", "0"],
        env={**os.environ, "MLOPS_JUPYTER_STORE": str(env["store"])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "error:" in p.stderr and msg in p.stderr and "Traceback" not in p.stderr
