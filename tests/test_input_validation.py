"""Bad input at the call site: metric keys, values, steps and params are checked up front
(clear InvalidInputError naming the argument), and whatever is accepted round-trips
exactly through a real store. Property tests cover the input ranges."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.tracking.writer import resolve_steps

MAX_STEP = 2**63 - 1
# text including lone surrogates (hypothesis leaves them out by default)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
PROPS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _queued(run) -> int:
    return run._writer.pending()


# -- the defects, one test each -----------------------------------------------------------
@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: mj.log_metric("x", 1.0, step=2**63), "step"),
        (lambda: mj.log_metric("x", 10**400), "float64"),
        (lambda: mj.log_metric("\udcff", 1.0), "UTF-8"),
        (lambda: mj.log(**{"": 1.0}), "non-empty"),
        (lambda: mj.log(**{"\udcff": 1.0}), "UTF-8"),
        (lambda: mj.log(step=2**63, x=1.0), "step"),
        (lambda: mj.log(a=1.0, b=10**400), "'b'"),
    ],
)
def test_poisonous_points_are_refused_at_the_call_site(call, needle):
    with mj.start_run() as run:
        mj.log_metric("ok", 1.0)
        with pytest.raises(mj.InvalidInputError, match=needle):
            call()
        mj.log_metric("ok", 2.0)
    # the refused call wrote nothing (mj.log checks every key before buffering any)
    m = mj.metrics(run.id)
    assert m["key"].to_list() == ["ok", "ok"] and m["value"].to_list() == [1.0, 2.0]
    assert mj.runs()["status"].to_list() == ["finished"]


def test_largest_step_and_float_edge_values_are_kept():
    with mj.start_run() as run:
        mj.log_metric("s", 1.0, step=MAX_STEP)
        mj.log_metric("v", 2**1023)  # an int that does convert to a float64
        mj.log_metric("v", -1e308)
    assert mj.metrics(run.id, "s")["step"].to_list() == [MAX_STEP]
    assert mj.metrics(run.id, "v")["value"].to_list() == [float(2**1023), -1e308]


def test_a_poisoned_item_in_the_queue_does_not_stop_later_points():
    """Second line of defence: a point that slipped past the checks (appended to the
    queue directly) is dropped with one warning; everything else is written."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mj.start_run() as run:
            for i in range(3):
                mj.log_metric("y", float(i))
            run._append((run._rid, "bad\udcff", None, 1.0, 0.0))
            run._append((run._rid, "y", 2**64, 1.0, 0.0))
            run._append((run._rid, "y", None, 10**400, 0.0))
            mj.flush()
            for i in range(3, 6):
                mj.log_metric("y", float(i))
            mj.flush()
            run._append((run._rid, "y", -5, 1.0, 0.0))
            mj.log_metric("y", 6.0)
    dropped = [w for w in caught if "dropped" in str(w.message)]
    assert len(dropped) == 1, [str(w.message) for w in caught]
    assert run._writer.dropped == 4
    m = mj.metrics(run.id)
    assert m["key"].unique().to_list() == ["y"]
    assert m["step"].to_list() == list(range(7))
    assert m["value"].to_list() == [float(i) for i in range(7)]
    assert mj.runs()["status"].to_list() == ["finished"]


@pytest.mark.sqlite_only
def test_wide_int_and_surrogate_params_do_not_break_the_runs_table(store_path):
    with mj.start_run("wide", params={"seed": 2**64, "huge": 10**400, "small": 3}) as r1:
        pass
    with pytest.raises(mj.InvalidInputError, match=r"params\['name'\].*UTF-8"):
        mj.start_run("bad", params={"name": "a\udcffb"})
    with pytest.raises(mj.InvalidInputError, match="UTF-8"):
        mj.start_run("bad", params={"k\udcff": 1})
    with mj.start_run("later") as r2:
        with pytest.raises(mj.InvalidInputError, match="UTF-8"):
            mj.log_params({"note": ["ok", "\ud800"]})
        with pytest.raises(mj.InvalidInputError, match="UTF-8"):
            mj.set_tags({"t": "\udcff"})
    # a value stored by an older version (JSON escapes keep a lone surrogate) still reads
    import sqlite3

    c = sqlite3.connect(store_path)
    c.execute("INSERT INTO params VALUES(?, 'legacy', ?)", (r2._rid, '"x\\udcff"'))
    c.commit()
    c.close()
    df = mj.runs()
    assert df.height == 2  # the refused runs were never created
    assert df.schema["params.seed"] == pl.Float64
    row = df.filter(name="wide").row(0, named=True)
    assert row["params.seed"] == float(2**64) and row["params.small"] == 3
    assert row["params.huge"] == str(10**400)
    assert df.filter(name="later")["params.legacy"].item() == "x\\udcff"
    assert mj.get_run(r1.id)["params"] == {"seed": 2**64, "huge": 10**400, "small": 3}


