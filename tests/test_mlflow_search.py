"""MLflow's search_runs in SQL (store/mlflow_queries.py, through the route's search_runs)
gives exactly what the reference evaluator (load every run, filter and sort in Python, the
route before the SQL path) gives: same runs, same order, same pages, over random runs and
random filters/orders on the test backend (SQLite, or PostgreSQL with
MLOPS_TEST_BACKEND=postgresql)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_jupyter.store import ingest as ing
from mlops_jupyter.store import mlflow_queries as mq
from mlops_jupyter.store import open_store
from mlops_jupyter.store import runs as rstore
from mlops_jupyter.trackserver import mlflow_search
from mlops_jupyter.trackserver.app import HTTPError
from mlops_jupyter.trackserver.mlflow_convert import DELETED_TAG, load_runs, run_json
from mlops_jupyter.trackserver.mlflow_routes import _page, search_runs

# values chosen to hit the edges: LIKE/GLOB specials, quotes, JSON-looking text, case,
# non-ASCII, empty text, numbers as text and as JSON numbers
TEXTS = ["a", "A", "a\\b", "ab", "a%b", "a_b", "a*b", "a[b", "b?", "0.01", "0.1", "1", "10", "-1"]
TEXTS += [
    "AB",
    "Ab",
    "aB",
    "",
    "[1, 2]",
    "true",
    "null",
    '"q"',
    "it's",
    "é",
    "É",
    "ü-x",
    "a b",
    "Zz",
    "1e5",
]
JSONS: list[Any] = [0.01, 1, 10, -1, True, None, [1, 2], {"k": "v"}, 1e16, 0.5]
KEYS = ["lr", "opt", "x y", "n"]
STATUSES = ["running", "finished", "failed", "crashed", "killed", "stopped"]
EXPS = ["s1", "s2"]


def _reference(store, body: dict[str, Any]) -> dict[str, Any]:
    """The route before the SQL path: every run loaded, then filter, order and page."""
    exps = [ing.experiments(store, name=n)[0][0] for n in body["names"]]
    view = body.get("run_view_type") or "ACTIVE_ONLY"
    clauses = mlflow_search.parse_filter(body.get("filter"))
    runs = [
        r
        for r in load_runs(store, ing.runs_in(store, exps))
        if (view == "ALL" or (r["stage"] == "active") == (view == "ACTIVE_ONLY"))
        and all(c(r) for c in clauses)
    ]
    runs = mlflow_search.order_runs(runs, body.get("order_by") or [])
    page, token = _page(runs, body, 1000, 50_000)
    out: dict[str, Any] = {"runs": [run_json(d) for d in page]}
    if token:
        out["next_page_token"] = token
    return out


@pytest.fixture(scope="module")
def runs_store(tmp_path_factory, request):
    """~60 runs over two experiments with random params, tags, metrics, names, statuses,
    start times (millisecond ties and exact .5 ms halves) and MLflow deletes."""
    from conftest import BACKEND

    if BACKEND == "postgresql":
        loc: Any = request.getfixturevalue("pg_server").new_database()
    else:
        loc = tmp_path_factory.mktemp("search") / "store.db"
    store = open_store(loc)
    rnd = random.Random(7)
    for _ in range(60):
        params = {k: rnd.choice(TEXTS + JSONS) for k in KEYS if rnd.random() < 0.7}
        tags = {k: rnd.choice(TEXTS) for k in KEYS if rnd.random() < 0.5}
        if rnd.random() < 0.2:
            tags["mlflow.user"] = rnd.choice(TEXTS)
        name = rnd.choice([None, "", *TEXTS])
        row = ing.create_run(
            store,
            rnd.choice(EXPS),
            name or None,
            params,
            tags,
            username=rnd.choice([None, "", "bob", "Ann", "ann", "BOB"]),
            # whole ms, ties on one ms, exact halves (x.5 ms) and odd fractions
            start_time=rnd.choice([0.0, 1.5, 2.0, 2.0005, 1700000000.0, 1700000000.0015])
            + rnd.choice([0, 0, 1, 0.0005, 0.0015, 0.0025, 1e-7]),
        )
        if rnd.random() < 0.3:
            rstore.set_kv(store, "tags", row.rid, {DELETED_TAG: "deleted"})
        status = rnd.choice(STATUSES)
        if status != "running":
            ing.set_status(store, row.rid, status, rnd.choice([None, 5.0, 1700000001.25]))
        chunks = []
        for key in ("loss", "acc", "m x"):
            if rnd.random() < 0.7:
                v = rnd.choice([0.1, 0.5, 0.9, -0.0, 0.0, math.inf, -math.inf, math.nan, 2.0])
                ts = np.array([1], np.int64)
                chunks.append(ing.Chunk(row.rid, key, None, None, ts, np.array([v])))
        ing.append(store, chunks)
    yield store
    store.close()


def _q(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


ENTITIES = {
    "params": KEYS,
    "tags": [*KEYS, "mlflow.runName", "mlflow.user", DELETED_TAG],
    "metrics": ["loss", "acc", "m x", "none"],
    "attributes": ["status", "run_name", "name", "run_id", "user_id", "start_time", "end_time"]
    + ["artifact_uri", "lifecycle_stage", "nope"],
}
STR_WANTS = [*TEXTS, "RUNNING", "FINISHED", "FAILED", "KILLED", "bob", "%", "_", "a%", "%b"]
STR_WANTS += ["1700000000000", "2000", "%0%", "mlflow-artifacts:/%", "a%", "A%", "_", "%*%"]
STR_WANTS += ["[%", "%?", "é%", "É", "finished", "f%", "%ED", "ann%", "B%", "a[b", "a*b", "a\\%"]
NUM_WANTS = ["0.5", "0", "-0.0", "2", "0.1", "1e999", "-1e999", "1500", "2000", "2001"]
NUM_WANTS += ["1700000000000", "1700000000002", "1700000001250", "5000", "10"]


@st.composite
def _term(draw) -> str:
    entity = draw(st.sampled_from(sorted(ENTITIES)))
    key = draw(st.sampled_from(ENTITIES[entity]))
    ident = f"{entity}.`{key}`"
    if entity == "metrics":
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
        return f"{ident} {op} {draw(st.sampled_from(NUM_WANTS))}"
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN"]))
    if op in ("IN", "NOT IN"):
        vals = draw(st.lists(st.sampled_from(STR_WANTS), max_size=3))
        return f"{ident} {op} ({', '.join(_q(v) for v in vals)})"
    if op not in ("LIKE", "ILIKE") and draw(st.integers(0, 3)) == 0:
        return f"{ident} {op} {draw(st.sampled_from(NUM_WANTS))}"
    return f"{ident} {op} {_q(draw(st.sampled_from(STR_WANTS)))}"


@st.composite
def _sql_term(draw) -> str:
    """A term the SQL path takes whole (drawn more often: they are what it must match)."""
    entity = draw(st.sampled_from(["params", "tags", "attributes"]))
    if entity == "attributes":
        ident = f"attributes.{draw(st.sampled_from(['status', 'run_name', 'user_id', 'id']))}"
        op = draw(st.sampled_from(["=", "!=", "<", ">=", "LIKE", "LIKE", "IN", "NOT IN"]))
    else:
        ident = f"{entity}.`{draw(st.sampled_from(KEYS))}`"
        op = draw(st.sampled_from(["=", "!=", "IN", "NOT IN"]))
    wants = st.sampled_from([*STR_WANTS, "0.01", "1", "true", "null", "[1, 2]", '{"k": "v"}'])
    if op in ("IN", "NOT IN"):
        vals = draw(st.lists(wants, max_size=3))
        return f"{ident} {op} ({', '.join(_q(v) for v in vals)})"
    return f"{ident} {op} {_q(draw(wants))}"


@st.composite
def _order(draw) -> str:
    entity = draw(st.sampled_from(sorted(ENTITIES)))
    key = draw(st.sampled_from(ENTITIES[entity]))
    return f"{entity}.`{key}` {draw(st.sampled_from(['', 'ASC', 'DESC', 'desc']))}".strip()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    terms=st.lists(st.one_of(_term(), _sql_term(), _sql_term()), max_size=3),
    order=st.lists(_order(), max_size=2),
    names=st.sampled_from([["s1"], ["s2"], ["s1", "s2"]]),
    view=st.sampled_from([None, "ACTIVE_ONLY", "DELETED_ONLY", "ALL"]),
    size=st.sampled_from([1, 3, 7, 1000]),
)
def test_sql_search_matches_the_reference(runs_store, terms, order, names, view, size):
    body: dict[str, Any] = {"filter": " and ".join(terms), "order_by": order, "names": names}
    body["max_results"] = size
    if view:
        body["run_view_type"] = view
    ids = [str(ing.experiments(runs_store, name=n)[0][0]) for n in names]
    pages = 0
    token: str | None = None
    while True:  # every page, following the tokens
        if token:
            body["page_token"] = token
        try:
            want = _reference(runs_store, body)
        except HTTPError as e:
            with pytest.raises(HTTPError) as got_e:
                search_runs(runs_store, {**body, "experiment_ids": ids})
            assert (got_e.value.status, got_e.value.code) == (e.status, e.code)
            assert got_e.value.message == e.message
            return
        got = search_runs(runs_store, {**body, "experiment_ids": ids})
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), body
        pages += 1
        token = got.get("next_page_token")
        if not token or pages > 70:
            break


def test_common_filters_run_in_sql():
    """The filters clients write most go to SQL whole (the page costs the page)."""
    for text in [
        "metrics.loss < 0.5 and params.lr = '0.01'",
        "attributes.status = 'FINISHED' and tags.team != 'a' and params.opt IN ('adam', 'sgd')",
        "attributes.run_name LIKE 'run-%' and attributes.start_time >= 1700000000000",
    ]:
        assert all(mq.can_push(t) for t in mlflow_search.parse_terms(text)), text
    for item in ["metrics.loss ASC", "attributes.start_time DESC", "run_name"]:
        assert all(mq.can_order(o) for o in mlflow_search.parse_order([item])), item


def test_bad_filters_are_refused_before_any_read(runs_store):
    for text in ["params.lr LIKE 5", "metrics.loss = 'a'", "x.y = 1", "params.a = 1 or b = 2"]:
        with pytest.raises(HTTPError) as e:
            search_runs(runs_store, {"experiment_ids": ["0"], "filter": text})
        assert e.value.status == 400 and e.value.code == "INVALID_PARAMETER_VALUE"


def test_every_single_term_matches_the_reference(runs_store):
    """Each comparison the SQL path takes, alone, over every value kind in the store: the
    same run ids in the same order as the evaluator (every run loaded once)."""
    names = ["s1", "s2"]
    exps = [ing.experiments(runs_store, name=n)[0][0] for n in names]
    loaded = load_runs(runs_store, ing.runs_in(runs_store, exps))
    ids = [str(e) for e in exps]
    str_idents = ["params.lr", "params.`x y`", "tags.opt", "tags.n", "attributes.status"]
    str_idents += ["run_name", "attributes.user_id", "attributes.id"]
    wants = [_q(w) for w in [*STR_WANTS, "0.01", "1", "true", "null", "[1, 2]", '{"k": "v"}']]
    filters = [
        f"{i} {op} {w}"
        for i in str_idents
        for op in ["=", "!=", "<", ">=", "LIKE"]
        for w in wants
        if not (op in ("<", ">=", "LIKE") and i.startswith(("params", "tags")))
    ]
    filters += [f"{i} IN ({w}, {_q('a')})" for i in str_idents for w in wants]
    filters += [f"{i} NOT IN ({w})" for i in str_idents for w in wants[::3]]
    filters += [
        f"{i} {op} {w}"
        for i in ["metrics.loss", "metrics.`m x`", "start_time", "attributes.end_time"]
        for op in ["=", "!=", "<", "<=", ">", ">="]
        for w in NUM_WANTS
    ]
    checked = 0
    for f in filters:
        terms = mlflow_search.parse_terms(f)
        if not all(mq.can_push(t) for t in terms):
            continue
        preds = [mlflow_search.predicate(t) for t in terms]
        want = [r["run_id"] for r in mlflow_search.order_runs(loaded, []) if preds[0](r)]
        body = {"experiment_ids": ids, "filter": f, "run_view_type": "ALL"}
        got = [r["info"]["run_id"] for r in search_runs(runs_store, body)["runs"]]
        assert got == want, f
        checked += 1
    assert checked > 1000
