"""Validation gates on a real store and registry: small torch models truly better, the same
within noise, or truly worse than production; the paired bootstrap's error rates; the CLI's
exit codes; the promotion policy that requires a passing gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from loop_helpers import clf as _clf

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.loop import (
    custom,
    default_predict,
    latency,
    not_worse,
    paired_bootstrap,
    threshold,
)
from mlops_jupyter.registry import StageTransitionError

torch = pytest.importorskip("torch")  # the compatibility venvs have no torch

# Evaluation data: y depends on x0 only; x1 is independent noise, symmetric around 0.
_RNG = np.random.default_rng(7)
N = 10_000
X = _RNG.normal(size=(N, 2)).astype(np.float32)
Y = (X[:, 0] + 0.3 * _RNG.normal(size=N) > 0).astype(np.int64)


def _production(name: str = "clf", w1: float = 0.5) -> int:
    v = mj.register_model(name, _clf(w1))
    mj.promote_model(name, v, "staging")
    mj.promote_model(name, v, "production")
    return v


def test_better_same_worse_pass_pass_fail():
    _production()  # v1: accuracy ~0.83
    better = mj.register_model("clf", _clf(0.0))
    same = mj.register_model("clf", _clf(-0.5))
    worse = mj.register_model("clf", _clf(1.5))
    rules = [not_worse("accuracy", by=0.02), not_worse("log_loss", by=0.05)]
    got = {v: mj.gate("clf", v, (X, Y), rules) for v in (better, same, worse)}
    assert [got[v].passed for v in (better, same, worse)] == [True, True, False]
    ev = got[same].results[0].evidence
    assert ev["n"] == N and ev["interval"][0] < 0 < ev["interval"][1]  # noise, not a change
    assert abs(ev["difference"]) < 0.01 and ev["baseline"] == pytest.approx(
        ev["candidate"], abs=0.01
    )
    ev = got[worse].results[0].evidence
    assert ev["interval"][1] < -0.05 and got[worse].results[0].status == "fail"
    # seeded: the same gate gives the same interval
    again = mj.gate("clf", same, (X, Y), rules)
    assert again.results[0].evidence["interval"] == got[same].results[0].evidence["interval"]
    # the verdicts are stored, with a line each in the registry's audit log
    stored = mj.gates("clf")
    assert [g["version"] for g in stored] == [better, same, worse, same]
    assert [g["passed"] for g in stored] == [True, True, False, True]
    assert all(g["baseline_version"] == 1 for g in stored)
    assert stored[2]["report"]["results"][0]["status"] == "fail"
    log = mj.model_history("clf").filter(pl.col("action") == "gate")
    assert log.height == 4 and log["reason"][2].startswith(f"gate #{stored[2]['id']}: FAIL")
    md = got[worse].markdown()
    assert "FAIL" in md and "| not_worse(accuracy, by=0.02) | fail |" in md
    d = got[better].to_dict()
    assert d["passed"] is True and d["baseline"] == 1 and json.dumps(d)
    # by=0, the default (no_regression): noise passes, a real regression fails; the
    # non_inferiority reading fails the same candidate (its interval reaches below 0)
    zero = [not_worse("accuracy")]
    assert mj.gate("clf", same, (X, Y), zero, notify=False).passed
    assert not mj.gate("clf", worse, (X, Y), zero, notify=False).passed
    strict = [not_worse("accuracy", require="non_inferiority")]
    assert not mj.gate("clf", same, (X, Y), strict, notify=False).passed


def test_no_production_version_skips_comparisons():
    v = mj.register_model("fresh", _clf(0.0))
    r = mj.gate("fresh", v, (X, Y), [threshold("accuracy", ">=", 0.85), not_worse("accuracy")])
    assert [x.status for x in r.results] == ["pass", "skipped"]
    assert r.passed and r.baseline is None
    assert "no production version" in r.results[1].detail
    # nothing but skipped rules: not a pass by accident
    r = mj.gate("fresh", v, (X, Y), [not_worse("accuracy")])
    assert not r.passed and "no rule ran" in r.summary()
    r = mj.gate("fresh", v, (X, Y), [threshold("accuracy", ">=", 0.99)])
    assert not r.passed
    # a custom rule that needs the production model's output is skipped too
    r = mj.gate("fresh", v, (X, Y), [custom(lambda ctx: bool(ctx.output("baseline").any()))])
    assert r.results[0].status == "skipped" and not r.passed


def test_threshold_latency_custom_and_frames():
    _production("reg", 0.5)
    v = mj.register_model("reg", _clf(0.0))
    df = pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": Y})
    seen = {}

    def agree(ctx):
        same = float((ctx.output("candidate").argmax(1) == ctx.output("baseline").argmax(1)).mean())
        seen["n"] = len(ctx.y)
        return same > 0.5, {"agreement": same}

    def broken(ctx):
        raise ZeroDivisionError("boom")

    r = mj.gate(
        "reg",
        v,
        df,
        [
            threshold("accuracy", ">=", 0.9),
            latency(p99_ms=5_000),
            latency(p50_ms=1e-6),
            custom(agree),
            custom(broken, "broken"),
        ],
        target="label",
    )
    st = [x.status for x in r.results]
    assert st == ["pass", "pass", "fail", "pass", "fail"] and not r.passed
    assert r.results[1].evidence["calls"] == 200 and r.results[1].evidence["p99_ms"] > 0
    assert r.results[3].evidence["agreement"] > 0.5 and seen["n"] == N
    assert "ZeroDivisionError: boom" in r.results[4].detail
    # a predict function gets the feature columns as a frame (strings included)
    text = df.with_columns(pl.lit("note").alias("comment"))
    with pytest.raises(InvalidInputError, match="not all numeric"):
        mj.gate("reg", v, text, [threshold("accuracy", ">=", 0.9)], target="label")

    def by_columns(model, frame):
        return default_predict(model, frame.select("a", "b").to_numpy())

    r = mj.gate(
        "reg", v, text, [threshold("accuracy", ">=", 0.9)], target="label", predict=by_columns
    )
    assert r.passed
    with pytest.raises(InvalidInputError, match="target column 'y'"):
        mj.gate("reg", v, df, [threshold("accuracy", ">=", 0.9)])
    with pytest.raises(InvalidInputError, match="bool or"):
        mj.gate("reg", v, (X, Y), [custom(lambda ctx: 0.5, "half")])
    with pytest.raises(InvalidInputError, match="unknown metric"):
        threshold("acc", ">=", 0.9)
    with pytest.raises(InvalidInputError, match="non-empty list"):
        mj.gate("reg", v, (X, Y), [])
    assert len(mj.gates("reg")) == 2  # bad input stored nothing


def test_regression_metrics_lower_is_better():
    def lin(w):
        m = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            m.weight[:] = torch.tensor([[1.0, w]])
        return m

    yr = X[:, 0] + 0.1 * _RNG.normal(size=N).astype(np.float32)
    mj.register_model("r", lin(0.2))
    mj.promote_model("r", 1, "staging")
    mj.promote_model("r", 1, "production")
    good, bad = mj.register_model("r", lin(0.0)), mj.register_model("r", lin(0.6))
    rules = [not_worse("squared_error", by=0.01), not_worse("absolute_error", by=0.01)]
    assert mj.gate("r", good, (X, yr), rules).passed
    r = mj.gate("r", bad, (X, yr), rules)
    assert not r.passed and r.results[0].evidence["higher_is_better"] is False
    assert r.results[0].evidence["interval"][0] > 0.01  # its error is larger


def test_bootstrap_error_rates():
    """On 40,000 examples (two models erring independently at 10 %, the widest paired
    interval, SE = 0.0021), over 200 simulated evaluations each:
    - no_regression with by=0 (fails when the whole interval is below 0): under no real
      difference it fails <= 5 % of the time (expected 2.5 %); a real 2-point regression
      is caught >= 95 % of the time (expected ~100 %);
    - non_inferiority with by=0.01 (fails when the interval reaches below -by): under no
      real difference it fails <= 5 % (expected 0.3 %); the 2-point regression is caught
      >= 95 % (expected ~100 %)."""
    rng = np.random.default_rng(123)
    n, by = 40_000, 0.01
    alarms = {"no_regression": 0, "non_inferiority": 0}
    caught = dict(alarms)
    for i in range(200):
        base = rng.random(n) < 0.9
        lo, hi = paired_bootstrap((rng.random(n) < 0.9).astype(float) - base, seed=i)
        alarms["no_regression"] += hi < 0
        alarms["non_inferiority"] += lo < -by
        lo, hi = paired_bootstrap((rng.random(n) < 0.88).astype(float) - base, seed=i)
        caught["no_regression"] += hi < 0
        caught["non_inferiority"] += lo < -by
    assert max(alarms.values()) <= 10, alarms
    assert min(caught.values()) >= 190, caught
    # the binned path (many distinct values, many examples) agrees with a plain bootstrap
    d = rng.normal(0.1, 1.0, size=30_000)
    lo, hi = paired_bootstrap(d)
    se = d.std() / np.sqrt(len(d))
    assert lo == pytest.approx(d.mean() - 1.96 * se, abs=0.2 * se)
    assert hi == pytest.approx(d.mean() + 1.96 * se, abs=0.2 * se)


def test_cli_exit_codes(tmp_path, store_path, child_env, capsys):
    _production()
    better, worse = mj.register_model("clf", _clf(0.0)), mj.register_model("clf", _clf(1.5))
    data = tmp_path / "eval.parquet"
    pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": Y}).write_parquet(data)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'target = "label"\n'
        '[[rule]]\ntype = "threshold"\nmetric = "accuracy"\nop = ">="\nvalue = 0.8\n'
        '[[rule]]\ntype = "not_worse"\nmetric = "accuracy"\nby = 0.01\n'
    )
    base = ["--store", str(store_path), "gate", "clf", "--data", str(data), "--rules", str(rules)]
    md = tmp_path / "report.md"
    assert cli_main([*base, "--candidate", str(better), "--markdown", str(md)]) == 0
    assert "PASS" in md.read_text()
    pyrules = tmp_path / "rules.py"
    pyrules.write_text(
        "from mlops_jupyter.loop import not_worse, custom\n"
        "TARGET = 'label'\n"
        "RULES = [not_worse('accuracy', by=0.01), custom(lambda ctx: True, 'always')]\n"
    )
    code = cli_main(["--store", str(store_path), "gate", "clf", "--candidate", str(better),
                     "--data", str(data), "--rules", str(pyrules), "--json"])  # fmt: skip
    assert code == 0
    bad_rules = tmp_path / "bad.toml"
    bad_rules.write_text('[[rule]]\ntype = "nope"\n')
    assert cli_main([*base[:-1], str(bad_rules), "--candidate", str(better)]) == 2
    assert cli_main([*base, "--candidate", "99"]) == 2  # no such version
    with pytest.raises(SystemExit) as e:  # argparse: --candidate missing
        cli_main(["--store", str(store_path), "gate", "clf", "--data", str(data)])
    assert e.value.code == 2
    assert cli_main(["--store", str(store_path), "gates", "clf"]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and out.count("pass") >= 2 and "v1" in out
    assert cli_main(["--store", str(store_path), "gates", "clf", "--version", "2", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [g["version"] for g in listed] == [2, 2] and all(g["passed"] for g in listed)
    assert cli_main(["--store", str(store_path), "gates", "nosuch"]) == 2
    # a real process, as CI runs it: a failing gate exits 1 with the report on stdout
    p = subprocess.run(
        [sys.executable, "-m", "mlops_jupyter", *base, "--candidate", str(worse)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1, p.stderr
    assert "FAIL" in p.stdout and "not_worse(accuracy, by=0.01) | fail" in p.stdout


def test_promotion_policy_requires_passing_gate():
    _production()
    cand = mj.register_model("clf", _clf(0.0))
    mj.promote_model("clf", cand, "staging")
    assert mj.loop.model_policy("clf") == {}
    mj.set_model_policy("clf", require_gate=True)
    assert mj.loop.model_policy("clf") == {"require_gate": True}
    with pytest.raises(StageTransitionError, match="mlops-jupyter gate clf --candidate 2"):
        mj.promote_model("clf", cand, "production")
    rules = [threshold("accuracy", ">=", 0.95)]  # too strict: fails
    assert not mj.gate("clf", cand, (X, Y), rules, notify=False).passed
    with pytest.raises(StageTransitionError, match=r"newest gate .* failed: threshold"):
        mj.promote_model("clf", cand, "production")
    assert mj.gate("clf", cand, (X, Y), [not_worse("accuracy", by=0.01)]).passed
    mj.promote_model("clf", cand, "production", reason="gate passed")
    assert mj.load_model("clf", stage="production") is not None
    # a gate against an older production version does not count after it changed
    nxt = mj.register_model("clf", _clf(0.1))
    mj.promote_model("clf", nxt, "staging")
    mj.gate("clf", nxt, (X, Y), [not_worse("accuracy", by=0.05)], baseline=1)
    with pytest.raises(StageTransitionError, match="no gate against production v2"):
        mj.promote_model("clf", nxt, "production")
    # staging needs no gate; removing the policy lifts the requirement (both audited)
    mj.set_model_policy("clf", require_gate=False)
    mj.promote_model("clf", nxt, "production")
    actions = mj.model_history("clf")["action"].to_list()
    assert actions.count("policy") == 2 and actions.count("gate") == 3


def test_gate_failure_notifies(tmp_path, monkeypatch):
    out = tmp_path / "event.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    monkeypatch.setenv("MLOPS_JUPYTER_NOTIFY_COMMAND", f"{sys.executable} -c {json.dumps(script)}")
    _production()
    worse = mj.register_model("clf", _clf(1.5))
    r = mj.gate("clf", worse, (X, Y), [not_worse("accuracy")])
    assert not r.passed
    event = json.loads(out.read_text())
    assert event["kind"] == "gate_failed" and event["model"] == "clf"
    assert event["version"] == worse and event["report"]["passed"] is False
    assert event["text"].startswith("FAIL: clf v2 vs v1")


def test_data_from_files_and_data_versions(tmp_path):
    _production()
    v = mj.register_model("clf", _clf(0.0))
    rules = [not_worse("accuracy", by=0.01)]
    npz = tmp_path / "eval.npz"
    np.savez(npz, X=X, y=Y)
    assert mj.gate("clf", v, npz, rules).passed
    csv = tmp_path / "eval.csv"
    pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": Y}).write_csv(csv)
    dv = mj.version(csv, name="eval")
    by_path = mj.gate("clf", v, csv, rules)
    by_id, by_obj = mj.gate("clf", v, dv.id, rules), mj.gate("clf", v, dv, rules)
    assert by_path.passed and by_id.passed and by_obj.passed
    assert by_path.data_id == by_id.data_id == by_obj.data_id == dv.id  # the same data version
    frame_version = mj.version(pl.DataFrame({"a": [1.0], "y": [1]}), name="in-memory")
    with pytest.raises(InvalidInputError, match="no readable file"):
        mj.gate("clf", v, frame_version.id, rules)
    bad = tmp_path / "eval.txt"
    bad.write_text("1,2\n")
    with pytest.raises(InvalidInputError, match=r"\.parquet"):
        mj.gate("clf", v, bad, rules)
