"""Evaluation slices in gates and model cards, on a real store and registry: per-slice
metrics checked against a hand computation, the intervals' coverage over simulated data, a
regression in one slice that the overall metric hides, bad slice input, the stored verdict,
the model card's section and the CLI's --slice.

The models are registered predictions (a dict per version) and a predict function that
looks them up by the example's id, so every number here is known by construction."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.loop import latency, not_worse, threshold
from mlops_jupyter.loop.cli import load_rules
from mlops_jupyter.loop.slices import TOO_SMALL, slice_rows
from mlops_jupyter.loop.slices import prepare as prepare_slices

COUNTRIES = ("DE", "FR", "US", "JP")


def lookup(model, X):
    """The registered model's prediction for each example id."""
    return np.asarray(model["pred"])[X["id"].to_numpy()]


def _frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "country": np.array(COUNTRIES)[rng.integers(0, 4, n)],
            "device": np.array(["ios", "web"])[rng.integers(0, 2, n)],
            "y": rng.integers(0, 2, n),
        }
    )


def _right(df: pl.DataFrame, p_right: np.ndarray, rng) -> np.ndarray:
    """Predictions right with probability p_right (one per example)."""
    y = df["y"].to_numpy()
    return np.where(rng.random(df.height) < p_right, y, 1 - y)


def _models(name: str, base: np.ndarray, cand: np.ndarray) -> int:
    v = mj.register_model(name, {"pred": base.tolist()})
    mj.promote_model(name, v, "staging")
    mj.promote_model(name, v, "production")
    return mj.register_model(name, {"pred": cand.tolist()})


def test_per_slice_metrics_match_a_hand_computation():
    df = _frame(200, seed=1).with_columns(
        # a small slice (5 rows) and a null in the device column
        pl.when(pl.col("id") < 5).then(pl.lit("NZ")).otherwise(pl.col("country")).alias("country"),
        pl.when(pl.col("id") == 7).then(None).otherwise(pl.col("device")).alias("device"),
    )
    rng = np.random.default_rng(2)
    base, cand = _right(df, np.full(200, 0.7), rng), _right(df, np.full(200, 0.8), rng)
    v = _models("hand", base, cand)
    r = mj.gate(
        "hand", v, df, [not_worse("accuracy", by=0.05)], predict=lookup,
        slices=["country", "device"], notify=False,
    )  # fmt: skip
    table = r.slices
    assert table["metrics"] == ["accuracy"] and table["slices"] == ["country", "device"]
    y = df["y"].to_numpy()
    rows = {row["slice"]: row for row in table["rows"]}
    expected = [f"country={c}" for c in sorted({*COUNTRIES, "NZ"})]
    expected += ["device=ios", "device=web", "device=null"]
    assert [row["slice"] for row in table["rows"]] == expected  # values in order, null last
    for key, row in rows.items():
        col, val = key.split("=")
        is_val = df[col].is_null() if val == "null" else (df[col] == val).fill_null(False)
        mask = is_val.to_numpy()
        c, b = (cand[mask] == y[mask]).mean(), (base[mask] == y[mask]).mean()
        assert row["n"] == mask.sum() and row["value"] == (None if val == "null" else val)
        assert row["candidate"] == pytest.approx(c, abs=1e-12)
        assert row["baseline"] == pytest.approx(b, abs=1e-12)
        assert row["difference"] == pytest.approx(c - b, abs=1e-12)
        if mask.sum() >= 30:
            for k in ("candidate", "baseline", "difference"):
                lo, hi = row[f"{k}_interval"]
                assert lo <= row[k] <= hi and hi - lo < 0.6
            assert row["note"] == ""
        else:  # NZ (5 rows) and the null device (1 row): means only
            assert row["candidate_interval"] is None and row["note"] == TOO_SMALL
    assert rows["country=NZ"]["n"] == 5 and rows["device=null"]["n"] == 1
    # stored with the verdict, shown in its Markdown
    (stored,) = mj.gates("hand")
    assert stored["report"]["slices"]["rows"] == json.loads(json.dumps(table["rows"]))
    md = r.markdown()
    assert "### Slices" in md and "| country=NZ | 5 | accuracy |" in md and TOO_SMALL in md
    # custom slices: a mask, a function of the frame and a polars expression
    r = mj.gate(
        "hand", v, df, [not_worse("accuracy")], predict=lookup, notify=False,
        slices={"first half": np.arange(200) < 100, "de": lambda f: f["country"] == "DE",
                "web": pl.col("device") == "web"},
        slice_metrics=["accuracy", "log_loss"], min_slice_count=10,
    )  # fmt: skip
    got = {(row["slice"], row["metric"]): row for row in r.slices["rows"]}
    assert len(got) == 6 and got[("first half", "accuracy")]["n"] == 100
    assert got[("first half", "accuracy")]["column"] is None
    m = np.arange(200) < 100
    assert got[("first half", "accuracy")]["candidate"] == pytest.approx((cand == y)[m].mean())
    assert got[("de", "accuracy")]["n"] == rows["country=DE"]["n"]
    assert got[("web", "log_loss")]["n"] == rows["device=web"]["n"]


