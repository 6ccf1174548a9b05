"""Model cards, model lineage and audit queries on a real small flow: a versioned data file
and a training set from a feature view read by a run that trains a tiny torch model, two
registered versions, a gate, promotions and a rollout; then the card, the lineage graph,
the audit frame and the CLI show each recorded piece, and "not recorded" where nothing was."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import polars as pl
import pytest

import mlops_jupyter as mj
from mlops_jupyter.cli import main as cli_main
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.loop import not_worse
from mlops_jupyter.store import serving_rollouts as ro
from mlops_jupyter.store.registry import ModelNotFoundError
from mlops_jupyter.tracking.api import current_store

torch = pytest.importorskip("torch")  # the compatibility venvs have no torch

RNG = np.random.default_rng(3)
N = 400
X = RNG.normal(size=(N, 2)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)
PRIVACY = {"epsilon": 2.5, "delta": 1e-5, "accountant": "rdp", "steps": 40}


def _train(steps: int) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(0)
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        acc = float((m(x).argmax(1) == y).float().mean())
    return m, acc


def _flow(tmp_path) -> dict:
    """v1 to production; v2 trained on a data file and a training set, gated, promoted."""
    data = tmp_path / "train.parquet"
    pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "y": Y}).write_parquet(data)
    t = dt.datetime(2024, 1, 1)
    feats = pl.DataFrame(
        {"user_id": [1, 2, 3], "event_ts": [t, t, t], "clicks": [5, 7, 9]},
        schema={"user_id": pl.Int64, "event_ts": pl.Datetime("us"), "clicks": pl.Int64},
    )
    mj.register_features("user_stats", feats, entity="user_id", timestamp="event_ts")
    labels = pl.DataFrame(
        {"user_id": [1, 2, 3], "event_ts": [t + dt.timedelta(days=1)] * 3, "label": [0, 1, 1]},
        schema={"user_id": pl.Int64, "event_ts": pl.Datetime("us"), "label": pl.Int64},
    )
    v1 = mj.register_model("clf", _train(1)[0], metrics={"accuracy": 0.6})
    mj.promote_model("clf", v1, "staging")
    mj.promote_model("clf", v1, "production", reason="first release")
    with mj.start_run("train-clf") as run:
        dv = mj.data.version(data, name="train-data")
        ts = mj.training_set(labels, ["user_stats:clicks"], name="ts-clf")
        mj.log_params({"lr": 0.5, "steps": 30})
        mj.set_tags({"notebook.path": "train.ipynb", "git.commit": "abc1234", "git.dirty": True})
        model, acc = _train(30)
        mj.log(0, accuracy=acc, **{"accuracy/ci_low": acc - 0.02, "accuracy/ci_high": acc + 0.01})
        v2 = mj.register_model("clf", model, metadata={"privacy": PRIVACY, "dataset": "demo"})
    rep = mj.gate("clf", v2, (X, Y), [not_worse("accuracy", by=0.02)])
    assert rep.passed
    mj.promote_model("clf", v2, "staging")
    mj.promote_model("clf", v2, "production", reason="better accuracy")
    layout = {"variants": [["a", v2, 9000], ["b", v1, 1000]], "shadow": None, "canary": None}
    ro.set_layout(current_store(), "clf", layout, "steady", "split a=90,b=10", user="ops")
    mj.set_model_card_fields(
        "clf",
        intended_use="Scoring <script>alert(1)</script> demo rows",
        limitations="Trained on 400 synthetic rows",
        owners=["ana", "ben"],
        ticket="ML-7",
    )
    return {"v1": v1, "v2": v2, "run": run, "dv": dv, "gate": rep, "acc": acc, "ts": ts}


@pytest.fixture
def flow(tmp_path):
    return _flow(tmp_path)


def test_card_has_each_recorded_piece(flow):
    card = mj.model_card("clf")  # production: v2
    assert card.version == flow["v2"]
    d = card.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["model"]["stage"] == "production"
    assert d["fields"]["owners"] == ["ana", "ben"] and d["fields"]["ticket"] == "ML-7"
    assert d["run"]["id"] == flow["run"].id and d["run"]["params"] == {"lr": 0.5, "steps": 30}
    (acc,) = [m for m in d["run"]["metrics"] if m["key"] == "accuracy"]
    assert acc["value"] == pytest.approx(flow["acc"])
    assert acc["ci_low"] == pytest.approx(flow["acc"] - 0.02)
    assert acc["ci_high"] == pytest.approx(flow["acc"] + 0.01)
    names = {x["name"]: x for x in d["data"]}
    assert names["train-data"]["id"] == flow["dv"].id and names["train-data"]["n_rows"] == N
    assert [p["column"] for p in names["train-data"]["profile"]] == ["x0", "x1", "y"]
    assert "ts-clf" in names
    assert d["features"] == [
        {
            "training_set": names["ts-clf"]["id"],
            "view": "user_stats",
            "version": 1,
            "features": ["clicks"],
            "data_version": d["features"][0]["data_version"],
        }
    ]
    assert d["code"] == {
        "notebook": "train.ipynb",
        "script": None,
        "commit": "abc1234",
        "branch": None,
        "dirty": True,
    }
    assert d["privacy"]["epsilon"] == 2.5 and d["privacy"]["delta"] == 1e-5
    assert [(g["id"], g["passed"], g["baseline_version"]) for g in d["gates"]] == [
        (flow["gate"].id, True, flow["v1"])
    ]
    assert [(a["from_stage"], a["to_stage"]) for a in d["stages"]] == [
        ("none", "staging"),
        ("staging", "production"),
    ]
    assert [a["reason"] for a in d["rollouts"]] == ["split a=90,b=10"]
    assert d["current_rollout"]["state"] == "steady"
    md = card.markdown()
    for piece in (
        "## Intended use",
        "ana, ben",
        "| lr | 0.5 |",
        "| accuracy |",
        flow["dv"].id,
        "| user_stats | 1 | clicks |",
        "abc1234",
        "(epsilon=2.5, delta=1e-05)-DP",
        f"#{flow['gate'].id}",
        "staging → production",
        "split a=90,b=10",
        "ticket: ML-7",
        "- dataset: demo",
    ):
        assert piece in md, piece
    assert "_not recorded_" not in md  # every section has its record (only the branch lacks one)
    assert "- branch: not recorded" in md
    # the older version's card: v1 was registered with no run, so those sections say so
    old = mj.model_card("clf", version=flow["v1"]).markdown()
    assert "production → archived" in old and "| accuracy | 0.6 |" in old


def test_html_escapes_a_hostile_field_and_is_self_contained(flow):
    h = mj.model_card("clf").html()
    assert "<script>" not in h and "&lt;script&gt;alert(1)&lt;/script&gt;" in h
    assert "src=" not in h and "<link" not in h
    assert mj.model_card("clf")._repr_html_() == h


def test_a_model_with_nothing_recorded_says_not_recorded():
    mj.register_model("bare", {"weights": [1, 2, 3]})
    card = mj.model_card("bare")
    d = card.to_dict()
    assert d["run"] is None and d["data"] == [] and d["gates"] == [] and d["privacy"] is None
    md = card.markdown()
    for title in (
        "Intended use",
        "Owners",
        "Training run",
        "Parameters",
        "Metrics",
        "Training data",
        "Features",
        "Code",
        "Privacy",
        "Gates",
        "Stage history",
        "Rollout history",
        "Version metadata",
    ):
        section = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert section.strip() == "_not recorded_", title
    assert "<em>not recorded</em>" in card.html()
    assert str(card) == md
    g = mj.lineage("bare")
    assert [n["kind"] for n in g.to_dict()["nodes"]] == ["model_version"] and g.edges == []
    assert "<svg" in g._repr_html_()
    with pytest.raises(ModelNotFoundError):
        mj.model_card("nope")
    with pytest.raises(InvalidInputError):
        mj.set_model_card_fields("bare", owners="ana")  # not a list


def test_lineage_graph_nodes_and_typed_edges(flow):
    g = mj.lineage("clf")
    kinds = {n["id"]: n["kind"] for n in g.to_dict()["nodes"]}
    run, v1, v2 = f"run:{flow['run'].id}", "model:clf@v1", "model:clf@v2"
    ts = [i for i, k in kinds.items() if k == "training_set"]
    assert len(ts) == 1
    assert kinds[run] == "run" and kinds[v1] == kinds[v2] == "model_version"
    assert kinds["view:user_stats@1"] == "feature_view" and kinds[f"data:{flow['dv'].id}"] == "data"
    assert kinds["stage:production"] == "stage" and kinds["rollout:clf"] == "rollout"
    edges = {(e["source"], e["target"], e["type"]) for e in g.edges}
    assert {
        (f"data:{flow['dv'].id}", run, "input"),
        (ts[0], run, "input"),
        ("view:user_stats@1", ts[0], "features"),
        (run, v2, "registered"),
        (v2, "stage:production", "in_stage"),
        (v2, "rollout:clf", "serves 90%"),
        (v1, "rollout:clf", "serves 10%"),
    } <= edges
    assert any(t == "labels" and d == ts[0] for _, d, t in edges)
    layer = g.layers()  # data before features before the training set before the run ...
    assert layer["view:user_stats@1"] < layer[ts[0]] < layer[run] < layer[v2] < layer["rollout:clf"]
    dot = g.dot()
    assert dot.startswith('digraph "lineage clf"') and f'"{run}" -> "{v2}"' in dot
    svg = g.svg()
    assert svg.count("<rect") == len(g.nodes) and svg.count("marker-end=") == len(g.edges)
    one = mj.lineage("clf", version=flow["v1"])
    assert {n["id"] for n in one.to_dict()["nodes"]} == {v1, "rollout:clf"}
    # a run (not a model name) still gives the run's data lineage
    assert flow["dv"].id in [v["id"] for v in mj.lineage(flow["run"].id).inputs]


def test_audit_lists_promotions_with_their_gate_evidence(flow):
    df = mj.audit(model="clf", action="transition")
    prod = df.filter(pl.col("to_stage") == "production")
    assert prod["version"].to_list() == [flow["v1"], flow["v2"]]
    assert prod["reason"].to_list() == ["first release", "better accuracy"]
    assert prod["gate_ids"].to_list() == [[], [flow["gate"].id]]
    ev = prod["evidence"][1]
    assert ev.startswith(f"gate #{flow['gate'].id} pass vs v{flow['v1']}")
    assert "not_worse(accuracy, by=0.02): pass interval [" in ev
    # the archived v1 is in the log with why
    arch = df.filter(pl.col("to_stage") == "archived")
    assert arch["reason"].to_list() == [f"replaced by v{flow['v2']}: better accuracy"]
    gates = mj.audit(action="gate")
    assert gates["gate_ids"].to_list() == [[flow["gate"].id]]
    allrows = mj.audit()
    assert {"register", "transition", "gate", "rollout", "card"} <= set(allrows["action"])
    assert mj.audit(user="ops")["action"].to_list() == ["rollout"]
    assert mj.audit(since="1h").height == allrows.height
    assert mj.audit(since=time.time() + 60).height == 0
    with pytest.raises(InvalidInputError, match="since"):
        mj.audit(since="last tuesday")


def test_cli_formats(flow, tmp_path, capsys):
    assert cli_main(["card", "clf", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"]["version"] == flow["v2"] and d["run"]["id"] == flow["run"].id
    assert cli_main(["card", "clf", "--version", str(flow["v1"])]) == 0
    assert capsys.readouterr().out.startswith(f"# Model card: clf v{flow['v1']}\n")
    out = tmp_path / "card.html"
    assert cli_main(["card", "clf", "--format", "html", "--out", str(out)]) == 0
    capsys.readouterr()
    assert out.read_text().startswith("<!doctype html>") and "&lt;script&gt;" in out.read_text()
    assert cli_main(["lineage", "clf"]) == 0
    assert capsys.readouterr().out.startswith('digraph "lineage clf"')
    assert cli_main(["lineage", "clf", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "clf"
    assert cli_main(["audit", "--model", "clf", "--action", "transition", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["to_stage"] for r in rows].count("production") == 2
    assert cli_main(["audit", "--model", "clf", "--action", "gate"]) == 0
    assert f"gate #{flow['gate'].id} pass" in capsys.readouterr().out
    assert cli_main(["card", "nope"]) != 0
