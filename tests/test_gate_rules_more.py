"""The gate rules that read what the store recorded about a candidate: drift between the
data its training run versioned and the current data (a tiny torch model trained in a
run), the privacy guarantee a DP-SGD run recorded (real Opacus training), and scores
recorded by mj.llm_eval; each skipped where nothing was recorded."""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.cli import main as cli_main  # noqa: E402
from mlops_jupyter.errors import InvalidInputError  # noqa: E402
from mlops_jupyter.loop import drift, llm_score, privacy, threshold  # noqa: E402
from mlops_jupyter.loop.cli import load_rules  # noqa: E402

RNG = np.random.default_rng(11)


def _frame(n: int, shift: float = 0.0, scale: float = 1.0) -> pl.DataFrame:
    x = RNG.normal(size=(n, 2)).astype(np.float32) * scale + shift
    y = (x[:, 0] - shift + 0.3 * RNG.normal(size=n) > 0).astype(np.int64)
    return pl.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "y": y})


def _fit(df: pl.DataFrame, steps: int = 60) -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    x = torch.from_numpy(df.select("x0", "x1").to_numpy())
    y = torch.from_numpy(df["y"].to_numpy().copy())
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m


def _placeholder() -> torch.nn.Module:
    """A model for rules that only read records (privacy, LLM scores)."""
    return torch.nn.Linear(2, 2)


XY = (RNG.normal(size=(50, 2)).astype(np.float32), np.zeros(50, dtype=np.int64))