def test_intervals_cover_the_true_value_at_the_stated_rate():
    """200 simulated evaluations of 3 slices (400 examples each; accuracy 0.9/0.8/0.7 and
    production 0.85 everywhere, and a skewed continuous metric): the 95 % intervals of each
    slice's mean and paired difference cover the true value ~95 % of the time."""
    rng = np.random.default_rng(11)
    n, p_c = 1200, np.array([0.9, 0.8, 0.7])
    groups = np.repeat(np.arange(3), n // 3)
    frame = pl.DataFrame({"g": groups})
    (dim,) = prepare_slices("g", frame, None, n)
    hits = {"candidate": 0, "difference": 0, "continuous": 0}
    reps = 200
    for i in range(reps):
        c = (rng.random(n) < p_c[groups]).astype(float)
        b = (rng.random(n) < 0.85).astype(float)
        for row in slice_rows([dim], "accuracy", True, c, b, seed=i):
            g = row["value"]
            lo, hi = row["candidate_interval"]
            hits["candidate"] += lo <= p_c[g] <= hi
            lo, hi = row["difference_interval"]
            hits["difference"] += lo <= p_c[g] - 0.85 <= hi
        e = rng.exponential(scale=1.0 + groups)  # means 1, 2, 3
        for row in slice_rows([dim], "error", False, e, None, seed=i):
            lo, hi = row["candidate_interval"]
            hits["continuous"] += lo <= 1.0 + row["value"] <= hi
    rates = {k: v / (3 * reps) for k, v in hits.items()}
    # 600 intervals each: a binomial SD of 0.9 points around 95 %
    assert all(0.92 <= r <= 0.98 for r in rates.values()), rates


def test_a_regression_in_one_slice_hidden_by_the_overall_metric_is_caught():
    df = _frame(8000, seed=3)
    rng = np.random.default_rng(4)
    de = (df["country"] == "DE").to_numpy()
    base = _right(df, np.full(df.height, 0.85), rng)
    # the candidate: 15 points worse in DE, 5 points better elsewhere: better overall
    cand = _right(df, np.where(de, 0.70, 0.90), rng)
    v = _models("hidden", base, cand)
    overall = not_worse("accuracy", by=0.02)
    sliced = not_worse("accuracy", by=0.02, slices=True)
    r = mj.gate(
        "hidden", v, df, [overall, sliced], predict=lookup, slices=["country", "device"]
    )  # fmt: skip
    assert [x.status for x in r.results] == ["pass", "fail"] and not r.passed
    ev = r.results[1].evidence
    assert ev["difference"] > 0  # better overall ...
    assert [s["slice"] for s in ev["slices_failed"]] == ["country=DE"]  # ... worse in DE
    assert ev["slices_checked"] == 6 and ev["slices_too_small"] == 0
    assert ev["slices_failed"][0]["interval"][1] < -0.02
    assert "slices: 1 of 6 regress beyond -0.02: country=DE" in r.results[1].detail
    assert "not_worse(accuracy, by=0.02, slices)" in r.results[1].rule
    # the stored verdict keeps the evidence and the table
    stored = mj.gates("hidden")[-1]["report"]
    assert stored["results"][1]["evidence"]["slices_failed"][0]["slice"] == "country=DE"
    assert len(stored["slices"]["rows"]) == 6
    # a candidate equal to production everywhere passes the sliced rule
    same = mj.register_model("hidden", {"pred": base.tolist()})
    r = mj.gate("hidden", same, df, [sliced], predict=lookup, slices=["country"], notify=False)
    assert r.passed and r.results[0].evidence["slices_failed"] == []
    # with no production version the comparison (and so the slice check) is skipped, while
    # the table still has the candidate's per-slice metric
    fresh = mj.register_model("fresh", {"pred": cand.tolist()})
    r = mj.gate(
        "fresh", fresh, df, [threshold("accuracy", ">=", 0.5), sliced], predict=lookup,
        slices=["country"], notify=False,
    )  # fmt: skip
    assert [x.status for x in r.results] == ["pass", "skipped"]
    de_row = next(x for x in r.slices["rows"] if x["slice"] == "country=DE")
    assert de_row["baseline"] is None and de_row["difference_interval"] is None
    assert de_row["candidate"] == pytest.approx((cand == df["y"].to_numpy())[de].mean())


def test_bad_slices_are_clear_errors_and_store_nothing():
    df = _frame(300)
    v = _models("bad", df["y"].to_numpy(), df["y"].to_numpy())
    rules = [not_worse("accuracy")]

    def gate(**kw):
        return mj.gate("bad", v, kw.pop("data", df), kw.pop("rules", rules), predict=lookup, **kw)

    with pytest.raises(InvalidInputError, match=r"no slice column 'contry'.*id, country, device"):
        gate(slices=["contry"])
    with pytest.raises(InvalidInputError, match="has 300 distinct values"):
        gate(slices="id")
    with pytest.raises(InvalidInputError, match="boolean mask of the 300"):
        gate(slices={"short": np.ones(10, dtype=bool)})
    with pytest.raises(InvalidInputError, match="needs the gate's slices"):
        gate(rules=[not_worse("accuracy", slices=True)])
    with pytest.raises(InvalidInputError, match="no metric to report per slice"):
        gate(rules=[latency(p99_ms=1000)], slices=["country"])
    with pytest.raises(InvalidInputError, match="slices named more than once"):
        gate(slices=["country", "country"])
    with pytest.raises(InvalidInputError, match="min_slice_count"):
        gate(slices=["country"], min_slice_count=0)
    arrays = (np.zeros((300, 1), dtype=np.float32), df["y"].to_numpy())
    with pytest.raises(InvalidInputError, match="arrays, with no columns"):
        mj.gate("bad", v, arrays, rules, slices=["country"])
    with pytest.raises(InvalidInputError, match="slices must be True or False"):
        not_worse("accuracy", slices="yes")
    assert mj.gates("bad") == []  # bad input stored nothing


def test_model_card_shows_the_newest_sliced_gate(tmp_path):
    df = _frame(600, seed=5)
    rng = np.random.default_rng(6)
    base = _right(df, np.full(600, 0.8), rng)
    v = _models("carded", base, _right(df, np.full(600, 0.8), rng))
    empty = mj.model_card("carded", version=v)
    assert empty.to_dict()["slices"] is None  # no gate yet: not recorded
    section = empty.markdown().split("## Evaluation slices\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip() == "_not recorded_"
    plain = mj.gate("carded", v, df, [not_worse("accuracy", by=0.1)], predict=lookup)
    md = mj.model_card("carded", version=v).markdown()
    assert f"No gate of this version evaluated slices (the newest is #{plain.id})" in md
    sliced = mj.gate(
        "carded", v, df.with_columns(pl.when(pl.col("id") < 3).then(pl.lit("NZ"))
                                     .otherwise(pl.col("country")).alias("country")),
        [not_worse("accuracy", by=0.1)], predict=lookup, slices=["country"],
    )  # fmt: skip
    card = mj.model_card("carded", version=v)
    d = card.to_dict()
    assert d["slices"]["gate"] == sliced.id and d["slices"]["latest_gate"] == sliced.id
    assert [r["slice"] for r in d["slices"]["rows"]][-1] == "country=US"
    json.dumps(d, allow_nan=False)
    md = card.markdown()
    section = md.split("## Evaluation slices\n", 1)[1].split("\n## ", 1)[0]
    assert f"From gate #{sliced.id} (pass against v1" in section
    assert "| slice | n | metric | candidate | production | difference |" in section
    assert "| country=NZ | 3 | accuracy |" in section and TOO_SMALL in section
    de = next(r for r in d["slices"]["rows"] if r["slice"] == "country=DE")
    assert f"{de['candidate']:.4g} [{de['candidate_interval'][0]:.4g}" in section
    h = card.html()
    assert "<h3>Evaluation slices</h3>" in h and "country=DE" in h
    # a newer gate without slices: the card keeps the sliced one and says so
    newer = mj.gate("carded", v, df, [not_worse("accuracy", by=0.1)], predict=lookup)
    md = mj.model_card("carded", version=v).markdown()
    assert f"From gate #{sliced.id}" in md and f"The newest gate, #{newer.id}, had no" in md


def test_cli_slice_option(tmp_path, store_path, capsys):
    df = _frame(4000, seed=8)
    rng = np.random.default_rng(9)
    de = (df["country"] == "DE").to_numpy()
    base = _right(df, np.full(df.height, 0.85), rng)
    v = _models("cli", base, _right(df, np.where(de, 0.65, 0.9), rng))
    data = tmp_path / "eval.parquet"
    df.write_parquet(data)
    rules = tmp_path / "rules.py"
    rules.write_text(
        "import numpy as np\n"
        "from mlops_jupyter.loop import not_worse\n"
        "def PREDICT(model, X):\n"
        "    return np.asarray(model['pred'])[X['id'].to_numpy()]\n"
        "RULES = [not_worse('accuracy', by=0.02, slices=True)]\n"
    )
    base_args = ["--store", str(store_path), "gate", "cli", "--candidate", str(v)]
    args = [*base_args, "--data", str(data), "--rules", str(rules)]
    assert cli_main([*args, "--slice", "country", "--slice", "device", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["slices"]["slices"] == ["country", "device"] and len(out["slices"]["rows"]) == 6
    assert out["results"][0]["evidence"]["slices_failed"][0]["slice"] == "country=DE"
    assert cli_main([*args, "--slice", "device"]) == 0  # no regression by device
    assert "| device=web |" in capsys.readouterr().out
    assert cli_main([*args, "--slice", "nope"]) == 2
    assert "no slice column 'nope'" in capsys.readouterr().err
    # a rules file names its slices itself (TOML: slices = [...]; Python: SLICES)
    toml = tmp_path / "rules.toml"
    toml.write_text('slices = ["country"]\n[[rule]]\ntype = "not_worse"\nmetric = "accuracy"\n')
    assert load_rules(toml)["slices"] == ["country"]
    rules.write_text(rules.read_text() + "SLICES = ['country']\n")
    assert cli_main([*args, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["slices"]["slices"] == ["country"]
