"""mj.ab_report over a real store's prediction log and feedback (rows as the serving
workers write them, through the store's serving operations), and mj.promote_winner through
the registry."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import mlops_jupyter as mj
from mlops_jupyter.registry import model_version
from mlops_jupyter.serving.abtest import report
from mlops_jupyter.store import serving as sstore
from mlops_jupyter.tracking.api import current_store


def _traffic(model: str, variant: str, version: int, outcomes, t0: float = 1e9) -> None:
    """One answered request per outcome (None: no feedback came), then the feedback."""
    store = current_store()
    rows, fb = [], []
    for i, y in enumerate(outcomes):
        rid = uuid.uuid4().hex
        rows.append((rid, model, version, variant, t0 + i, 3.0, 200, None, 1, 1, "[0]", "w:1"))
        if y is not None:
            fb.append((rid, y))
    # a failed request and one of another model: neither counts
    rows.append((uuid.uuid4().hex, model, version, variant, t0, 1.0, 500, "boom", 1, 1, None, "w"))
    rows.append((uuid.uuid4().hex, "other", 1, variant, t0, 1.0, 200, None, 1, 1, "[0]", "w"))
    sstore.log_predictions(store, rows)
    for rid, y in fb:
        sstore.add_feedback(store, rid, y)


def _two_versions(name: str) -> tuple[int, int]:
    v1 = mj.register_model(name, {"w": 1})
    v2 = mj.register_model(name, {"w": 2})
    mj.promote_model(name, v1, "staging")
    mj.promote_model(name, v1, "production")
    return v1, v2


def test_binary_report_equals_the_statistics_on_the_same_counts_and_promotes():
    v1, v2 = _two_versions("clf")
    rng = np.random.default_rng(0)
    a = (rng.random(3000) < 0.10).astype(int).tolist()
    b = (rng.random(3000) < 0.16).astype(int).tolist()
    _traffic("clf", "v1", v1, a + [None] * 50)
    # feedback as booleans, and a request whose feedback was corrected (the newest counts)
    _traffic("clf", "v2", v2, [bool(x) for x in b])
    rep = mj.ab_report("clf")  # control: the variant serving the production version
    assert rep.control == "v1" and rep.metric == "binary"
    want = report({"v1": (sum(a), len(a)), "v2": (sum(b), len(b))}, "v1", metric="binary")
    assert rep.to_dict() == want.to_dict()
    assert rep["v2"].action == "promote v2" and rep.winner == "v2"
    # the newest feedback of a request counts: a failure of v2 corrected to a success
    rows = sstore.outcomes(current_store(), "clf")["v2"]
    rid = next(r["request_id"] for r in rows if r["value"] is False)
    sstore.add_feedback(current_store(), rid, 0)
    sstore.add_feedback(current_store(), rid, 1)
    again = mj.ab_report("clf")["v2"]
    assert again.n == len(b) and again.estimate == pytest.approx((sum(b) + 1) / len(b))
    assert mj.promote_winner("clf", rep) == v2
    assert model_version("clf", v2)["stage"] == "production"
    assert model_version("clf", v1)["stage"] == "archived"
    hist = mj.model_history("clf")
    assert any("A/B report" in str(h.get("reason")) for h in hist.to_dicts())


def test_continuous_report_no_winner_and_windows():
    v1, v2 = _two_versions("reg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(5.0, 1.0, 400), rng.normal(5.0, 1.0, 400)
    _traffic("reg", "blue", v1, a.tolist(), t0=1e9)
    _traffic("reg", "green", v2, b.tolist(), t0=2e9)
    rep = mj.ab_report("reg", control="blue")
    assert rep.metric == "continuous" and rep.winner is None
    want = report({"blue": a, "green": b}, "blue", metric="continuous")
    assert rep.to_dict() == want.to_dict()
    assert mj.promote_winner("reg", rep) is None
    assert model_version("reg", v1)["stage"] == "production"
    # a time window that holds one variant only
    with pytest.raises(mj.InvalidInputError, match="two or more"):
        mj.ab_report("reg", control="blue", until=1.5e9)


def test_bad_input_is_refused_clearly():
    with pytest.raises(mj.InvalidInputError, match="no answered predictions"):
        mj.ab_report("nothing")
    with pytest.raises(mj.InvalidInputError, match="model must be"):
        mj.ab_report("")
    v1, v2 = _two_versions("m")
    _traffic("m", "x", v1, [1, 0, 1])
    _traffic("m", "y", v2, [None, None])
    with pytest.raises(mj.InvalidInputError, match="two or more"):
        mj.ab_report("m", control="x")
    _traffic("m", "y", v2, [0.5, float("nan")])
    with pytest.raises(mj.InvalidInputError, match="finite"):
        mj.ab_report("m", control="x")
    _two_versions("s")
    _traffic("s", "x", 1, [1, 0])
    _traffic("s", "y", 2, ["clicked"])
    with pytest.raises(mj.InvalidInputError, match="needs numbers"):
        mj.ab_report("s", control="x")
    # no production version among the variants: the control must be named
    _two_versions("n")
    _traffic("n", "p", 2, [1, 0])
    _traffic("n", "q", 2, [0, 1])
    with pytest.raises(mj.InvalidInputError, match="control="):
        mj.ab_report("n")
    with pytest.raises(mj.InvalidInputError, match="metric must be"):
        mj.ab_report("n", control="p", metric="ratio")
    with pytest.raises(mj.InvalidInputError, match="control"):
        mj.ab_report("n", control="zz")
