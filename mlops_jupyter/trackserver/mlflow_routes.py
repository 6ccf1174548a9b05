"""The part of MLflow's REST API (2.0) that the `mlflow` client uses for tracking, answered
from our store: MLflow experiment ids are our experiment ids ("0" is our `default`
experiment), MLflow run ids are our run ids. Errors use MLflow's shape
{"error_code", "message"}; routes not listed here answer ENDPOINT_NOT_FOUND."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from ..errors import RunNotFoundError
from ..store import ingest as ing
from ..store import mlflow_queries as mq
from ..store import runs as rstore
from . import mlflow_search
from .app import BaseHandler, HTTPError, check_value
from .mlflow_convert import (
    DELETED_TAG,
    FROM_MLFLOW,
    LIMITS,
    MAX_BATCH_BYTES,
    MAX_PARAM_VALUE,
    TO_MLFLOW,
    as_int,
    as_num,
    exp_id,
    experiment_json,
    find_experiment,
    load_runs,
    out_num,
    req_str,
    run_info,
    run_json,
)

# ---------------------------------------------------------------------- handlers


class MlflowHandler(BaseHandler):
    def args(self) -> dict[str, Any]:
        """The request's fields: the JSON body of a POST, the query of a GET."""
        if self.request.method == "GET":
            out: dict[str, Any] = {}
            for k, vals in self.request.query_arguments.items():
                dec = [v.decode("utf-8", "replace") for v in vals]
                out[k] = dec[0] if len(dec) == 1 else dec
            return out
        return self.body_json()

    def run_of(self, body: dict) -> ing.RunRow:
        uid = body.get("run_id") or body.get("run_uuid")
        check_value(isinstance(uid, str) and uid != "", "Missing value for 'run_id'.")
        try:
            return ing.run_by_uid(self.store, uid)
        except RunNotFoundError:
            raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{uid}' not found") from None

    async def get(self) -> None:
        await self.handle(lambda: self.do(self.args()))

    async def post(self) -> None:
        await self.handle(lambda: self.do(self.args()))

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        raise HTTPError(404, "ENDPOINT_NOT_FOUND", "not supported")


class CreateExperiment(MlflowHandler):
    def do(self, body):
        name = req_str(body, "name")
        assert name is not None
        check_value(bool(name.strip()), "experiment name must not be empty")
        if ing.experiments(self.store, name=name):
            raise HTTPError(
                400, "RESOURCE_ALREADY_EXISTS", f"Experiment(name={name}) already exists."
            )
        eid = ing.ensure_experiment(self.store, name)
        return {"experiment_id": exp_id(eid, name)}


class GetExperiment(MlflowHandler):
    def do(self, body):
        row = find_experiment(self.store, req_str(body, "experiment_id"))
        return {"experiment": experiment_json(*row)}


class GetExperimentByName(MlflowHandler):
    def do(self, body):
        name = req_str(body, "experiment_name")
        rows = ing.experiments(self.store, name=name)
        if not rows:
            raise HTTPError(
                404, "RESOURCE_DOES_NOT_EXIST", f"Could not find experiment with name '{name}'"
            )
        return {"experiment": experiment_json(*rows[0])}


class SearchExperiments(MlflowHandler):
    def do(self, body):
        rows = ing.experiments(self.store)
        filt = body.get("filter")
        if filt:
            clauses = mlflow_search.parse_filter(filt)
            keep = []
            for eid, name, created in rows:
                probe = {"attributes": {"name": name, "run_name": name}, "tags": {}}
                if all(c({**probe, "params": {}, "metrics": {}}) for c in clauses):
                    keep.append((eid, name, created))
            rows = keep
        page, token = _page(rows, body, 1000, 50_000)
        out: dict[str, Any] = {"experiments": [experiment_json(*r) for r in page]}
        if token:
            out["next_page_token"] = token
        return out


def _page_args(body: dict, default: int, most: int) -> tuple[int, int]:
    """(max_results, offset) of a paged request; the page token is the offset in digits."""
    n = as_int(body.get("max_results"), "max_results", default)
    assert n is not None
    check_value(0 < n <= most, f"max_results must be 1 to {most}")
    tok = body.get("page_token") or "0"
    check_value(isinstance(tok, str) and tok.isascii() and tok.isdigit(), "invalid page_token")
    return n, int(tok)


def _page(items: list, body: dict, default: int, most: int) -> tuple[list, str | None]:
    n, start = _page_args(body, default, most)
    page = items[start : start + n]
    return page, (str(start + n) if start + n < len(items) else None)


class CreateRun(MlflowHandler):
    def do(self, body):
        eid, ename, _ = find_experiment(self.store, body.get("experiment_id") or "0")
        tags = _kv_list(body.get("tags"), "tags")
        name = req_str(body, "run_name", False) or tags.get("mlflow.runName") or None
        start = as_int(body.get("start_time"), "start_time")
        user = req_str(body, "user_id", False) or tags.get("mlflow.user")
        row = ing.create_run(
            self.store,
            ename,
            name,
            None,
            [(k, json.dumps(v)) for k, v in tags.items()],
            host=tags.get("mlflow.source.hostname") or "mlflow-client",
            username=user,
            start_time=start / 1000 if start is not None else None,
        )
        (d,) = load_runs(self.store, [row])
        return {"run": run_json(d)}


