"""The `mlops-jupyter` command, run as a real subprocess against a real store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.cli_format import safe, table


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


def test_last_must_be_positive(child_env, two_runs):
    for bad in ("-1", "0", "x"):
        out = cli(child_env, "runs", "--last", bad, check=False)
        assert out.returncode == 2 and "--last" in out.stderr, out.stderr
    assert len(json.loads(cli(child_env, "runs", "--last", "1", "--json").stdout)) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["runs", "--json"],
        ["show", "first"],
        ["metrics", "first", "loss"],
        ["data", "ls"],
        ["models", "ls"],
    ],
)
def test_read_commands_never_create_a_store(tmp_path, child_env, args):
    typo = tmp_path / "sotre"
    out = cli(child_env, "--store", str(typo), *args, check=False)
    assert out.returncode == 2, out.stdout
    assert "no store at" in out.stderr and "does not exist" in out.stderr
    assert "no runs yet" not in out.stdout and not typo.exists()
    # the default store too: a folder with no .mlops/ above it
    env = {k: v for k, v in child_env.items() if k != "MLOPS_JUPYTER_STORE"}
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", *args],
        env=env,
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert list(empty.iterdir()) == []


ESCAPES = "evil\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\nname\u202e"


def test_escape_codes_in_names_are_never_printed_raw(child_env):
    with mj.start_run(ESCAPES, experiment="exp\x1b[1m", params={"k\x1b[2J": "v\x07"}) as r:
        mj.log(**{"loss\x1b[5m": 1.0})
        mj.set_tags({"t": "\x1b]8;;http://x\x07link"})
    for args in (["runs"], ["show", r.id], ["show", "nosuch\x1b[2J"]):
        out = cli(child_env, *args, check=False)
        text = out.stdout + out.stderr
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, text
        assert "\r" not in text
    shown = cli(child_env, "runs").stdout
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\r\\nname\\u202e" in shown
    assert "evil" in cli(child_env, "show", r.id).stdout
    data = json.loads(cli(child_env, "runs", "--json").stdout)  # JSON keeps the exact name
    assert data[0]["name"] == ESCAPES


def test_nan_is_a_dash_and_children_are_shown_under_their_parent(child_env):
    with mj.start_run("parent", experiment="tree") as p:
        mj.log(loss=0.5)
        with mj.start_run("child-a", experiment="tree") as a:
            mj.log(loss=float("nan"))
        with mj.start_run("child-b", experiment="tree") as b:
            with mj.start_run("grandchild", experiment="tree") as g:
                mj.log(loss=float("inf"))
    with mj.start_run("other", experiment="tree") as o:
        mj.log(acc=1.0)
    lines = cli(child_env, "runs").stdout.splitlines()
    body = {ln.split()[0]: ln for ln in lines[2:]}
    order = [ln.split()[0] for ln in lines[2:]]
    assert order == [o.id, p.id, a.id, b.id, g.id]
    assert "\u2514 child-a" in body[a.id] and p.id in body[a.id]
    assert "  \u2514 grandchild" in body[g.id] and b.id in body[g.id]
    assert "nan" not in "\n".join(lines).lower()
    assert body[a.id].rstrip().endswith("\u2014") and "inf" in body[g.id]
    assert "\u2014" in body[o.id]  # no loss logged
    show = cli(child_env, "show", a.id).stdout
    assert f"parent: {p.id}" in show and "nan" not in show.lower()


@given(st.text())
def test_safe_text_is_printable_and_printable_text_is_unchanged(text):
    out = safe(text)
    assert out.isprintable()
    out.encode("utf-8")  # lone surrogates are escaped too, so printing cannot fail
    if text.isprintable():
        assert out == text
    else:
        assert out != text and "\\" in out
    cell = table([[text]], ["h"])
    assert all(line.isprintable() for line in cell.split("\n"))