# -- drift ----------------------------------------------------------------------------------
def test_drift_same_distribution_passes_shifted_fails(tmp_path, store_path, capsys):
    train = _frame(2000)
    with mj.start_run("train-clf"):
        dv = mj.data.version(train, name="clf-train")
        v1 = mj.register_model("clf", _fit(train))
    same, shifted = _frame(1000), _frame(1000, shift=1.5, scale=2.0)
    rules = [threshold("accuracy", ">=", 0.8), drift(max_share=0.2)]

    ok = mj.gate("clf", v1, same, rules, notify=False)
    assert ok.passed, ok.markdown()
    ev = ok.results[1].evidence
    assert ev["training_data"] == [dv.id] and ev["n_columns"] == 2 and ev["n_drifted"] == 0
    assert set(ev["columns"]) == {"x0", "x1"}  # the features; not the target
    assert ev["current_data"] == ok.data_id

    bad = mj.gate("clf", v1, shifted, rules, notify=False)
    assert not bad.passed
    r = bad.results[1]
    assert r.status == "fail" and r.evidence["share"] == 1.0
    assert r.evidence["columns"]["x0"]["drifted"] and "x0" in r.detail
    assert r.evidence["columns"]["x0"]["statistic"] > r.evidence["columns"]["x0"]["threshold"]
    # the stored verdict keeps the per-column evidence
    stored = mj.gates("clf", v1)[-1]["report"]["results"][1]
    assert stored["status"] == "fail" and stored["evidence"]["columns"]["x1"]["drifted"]

    # data= on the rule: a stored data version (compared by profiles) or a frame
    cur = mj.data.version(shifted, name="clf-live")
    by_version = mj.gate("clf", v1, same, [drift(data=cur.id)], notify=False)
    assert not by_version.passed
    assert by_version.results[0].evidence["current_data"] == cur.id
    assert mj.gate("clf", v1, shifted, [drift(data=same)], notify=False).passed
    # one column only, and a lenient share: x1 alone drifted is 1/1 > 0.5
    only = mj.gate("clf", v1, shifted, [drift(0.5, columns=["x1"])], notify=False)
    assert not only.passed and only.results[0].evidence["n_columns"] == 1

    # a TOML rules file and the CLI: exit 1 on the shifted data
    path = tmp_path / "live.parquet"
    shifted.write_parquet(path)
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[[rule]]\ntype = "drift"\nmax_share = 0.2\n')
    assert [type(r).__name__ for r in load_rules(rules_file)["rules"]] == ["drift"]
    args = ["--store", str(store_path), "gate", "clf", "--candidate", str(v1)]
    code = cli_main([*args, "--data", str(path), "--rules", str(rules_file), "--json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["rule"] == "drift(max_share=0.2)"


def test_drift_skipped_without_training_data_and_bad_input():
    loose = mj.register_model("clf", _fit(_frame(300)))  # outside any run
    r = mj.gate("clf", loose, _frame(200), [drift()], notify=False)
    assert r.results[0].status == "skipped" and "not registered from a run" in r.results[0].detail
    assert not r.passed  # no rule ran
    with mj.start_run("no-data"):
        bare = mj.register_model("clf", _fit(_frame(300)))
    r = mj.gate("clf", bare, _frame(200), [drift(), threshold("accuracy", ">=", 0.5)])
    assert r.results[0].status == "skipped" and "no input data version" in r.results[0].detail
    assert r.passed  # decided by the rule that ran

    with mj.start_run("train"):
        mj.data.version(_frame(300), name="t")
        v = mj.register_model("clf", _fit(_frame(300)))
    # arrays carry no column names: nothing to compare with x0, x1
    with pytest.raises(InvalidInputError, match="share none"):
        mj.gate("clf", v, XY, [drift()], notify=False)
    with pytest.raises(InvalidInputError, match="not in both"):
        mj.gate("clf", v, _frame(100), [drift(columns=["x0", "nope"])], notify=False)
    with pytest.raises(InvalidInputError, match="no-such-data"):
        mj.gate("clf", v, _frame(100), [drift(data="no-such-data")], notify=False)
    assert len(mj.gates("clf", v)) == 0  # bad input: nothing stored
    for bad in (dict(max_share=1.5), dict(max_share="x"), dict(columns=[])):
        with pytest.raises(InvalidInputError):
            drift(**bad)


# -- privacy --------------------------------------------------------------------------------
def test_privacy_guarantee_under_and_over_the_limit():
    pytest.importorskip("opacus")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(160, 2)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|Optimal)")
        with mj.start_run("dp-train"):
            m, o, dl = mj.privacy.make_private(
                model, opt, loader, noise_multiplier=1.5, max_grad_norm=1.0, delta=1e-4,
                accountant="rdp",
            )  # fmt: skip
            for xb, yb in dl:
                o.zero_grad()
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
                o.step()
            v = mj.register_model("dp", model)
    eps = mj.privacy.model_guarantee("dp", v)["epsilon"]
    assert 0 < eps < 50
    rules = [
        privacy(max_epsilon=eps * 2),
        privacy(max_epsilon=eps / 2),
        privacy(max_epsilon=eps * 2, max_delta=1e-5),
        privacy(max_epsilon=eps * 2, max_delta=1e-3, required=True),
    ]
    # trusted: Opacus's wrapping leaves a structure only a full unpickle rebuilds
    rep = mj.gate("dp", v, XY, rules, notify=False, trusted=True)
    assert [r.status for r in rep.results] == ["pass", "fail", "fail", "pass"]
    ok = rep.results[0].evidence
    assert ok["epsilon"] == eps and ok["delta"] == 1e-4 and ok["accountant"] == "rdp"
    assert ok["source"] == "version" and ok["steps"] == len(dl)
    assert "exceeds max_epsilon" in rep.results[1].detail
    assert "delta=0.0001 exceeds max_delta" in rep.results[2].detail

    # a version without a guarantee: skipped, or failed when one is required
    with mj.start_run("plain"):
        plain = mj.register_model("dp", _placeholder())
    rep = mj.gate("dp", plain, XY, [privacy(1.0), privacy(1.0, required=True)], notify=False)
    assert [r.status for r in rep.results] == ["skipped", "fail"]
    assert "no privacy guarantee" in rep.results[1].detail
    for bad in (dict(max_epsilon=0), dict(max_epsilon=1, max_delta=-1), dict(max_epsilon="1")):
        with pytest.raises(InvalidInputError):
            privacy(**bad)


# -- LLM-evaluation scores ------------------------------------------------------------------
QA = pl.DataFrame(
    {
        "question": ["capital of France?", "two plus two?", "color of the sky?", "largest ocean?"],
        "reference": ["Paris", "four", "blue", "the Pacific Ocean"],
    }
)


def _llm_version(answers: list[str]) -> int:
    with mj.start_run("llm-eval"):
        mj.llm_eval(QA.with_columns(answer=pl.Series(answers)), metrics=["exact_match", "token_f1"])
        return mj.register_model("qa", _placeholder())


def test_llm_scores_pass_fail_and_skipped():
    prod = _llm_version(["Paris", "four", "blue", "the Pacific Ocean"])
    mj.promote_model("qa", prod, "staging")
    mj.promote_model("qa", prod, "production")
    cand = _llm_version(["Paris", "4", "blue", "Pacific"])  # 2 exact; token_f1 (1+0+1+2/3)/4
    rules = [
        llm_score("token_f1", ">=", 0.6),
        llm_score("llm/token_f1", not_worse_by=0.1),
        llm_score("exact_match", ">=", 0.9),
        llm_score("token_f1", ">=", 0.5, not_worse_by=0.5),
        llm_score("judge", ">=", 0.5),  # not recorded
    ]
    rep = mj.gate("qa", cand, XY, rules, notify=False)
    assert [r.status for r in rep.results] == ["pass", "fail", "fail", "pass", "skipped"]
    f1 = rep.results[1].evidence
    assert f1["candidate"]["value"] == pytest.approx(2 / 3) and f1["baseline"]["value"] == 1.0
    assert f1["difference"] == pytest.approx(-1 / 3)
    assert f1["candidate"]["ci_low"] is not None  # llm_eval's interval, kept as evidence
    assert rep.results[0].rule == "llm_score(llm/token_f1 >= 0.6)"
    assert "not compared" not in rep.results[1].detail

    # no production to compare with: the comparison alone is skipped
    alone = mj.gate("qa", cand, XY, rules[:2], baseline=None, notify=False)
    assert [r.status for r in alone.results] == ["pass", "skipped"]
    # a candidate with no scores (registered outside a run): skipped
    bare = mj.register_model("qa", _placeholder())
    rep = mj.gate("qa", bare, XY, rules[:1], notify=False)
    assert (
        rep.results[0].status == "skipped" and "recorded no llm/token_f1" in rep.results[0].detail
    )
    # scores given to register_model count too
    reg = mj.register_model("qa", _placeholder(), metrics={"llm/token_f1": 0.4})
    assert mj.gate("qa", reg, XY, rules[:1], notify=False).results[0].status == "fail"
    for bad in (dict(metric="token_f1"), dict(metric="token_f1", op="=", value=1)):
        with pytest.raises(InvalidInputError):
            llm_score(**bad)
