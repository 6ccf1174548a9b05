"""`mlops-jupyter data ...` subcommands, run through a real argparse parser and the store."""

from __future__ import annotations

import argparse
import json

import pytest
from data_helpers import frame

import mlops_jupyter as mj
from mlops_jupyter.data import cli


def _run(argv: list[str], capsys) -> tuple[int, str]:
    p = argparse.ArgumentParser(prog="mlops-jupyter")
    p.add_argument("--store")
    cli.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_ls_show_lineage_and_drift(tmp_path, capsys, store_path):
    ref = frame(2000, 1).drop("id")
    with mj.start_run("cli-run"):
        mj.version(ref, name="ref")
    frame(2000, 2, shift=3.0, scale=3.0, p=[0.1, 0.1, 0.1, 0.7]).drop("id").write_csv(
        tmp_path / "cur.csv"
    )
    code, out = _run(["--store", str(store_path), "data", "ls"], capsys)
    assert code == 0 and "ref" in out and "polars" in out
    code, out = _run(["data", "show", "ref"], capsys)
    assert code == 0 and "fingerprint xxh3_128:" in out and "x0" in out
    code, out = _run(["data", "show", "ref", "--json"], capsys)
    assert json.loads(out)["name"] == "ref"
    code, out = _run(["data", "lineage", "cli-run"], capsys)
    assert code == 0 and "input" in out and "ref" in out
    code, out = _run(["data", "drift", "ref", str(tmp_path / "cur.csv")], capsys)
    assert code == 0 and "DATASET DRIFT" in out and "profile mode" in out
    code, out = _run(["data", "drift", "ref", str(tmp_path / "cur.csv"), "--fail-on-drift"], capsys)
    assert code == 1
    code, out = _run(["data", "drift", "ref", "ref", "--json", "--fail-on-drift"], capsys)
    assert code == 0 and json.loads(out)["n_drifted"] == 0


def test_unknown_version_is_a_clear_error(capsys):
    with pytest.raises(mj.data.DataVersionNotFoundError):
        _run(["data", "show", "nope"], capsys)