def test_nan_inf_arrays_round_trip_and_int_dict_keys_are_refused():
    arr = np.linspace(0, 1, 2000)
    params = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": -math.inf,
        "np_nan": np.float32("nan"),
        "arr": arr,
        "grid": np.arange(6).reshape(2, 3),
        "tup": (1, 2.5, "x"),
        "nested": {"a": [1, {"b": float("nan")}]},
    }
    with mj.start_run(params=params) as run:
        with pytest.raises(mj.InvalidInputError, match=r"params\['weights'\].*dict key 0"):
            mj.log_params({"weights": {0: 1.0, 1: 2.0}})
    got = mj.get_run(run.id)["params"]
    assert math.isnan(got["nan"]) and math.isnan(got["np_nan"])
    assert got["inf"] == math.inf and got["ninf"] == -math.inf
    assert got["arr"] == arr.tolist()  # every element, exactly: no '...' truncation
    assert got["grid"] == [[0, 1, 2], [3, 4, 5]]
    assert got["tup"] == [1, 2.5, "x"]
    assert math.isnan(got["nested"]["a"][1]["b"])
    assert "weights" not in got
    row = mj.runs().row(0, named=True)
    assert math.isnan(row["params.nan"]) and row["params.inf"] == math.inf


def test_default_run_names_count_only_default_names():
    with mj.start_run("baseline", experiment="e"):
        pass
    names = []
    for _ in range(2):
        with mj.start_run(experiment="e") as r:
            names.append(r.name)
    assert names == ["run-1", "run-2"]
    with mj.start_run("run-7", experiment="e"):
        pass
    with mj.start_run(experiment="e") as r:
        assert r.name == "run-8"
    with mj.start_run(experiment="other") as r:
        assert r.name == "run-1"


def test_run_and_experiment_names_must_be_utf8():
    with pytest.raises(mj.InvalidInputError, match="run name"):
        mj.start_run("a\udcff")
    with pytest.raises(mj.InvalidInputError, match="experiment"):
        mj.start_run("a", experiment="\udcff")
    assert mj.runs().height == 0


# -- property tests over the input ranges ------------------------------------------------
KEYS = st.one_of(ANY_TEXT, st.integers(), st.none(), st.binary(max_size=3))


@PROPS
@given(key=KEYS)
def test_any_key_is_refused_or_round_trips(key):
    valid = isinstance(key, str) and key != "" and _utf8_ok(key) and "\x00" not in key
    with mj.start_run() as run:
        if valid:
            mj.log_metric(key, 1.5)
            if key == "step":  # mj.log's own argument
                mj.log_metric(key, 2.5, step=3)
            else:
                mj.log(step=3, **{key: 2.5})
        else:
            with pytest.raises(mj.InvalidInputError, match="key"):
                mj.log_metric(key, 1.5)
            if isinstance(key, str):
                with pytest.raises(mj.InvalidInputError, match="key"):
                    mj.log(**{key: 2.5})
            assert _queued(run) == 0
    m = mj.metrics(run.id)
    if valid:
        assert m.select("key", "step", "value").rows() == [(key, 0, 1.5), (key, 3, 2.5)]
    else:
        assert m.height == 0


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.booleans(),
    st.floats(width=32).map(np.float32),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
)


def _float_or_none(v) -> float | None:
    try:
        return float(v)
    except OverflowError:
        return None


@PROPS
@given(value=VALUES)
def test_any_number_is_refused_or_stored_exactly(value):
    expect = _float_or_none(value)
    with mj.start_run() as run:
        if expect is None:
            with pytest.raises(mj.InvalidInputError, match="'v'.*float64"):
                mj.log_metric("v", value)
        else:
            mj.log_metric("v", value)
    vals = mj.metrics(run.id, "v")["value"].to_list()
    if expect is None:
        assert vals == []
    else:
        assert len(vals) == 1
        assert (math.isnan(vals[0]) and math.isnan(expect)) or vals[0] == expect


STEPS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=MAX_STEP - 3, max_value=MAX_STEP + 3),
)