def _kv_list(raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    check_value(isinstance(raw, list), f"{what} must be a list")
    out = {}
    for i, t in enumerate(raw):
        check_value(isinstance(t, dict), f"{what}[{i}] must be an object")
        k, v = t.get("key"), t.get("value", "")
        check_value(isinstance(k, str) and k != "", f"{what}[{i}].key must be a non-empty string")
        check_value(isinstance(v, str), f"{what}[{i}].value must be a string")
        check_value(len(k) <= 250, f"{what}[{i}].key is longer than 250 characters")
        rstore.check_text(k, what)
        rstore.check_text(v, what)
        out[k] = v
    return out


class GetRun(MlflowHandler):
    def do(self, body):
        (d,) = load_runs(self.store, [self.run_of(body)])
        return {"run": run_json(d)}


class UpdateRun(MlflowHandler):
    def do(self, body):
        row = self.run_of(body)
        status = body.get("status")
        if status is not None:
            check_value(status in FROM_MLFLOW, f"status must be one of {sorted(FROM_MLFLOW)}")
            end = as_int(body.get("end_time"), "end_time")
            ing.set_status(
                self.store, row.rid, FROM_MLFLOW[status], end / 1000 if end is not None else None
            )
        name = req_str(body, "run_name", False)
        if name:
            ing.rename_run(self.store, row.rid, name)
        (d,) = load_runs(self.store, [ing.run_by_id(self.store, row.rid)])
        return {"run_info": run_info(d)}


class DeleteRun(MlflowHandler):
    stage = "deleted"

    def do(self, body):
        row = self.run_of(body)
        if self.stage == "deleted":
            rstore.set_kv(self.store, "tags", row.rid, {DELETED_TAG: "deleted"})
        else:
            ing.delete_tag(self.store, row.rid, DELETED_TAG)
        return {}


class RestoreRun(DeleteRun):
    stage = "active"


class SearchRuns(MlflowHandler):
    def do(self, body):
        return search_runs(self.store, body)


def search_runs(store, body: dict[str, Any]) -> dict[str, Any]:
    """The answer of runs/search for the request fields `body`: filter, order and page in
    SQL (store/mlflow_queries.py), then params, tags and latest metrics of the page only."""
    ids = body.get("experiment_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    check_value(isinstance(ids, list), "experiment_ids must be a list")
    exps = [find_experiment(store, i)[0] for i in ids]
    view = body.get("run_view_type") or "ACTIVE_ONLY"
    view = {1: "ACTIVE_ONLY", 2: "DELETED_ONLY", 3: "ALL"}.get(view, view)
    check_value(view in mq.VIEWS, "bad run_view_type")
    terms = mlflow_search.parse_terms(body.get("filter"))
    order = body.get("order_by") or []
    check_value(
        isinstance(order, list) and all(isinstance(o, str) for o in order),
        "order_by must be a list of strings",
    )
    orders = mlflow_search.parse_order(order)
    n, start = _page_args(body, 1000, 50_000)
    pushed = [t for t in terms if mq.can_push(t)]
    rest = [mlflow_search.predicate(t) for t in terms if not mq.can_push(t)]
    if not rest and all(mq.can_order(o) for o in orders):
        rows = mq.search_runs(
            store, exps, view, pushed, orders, TO_MLFLOW, limit=n + 1, offset=start
        )
        page = load_runs(store, rows[:n])
        token = str(start + n) if len(rows) > n else None
    else:
        # a term or order SQL cannot express exactly (ILIKE, params compared as numbers,
        # order by a param...): SQL narrows by the rest, the reference evaluator finishes
        rows = mq.search_runs(store, exps, view, pushed, [], TO_MLFLOW)
        runs = [r for r in load_runs(store, rows) if all(c(r) for c in rest)]
        page, token = _page(mlflow_search.order_runs(runs, order), body, 1000, 50_000)
    out: dict[str, Any] = {"runs": [run_json(d) for d in page]}
    if token:
        out["next_page_token"] = token
    return out


class LogMetric(MlflowHandler):
    def do(self, body):
        row = self.run_of(body)
        key = req_str(body, "key")
        value = as_num(body.get("value"), "value")
        ts = as_int(body.get("timestamp"), "timestamp", int(time.time() * 1000))
        step = as_int(body.get("step"), "step", 0)
        _append(self.store, row.rid, [(key, value, ts, step)])
        return {}


def _append(store, rid: int, points: list[tuple[str, float, int, int]]) -> None:
    by_key: dict[str, list] = {}
    for p in points:
        by_key.setdefault(p[0], []).append(p)
    chunks = [
        ing.Chunk(
            rid,
            k,
            None,
            np.array([p[3] for p in pts], np.int64),
            np.array([p[2] for p in pts], np.int64),
            np.array([p[1] for p in pts], np.float64),
        )
        for k, pts in by_key.items()
    ]
    for p in points:
        check_value(p[3] >= 0, "step must be >= 0")
    ing.append(store, chunks)


class LogParam(MlflowHandler):
    def do(self, body):
        row = self.run_of(body)
        key, value = req_str(body, "key"), body.get("value", "")
        params = _kv_list([{"key": key, "value": value}], "param")
        check_value(len(value) <= MAX_PARAM_VALUE, f"param value over {MAX_PARAM_VALUE} chars")
        rstore.set_kv(self.store, "params", row.rid, params)
        ing.beat(self.store, row.rid)
        return {}


class SetTag(MlflowHandler):
    def do(self, body):
        row = self.run_of(body)
        tags = _kv_list([{"key": req_str(body, "key"), "value": body.get("value", "")}], "tag")
        _set_tags(self.store, row, tags)
        return {}


def _set_tags(store, row: ing.RunRow, tags: dict[str, str]) -> None:
    if tags.get("mlflow.runName"):
        ing.rename_run(store, row.rid, tags["mlflow.runName"])
    if tags:
        rstore.set_kv(store, "tags", row.rid, tags)
        ing.beat(store, row.rid)


class DeleteTag(MlflowHandler):
    def do(self, body):
        row = self.run_of(body)
        key = req_str(body, "key")
        if not ing.delete_tag(self.store, row.rid, key):
            raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"No tag with name: {key}")
        return {}


class LogBatch(MlflowHandler):
    def do(self, body):
        check_value(
            len(self.body_bytes()) <= MAX_BATCH_BYTES,
            f"Batched logging API requests must be at most {MAX_BATCH_BYTES} bytes",
        )
        for what, most in LIMITS.items():
            got = body.get(what) or []
            check_value(isinstance(got, list), f"{what} must be a list")
            check_value(
                len(got) <= most,
                f"A batch logging request can have at most {most} {what}. Got {len(got)} {what}.",
            )
        row = self.run_of(body)
        params = _kv_list(body.get("params"), "params")
        for k, v in params.items():
            check_value(len(v) <= MAX_PARAM_VALUE, f"param {k!r}: value over {MAX_PARAM_VALUE}")
        tags = _kv_list(body.get("tags"), "tags")
        points = []
        for i, m in enumerate(body.get("metrics") or []):
            check_value(isinstance(m, dict), f"metrics[{i}] must be an object")
            key = m.get("key")
            check_value(isinstance(key, str) and key != "", f"metrics[{i}].key: a string")
            rstore.check_text(key, "metric key")
            points.append(
                (
                    key,
                    as_num(m.get("value"), f"metrics[{i}].value"),
                    as_int(m.get("timestamp"), f"metrics[{i}].timestamp", int(time.time() * 1000)),
                    as_int(m.get("step"), f"metrics[{i}].step", 0),
                )
            )
        if params:
            rstore.set_kv(self.store, "params", row.rid, params)
        _set_tags(self.store, row, tags)
        if points:
            _append(self.store, row.rid, points)
        return {}


class GetMetricHistory(MlflowHandler):
    def do(self, body):
        row = self.run_of(body)
        key = req_str(body, "metric_key")
        steps, ts, vals = ing.metric_history(self.store, row.rid, key)
        pts = [
            {"key": key, "value": out_num(v), "timestamp": int(t), "step": int(s)}
            for s, t, v in zip(steps.tolist(), ts.tolist(), vals.tolist())
        ]
        page, token = _page(pts, body, max(1, len(pts)), 10**9)
        out: dict[str, Any] = {"metrics": page}
        if token:
            out["next_page_token"] = token
        return out


class SearchLoggedModels(MlflowHandler):
    """MLflow 3's logged models are not kept here: a search finds none (the client lists a
    run's artifacts through this)."""

    def do(self, body):
        return {"models": []}


_ROUTES = {
    "logged-models/search": SearchLoggedModels,
    "experiments/create": CreateExperiment,
    "experiments/get": GetExperiment,
    "experiments/get-by-name": GetExperimentByName,
    "experiments/search": SearchExperiments,
    "runs/create": CreateRun,
    "runs/get": GetRun,
    "runs/update": UpdateRun,
    "runs/delete": DeleteRun,
    "runs/restore": RestoreRun,
    "runs/search": SearchRuns,
    "runs/log-metric": LogMetric,
    "runs/log-parameter": LogParam,
    "runs/set-tag": SetTag,
    "runs/delete-tag": DeleteTag,
    "runs/log-batch": LogBatch,
    "metrics/get-history": GetMetricHistory,
}

ROUTES = [
    (rf"/{prefix}/2\.0/mlflow/{path}", handler)
    for prefix in ("api", "ajax-api")
    for path, handler in _ROUTES.items()
]
