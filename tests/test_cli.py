"""The `mlops-jupyter` command, run as a real subprocess against a real store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mlops_jupyter as mj


def cli(env, *args, check=True):
    out = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def two_runs(tmp_path):
    art = tmp_path / "report.txt"
    art.write_text("ok")
    with mj.start_run("first", experiment="cli", params={"lr": 0.1}, tags={"owner": "me"}) as a:
        for i in range(5):
            mj.log(step=i, loss=5.0 - i)
        mj.log_artifact(art)
    with mj.start_run("second", experiment="cli", params={"lr": 0.2}) as b:
        mj.log(loss=float("nan"))
    return a, b


def test_runs_table_and_json(child_env, two_runs):
    a, b = two_runs
    out = cli(child_env, "runs").stdout
    assert a.id in out and b.id in out and "first" in out and "loss" in out
    data = json.loads(cli(child_env, "runs", "--json").stdout)  # strict JSON (NaN -> null)
    assert {d["name"] for d in data} == {"first", "second"}
    first = next(d for d in data if d["name"] == "first")
    assert first["params.lr"] == 0.1 and first["metrics.loss.last"] == 1.0
    assert next(d for d in data if d["name"] == "second")["metrics.loss.last"] is None
    assert cli(child_env, "runs", "--experiment", "none").stdout.count("\n") >= 2


def test_show(child_env, two_runs):
    a, _ = two_runs
    out = cli(child_env, "show", a.id[:6]).stdout
    assert "first" in out and "lr = 0.1" in out and "owner = me" in out
    assert "report.txt" in out and "loss" in out
    d = json.loads(cli(child_env, "show", "first", "--json").stdout)
    assert d["params"] == {"lr": 0.1} and d["metrics"][0]["count"] == 5


def test_metrics_csv_and_json(child_env, two_runs):
    a, _ = two_runs
    lines = cli(child_env, "metrics", a.id, "loss").stdout.strip().splitlines()
    assert lines[0] == "step,ts,value" and len(lines) == 6
    assert lines[1].startswith("0,") and lines[1].endswith(",5.0")
    data = json.loads(cli(child_env, "metrics", a.id, "loss", "--format", "json").stdout)
    assert [p["value"] for p in data] == [5.0, 4.0, 3.0, 2.0, 1.0]


def test_errors_are_clear(child_env, two_runs):
    out = cli(child_env, "show", "no-such-run", check=False)
    assert out.returncode == 2 and "no run with id or name 'no-such-run'" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli(child_env, "metrics", "first", "nokey", check=False)
    assert out.returncode == 1 and "no metric" in out.stderr


def test_not_a_store_error(tmp_path, child_env):
    bad = tmp_path / "bad.db"
    bad.write_text("hello")
    out = cli(dict(child_env, MLOPS_JUPYTER_STORE=str(bad)), "runs", check=False)
    assert out.returncode == 2 and "not an mlops-jupyter store" in out.stderr
    assert bad.read_text() == "hello"