@PROPS
@given(steps=st.lists(STEPS, min_size=1, max_size=6))
def test_any_step_is_refused_or_stored(steps):
    kept = []
    with mj.start_run() as run:
        for i, s in enumerate(steps):
            if s is None or 0 <= s <= MAX_STEP:
                mj.log_metric("k", float(i), step=s)
                kept.append((s, float(i)))
            else:
                with pytest.raises(mj.InvalidInputError, match="step"):
                    mj.log_metric("k", float(i), step=s)
    # expected steps: explicit ones as given, automatic ones continue from the previous
    want, nxt = [], 0
    for s, v in kept:
        s = nxt if s is None else s
        if s <= MAX_STEP:  # an automatic step after 2**63 - 1 cannot exist
            want.append((s, v))
        nxt = s + 1
    got = mj.metrics(run.id, "k").select("step", "value").rows()
    assert sorted(got) == sorted(want)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.one_of(st.just(-1), st.integers(0, 2**40)), max_size=30),
    start=st.integers(0, 2**40),
)
def test_resolve_steps_matches_the_sequential_rule(raw, start):
    want, nxt = [], start
    for s in raw:
        s = nxt if s == -1 else s
        want.append(s)
        nxt = s + 1
    assert resolve_steps(np.array(raw, dtype=np.int64), start).tolist() == want


JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        ANY_TEXT,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(ANY_TEXT, st.integers(-3, 3)), inner, max_size=3),
        st.lists(st.floats(allow_nan=True), max_size=5).map(np.array),
    ),
    max_leaves=8,
)


def _refusable(v) -> bool:
    if isinstance(v, str):
        return not _utf8_ok(v)
    if isinstance(v, dict):
        return any(not isinstance(k, str) or _refusable(k) or _refusable(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return any(_refusable(x) for x in v)
    return False


def _norm(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


@PROPS
@given(value=JSONISH)
def test_any_param_is_refused_or_round_trips(value):
    before = mj.runs().height
    if _refusable(value):
        with pytest.raises(mj.InvalidInputError, match=r"params\['p'\]"):
            mj.start_run(params={"p": value})
        assert mj.runs().height == before  # nothing was written
        return
    with mj.start_run(params={"p": value}) as run:
        pass
    got = mj.get_run(run.id)["params"]["p"]
    # NaN != NaN, so compare the JSON texts (NaN tokens, -0.0 and wide ints included)
    assert json.dumps(got) == json.dumps(_norm(value))
    assert mj.runs().height == before + 1  # the table reads whatever was stored


def test_captured_literal_params_skip_dicts_with_non_string_keys():
    """A `%%mlops_run` cell with `weights = {0: 1.0}` must not make the run refuse to
    start: such a literal is not captured as a param (it could not round-trip)."""
    from mlops_jupyter.capture import literal_params

    got = literal_params("weights = {0: 1.0, 1: 3.0}\nlr = 0.1\nopt = {'name': 'adam'}")
    assert got == {"lr": 0.1, "opt": {"name": "adam"}}
    with mj.start_run(params=got) as run:
        pass
    assert mj.get_run(run.id)["params"] == got


def test_a_nul_in_a_metric_key_is_refused_at_the_call_site():
    # PostgreSQL text cannot hold NUL: refused alike on every backend, never at flush time
    with mj.start_run() as run:
        with pytest.raises(mj.InvalidInputError, match="NUL"):
            mj.log_metric("a\x00b", 1.0)
        assert _queued(run) == 0


def test_a_nul_in_names_and_keys_is_refused_before_any_write():
    # run and experiment names, param and tag keys: refused alike on every backend (values
    # are JSON, where a NUL is an escape and reads back exactly)
    before = mj.runs(include_system=True).height
    for kwargs in (
        {"name": "a\x00b"},
        {"experiment": "e\x00"},
        {"params": {"l\x00r": 1}},
        {"tags": {"t\x00": "x"}},
    ):
        with pytest.raises(mj.InvalidInputError, match="NUL"):
            mj.start_run(**kwargs)
    assert mj.runs(include_system=True).height == before
    with mj.start_run(params={"v": "a\x00b"}) as run:
        with pytest.raises(mj.InvalidInputError, match="NUL"):
            run.log_params({"k\x00": 1})
        with pytest.raises(mj.InvalidInputError, match="NUL"):
            run.set_tags({"k\x00": 1})
    assert mj.get_run(run.id)["params"] == {"v": "a\x00b"}
