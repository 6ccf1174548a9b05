"""Live rollout changes: a real 2-worker `mlops-jupyter serve NAME` on 127.0.0.1 follows the
layout `mlops-jupyter rollout set` stores, switching between versions without a failed
request; bad rollout commands are one-line errors (exit 2)."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest
from serving_helpers import SIG, X, linear, module_store

torch = pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main  # noqa: E402
from mlops_jupyter.serving import canary as cn  # noqa: E402
from mlops_jupyter.serving.client import request  # noqa: E402
from mlops_jupyter.store import open_store, telemetry  # noqa: E402
from mlops_jupyter.store import serving_rollouts as sr  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    """Model "live": v1 (production) and v2 (alias "next") answer; v3 (logged by a run)
    cannot load."""
    root = tmp_path_factory.mktemp("live")
    mods = root / "mods"
    mods.mkdir()
    (mods / "gone_live.py").write_text("class Gone:\n    def predict(self, x):\n        return x\n")
    sys.path.insert(0, str(mods))
    import gone_live

    with module_store(root, request, "live") as (store, art):
        mj.register_model("live", linear(1), signature=SIG)
        mj.register_model("live", linear(2), signature=SIG, alias="next")
        with mj.start_run(name="train-gone") as run:
            mj.register_model("live", gone_live.Gone(), run=run)
        mj.promote_model("live", 1, "staging")
        mj.promote_model("live", 1, "production")
    (mods / "gone_live.py").unlink()
    sys.path.remove(str(mods))
    sys.modules.pop("gone_live", None)
    yield {"store": store, "art": art, "run": run}


def _cli(env, *args: str) -> int:
    try:
        return main(["--store", str(env["store"]), *args])
    finally:
        mj.set_store(None)


def _post(url: str, user: str) -> tuple[int, dict]:
    status, _, raw = request(
        url + "/predict",
        "POST",
        json.dumps({"inputs": X.tolist()}).encode(),
        {"Content-Type": "application/json", "X-User-Id": user},
    )
    return status, json.loads(raw)


class Traffic:
    """Clients sending requests without pause (distinct users), recording every answer."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.answers, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, k: int) -> None:
        i = 0
        while not self.stop.is_set():
            status, obj = _post(self.url, f"u{k}-{i}")
            self.answers.append((time.monotonic(), status, obj.get("variant"), obj))
            i += 1

    def since(self, t: float) -> list[tuple]:
        return [a for a in list(self.answers) if a[0] >= t]

    def wait_for(self, cond, timeout: float = 20) -> list[tuple]:
        """The answers after now once `cond(answers)` holds for those of the last 0.5 s."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            time.sleep(0.25)
            recent = self.since(time.monotonic() - 0.5)
            if recent and cond(recent):
                return recent
        raise AssertionError(f"not reached in {timeout} s: {self.since(time.monotonic() - 1)[-5:]}")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_running_server_switches_layout_without_failed_requests(env, capsys):
    mj.set_store(env["store"])
    try:
        # `serve NAME` starts with the stored layout (here: v2 by its alias)
        cn.set_split(open_store(env["store"]), "live", "next=100", None, "test")
        srv = mj.serve("live", workers=2, max_wait_ms=1, extra_env=env["art"])
    finally:
        mj.set_store(None)
    traffic = Traffic(srv.url)
    try:
        first = traffic.wait_for(lambda a: {v for _, _, v, _ in a} == {"next"})
        assert all(o["version"] == 2 for _, _, _, o in first)
        assert _cli(env, "rollout", "set", "live", "--split", "v1=100") == 0
        traffic.wait_for(lambda a: {v for _, _, v, _ in a} == {"v1"})
        assert _cli(env, "rollout", "set", "live", "--split", "v1=50,next=50") == 0
        traffic.wait_for(lambda a: {v for _, _, v, _ in a} == {"v1", "next"})
        # both workers follow: every worker's answers of the last half second are mixed
        time.sleep(1.5)  # each worker polls the layout about once a second
        for _ in range(6):  # a new connection each: either worker answers
            ready = srv.ready()
            assert {n: v["weight"] for n, v in ready["variants"].items()} == {"v1": 50, "next": 50}
        # a layout naming a version that cannot load is not applied: the old one serves on
        assert _cli(env, "rollout", "set", "live", "--split", "v1=50,v3=50") == 0
        refused_gen = sr.get(open_store(env["store"]), "live")["generation"]
        time.sleep(2.5)
        assert {v for _, _, v, _ in traffic.since(time.monotonic() - 1)} == {"v1", "next"}
        # each worker recorded once why it kept the old layout
        refused = sr.refusals(open_store(env["store"]), "live", refused_gen)
        assert len({r["worker"] for r in refused}) == len(refused) == 2, refused
        assert all(r["failed"][0]["name"] == "v3" and "gone_live" in r["failed"][0]["error"]
                   and r["layout"] == "v1=50,v3=50" for r in refused)  # fmt: skip
        capsys.readouterr()
        assert _cli(env, "rollout", "rollback", "live", "--reason", "done testing") == 0
        assert "note: the replaced generation" in capsys.readouterr().out
        back = traffic.wait_for(lambda a: {v for _, _, v, _ in a} == {"v1"})
        assert all(o["version"] == 1 for _, _, _, o in back)
    finally:
        traffic.close()
        srv.stop()
    statuses = {s for _, s, _, _ in traffic.answers}
    assert statuses == {200}, [a for a in traffic.answers if a[1] != 200][:3]
    assert len(traffic.answers) > 100
    assert "rollout of live not applied" in srv.log_path.read_text()
    row = sr.get(open_store(env["store"]), "live")
    assert row["state"] == "rolled back" and row["layout"]["variants"] == [["v1", 1, 10000]]
    capsys.readouterr()
    assert _cli(env, "rollout", "show", "live") == 0
    out = capsys.readouterr().out
    assert "rolled back" in out and "split v1=50,next=50 (next = v2)" in out
    assert "rollback to v1 (v1): done testing" in out
    assert f"generation {refused_gen} (v1=50,v3=50)" in out and "gone_live" in out


def test_canary_that_cannot_load_is_rolled_back(env, capsys):
    """A canary naming v3 (its code is gone) on a running 2-worker server: the workers keep
    the control and record why, the controller rolls the canary back within seconds, and
    the control answered every request throughout."""
    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "live", "v1=100", None, "test")
        srv = mj.serve("live", workers=2, max_wait_ms=1, extra_env=env["art"])
    finally:
        mj.set_store(None)
    traffic = Traffic(srv.url)
    try:
        traffic.wait_for(lambda a: {v for _, _, v, _ in a} == {"v1"})
        t0 = time.monotonic()
        assert _cli(env, "rollout", "set", "live", "--canary", "v3", "--ramp", "50,100") == 0
        gen = sr.get(s, "live")["generation"]
        while sr.get(s, "live")["state"] == "ramping" and time.monotonic() - t0 < 15:
            time.sleep(0.1)
        took = time.monotonic() - t0
        time.sleep(1.5)  # the workers follow the rollback's layout
    finally:
        traffic.close()
        srv.stop()
    row = sr.get(s, "live")
    assert row["state"] == "rolled back" and took < 8, (row, took)
    assert row["layout"]["variants"] == [["v1", 1, 10000]]
    assert {(s_, v) for _, s_, v, _ in traffic.answers} == {(200, "v1")}
    assert len(traffic.answers) > 50
    assert "canary v3 rolled back at step 1/2 (50 %): canary load: worker " in row["reason"]
    assert "could not load v3 (v3)" in row["reason"] and "gone_live" in row["reason"]
    assert row["reason"] in _cli_history(env)
    assert sr.refusals(s, "live", gen)  # the worker's own record
    # the rollback is an event on the run that logged v3, with the load error
    events = telemetry.list_events(s, None, ("rollback",))
    assert any(e[1] == env["run"].id and "gone_live" in e[5] for e in events), events
    capsys.readouterr()
    assert _cli(env, "rollout", "show", "live") == 0
    out = capsys.readouterr().out
    assert "rolled back canary v3" in out and f"generation {gen} (" in out


def test_server_started_with_a_canary_that_cannot_load_rolls_it_back(env):
    """A worker started with a stored canary layout whose canary does not load records it
    like a refused layout: the controller rolls the canary back."""
    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "live", "v1=100", None, "test")
        cn.start_canary(s, "live", "v3", "50,100", 3600, user="test")
        gen = sr.get(s, "live")["generation"]
        srv = mj.serve("live", max_wait_ms=1, extra_env=env["art"])
    finally:
        mj.set_store(None)
    with srv:
        t0 = time.monotonic()
        while sr.get(s, "live")["state"] == "ramping" and time.monotonic() - t0 < 10:
            status, obj = _post(srv.url, "u")
            assert status == 200 and obj["variant"] == "v1", obj
            time.sleep(0.05)
    row = sr.get(s, "live")
    assert row["state"] == "rolled back", row
    assert "canary load: worker " in row["reason"] and "could not load v3" in row["reason"]
    (ref,) = sr.refusals(s, "live", gen)
    assert ref["layout"] == "v3=50,v1=50" and ref["failed"][0]["version"] == 3


def _cli_history(env) -> list[str]:
    mj.set_store(env["store"])
    try:
        h = mj.registry.history("live")
    finally:
        mj.set_store(None)
    return h.filter(h["action"] == "rollout")["reason"].to_list()


def test_what_serve_follows(env):
    """A bare NAME follows the stored layout; a pinned version, stage or --variant not."""
    from argparse import Namespace

    from mlops_jupyter.serving.live import serve_plan

    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "live", "next=100", None, "test")
        gen = sr.get(s, "live")["generation"]
        args = {"split": None, "shadow": None, "variant": None}
        plan, g = serve_plan(s, Namespace(model="live", **args))
        assert g == gen and plan.variants == [("next", 2, 10000)] and "torch" in plan.flavors
        for spec in ("live:1", "live@production"):
            plan, g = serve_plan(s, Namespace(model=spec, **args))
            assert g is None and plan.variants == [("v1", 1, 10000)]
        plan, g = serve_plan(s, Namespace(model="live", **{**args, "variant": "a"}))
        assert g is None and plan.variants == [("a", 1, 10000)]
        plan, g = serve_plan(s, Namespace(model="live", **{**args, "split": "v1=50,v2=50"}))
        assert g == 0  # stored when the server starts
    finally:
        mj.set_store(None)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["set", "live", "--canary", "v9"], "'v9'"),
        (["set", "live", "--canary", "next", "--ramp", "5,x,100"], "percentage"),
        (["set", "live", "--canary", "next", "--ramp", "50,25,100"], "must increase"),
        (["set", "live", "--canary", "next", "--ramp", "5,50"], "end at 100"),
        (["set", "live", "--split", "v1=60,v2=30"], "add up to 100"),
        (["set", "live", "--split", "v1=50,v2=50", "--canary", "v2"], "not both"),
        (["set", "live"], "give --split, --canary or --shadow"),
        (["set", "nosuch", "--split", "v1=100"], "nosuch"),
        (["promote", "live"], "no canary ramping"),
        (["show", "nosuch"], "nosuch"),
    ],
)
def test_bad_rollout_commands_exit_2(env, capsys, args, msg):
    capsys.readouterr()
    assert _cli(env, "rollout", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and msg in err, err


def test_canary_equal_to_control_is_refused(env, capsys):
    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "live", "v1=100", None, "t")
    finally:
        mj.set_store(None)
    before = sr.get(s, "live")["generation"]
    capsys.readouterr()
    for canary in ("v1", "production"):
        assert _cli(env, "rollout", "set", "live", "--canary", canary) == 2
        assert "is the control itself" in capsys.readouterr().err
    assert sr.get(s, "live")["generation"] == before  # nothing was written


def test_every_must_be_an_interval(env, capsys):
    with pytest.raises(SystemExit) as e:
        main(["rollout", "set", "live", "--canary", "next", "--every", "soon"])
    assert e.value.code == 2
    assert "interval must look like" in capsys.readouterr().err


def test_shadow_alone_keeps_the_split_and_a_ramping_canary(env):
    s = open_store(env["store"])
    mj.set_store(env["store"])
    try:
        cn.set_split(s, "live", "v1=100", None, "test")
        cn.start_canary(s, "live", "next", "10,100", 3600, user="test")
    finally:
        mj.set_store(None)
    before = sr.get(s, "live")
    assert _cli(env, "rollout", "set", "live", "--shadow", "v3") == 0
    row = sr.get(s, "live")
    assert row["state"] == "ramping" and row["layout"]["canary"] == before["layout"]["canary"]
    assert row["layout"]["variants"] == [["next", 2, 1000], ["v1", 1, 9000]]
    assert row["layout"]["shadow"] == ["v3", 3]
    assert _cli(env, "rollout", "rollback", "live") == 0
    row = sr.get(s, "live")
    assert row["state"] == "rolled back" and row["layout"]["variants"] == [["v1", 1, 10000]]
    assert row["layout"]["shadow"] == ["v3", 3]  # the shadow was not the canary: it stays
    assert row["reason"] == "rollback to v1 (v1)"


def test_watch_interval_must_be_positive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["rollout", "watch", "live", "--interval", "0"])
    assert e.value.code == 2 and "must be in (0, 86400]" in capsys.readouterr().err
