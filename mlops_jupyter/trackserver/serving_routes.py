"""Model serving over the tracking server (`/api/v1/serving/...`), so a serving process, the
rollout commands, `mj.ab_report` and `mj.serving_drift` of a remote client work as on the
server's store (client: remote/serving.py).

What a serving process writes arrives in batches from its background threads: prediction
rows (`POST .../predictions`), feedback, one row per closed input window with its drift
alert (`POST .../profiles`, both in one transaction) and the layouts a worker refused. A
batch sent again after a lost answer stores nothing twice: a prediction row already stored
(same request id, variant, worker and time) and a window already stored (same model,
version, variant, worker and start) are skipped. What it reads (the rollout layout, the
training data a version is compared with) are GETs. Rollout changes run the same functions
as `mlops-jupyter rollout` on a local store (serving/canary.py) against this store.

Scopes: reads need `read`; the serving process's writes (predictions, feedback, windows,
refusals) and the canary controller's tick need `write`; changing a rollout needs `admin`
(it decides which version answers production traffic, as a promotion to production does).
Every rollout change is in the registry's audit log under the token's name."""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

from ..errors import InvalidInputError
from ..store import serving as sstore
from ..store import serving_profiles as sp
from ..store import serving_rollouts as sr
from .app import HTTPError, check_value
from .registry_routes import _Handler, _name, _version

MAX_ROWS = 10_000  # prediction rows per request (a worker sends at most 2,000 at a time)
_TEXT = 100_000


def _str(v: Any, what: str, optional: bool = True, limit: int = _TEXT) -> str | None:
    if v is None and optional:
        return None
    check_value(isinstance(v, str) and len(v) <= limit, f"{what!r} must be a string")
    check_value("\x00" not in v, f"{what!r} must not contain NUL")
    return v


def _int(v: Any, what: str, optional: bool = True, lo: int = 0, hi: int = 2**62) -> int | None:
    if v is None and optional:
        return None
    check_value(
        isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
        f"{what!r} must be an integer in [{lo}, {hi}]",
    )
    return v


def _num(v: Any, what: str, optional: bool = True) -> float | None:
    if v is None and optional:
        return None
    check_value(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        f"{what!r} must be a finite number",
    )
    return float(v)


def _bool(v: Any, what: str) -> bool | None:
    check_value(v is None or isinstance(v, bool), f"{what!r} must be true, false or null")
    return v


def _plain(v: Any, what: str) -> Any:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"{what!r} must be plain JSON") from None
    return v


def _prediction(r: Any, i: int) -> tuple:
    """One row of POST predictions (a list in store/serving.PREDICTION_COLS order)."""
    w = f"rows[{i}]"
    n = len(sstore.PREDICTION_COLS)
    check_value(isinstance(r, list) and len(r) == n, f"{w!r} must be a list of {n} values")
    rid, model, version, variant, ts, lat, status, err, nrows, bsize, out, worker = r
    return (
        _str(rid, f"{w}.request_id", optional=False, limit=200),
        _name(model) if isinstance(model, str) else _str(model, f"{w}.model", optional=False),
        _int(version, f"{w}.version", lo=1),
        _str(variant, f"{w}.variant", limit=200),
        _num(ts, f"{w}.ts", optional=False),
        _num(lat, f"{w}.latency_ms"),
        _int(status, f"{w}.status", optional=False, lo=100, hi=599),
        _str(err, f"{w}.error"),
        _int(nrows, f"{w}.n_rows"),
        _int(bsize, f"{w}.batch_size"),
        _str(out, f"{w}.outputs"),
        _str(worker, f"{w}.worker", limit=300),
    )


def _new_rows(store: Any, rows: list[tuple]) -> list[tuple]:
    """The rows not stored yet (a batch repeated after a lost answer stores nothing)."""
    have: set[tuple] = set()
    rids = sorted({r[0] for r in rows})
    for i in range(0, len(rids), 500):
        part = rids[i : i + 500]
        marks = ",".join("?" for _ in part)
        have.update(
            store.read(
                "SELECT request_id, variant, worker, ts FROM serving_predictions"
                f" WHERE request_id IN ({marks})",
                part,
                "read predictions",
            )
        )
    return [r for r in rows if (r[0], r[3], r[11], r[4]) not in have]


class PredictionsHandler(_Handler):
    """POST {"rows": [[request_id, model, version, variant, ts, latency_ms, status, error,
    n_rows, batch_size, outputs, worker], ...]}: append to the prediction log; answers
    {"stored", "duplicates"}."""

    async def post(self) -> None:
        def go() -> dict:
            rows = self.body_json().get("rows")
            check_value(isinstance(rows, list), "'rows' must be a list")
            check_value(len(rows) <= MAX_ROWS, f"at most {MAX_ROWS} rows a request")
            checked = [_prediction(r, i) for i, r in enumerate(rows)]
            new = _new_rows(self.store, checked) if checked else []
            sstore.log_predictions(self.store, new)
            return {"stored": len(new), "duplicates": len(checked) - len(new)}

        await self.go(go)


class FeedbackHandler(_Handler):
    """POST {"request_id", "value", "ts"?}: ground truth of an answered request."""

    async def post(self) -> None:
        def go() -> dict:
            body = self.body_json()
            rid = _str(body.get("request_id"), "request_id", optional=False, limit=200)
            check_value("value" in body, "feedback needs a 'value'")
            value = _plain(body["value"], "value")
            ts = _num(body.get("ts"), "ts")
            sstore.add_feedback(self.store, rid, value, ts)
            return {"stored": True, "request_id": rid}

        await self.go(go)


_PROFILE_KEYS = {
    "version": lambda v, w: _int(v, w, optional=False, lo=1),
    "variant": lambda v, w: _str(v, w, optional=False, limit=200),
    "worker": lambda v, w: _str(v, w, limit=300),
    "window_start": lambda v, w: _num(v, w, optional=False),
    "window_end": lambda v, w: _num(v, w, optional=False),
    "n_rows": lambda v, w: _int(v, w, optional=False),
    "n_sampled": lambda v, w: _int(v, w, optional=False),
    "n_requests": lambda v, w: _int(v, w, optional=False),
    "reference": lambda v, w: _str(v, w, limit=200),
    "drifted": lambda v, w: _bool(v, w),
    "drift_share": lambda v, w: _num(v, w),
}


def _window_row(row: Any) -> dict[str, Any]:
    check_value(isinstance(row, dict), "'row' must be an object")
    out: dict[str, Any] = {"model": _name(_str(row.get("model"), "row.model", False) or "")}
    for k, check in _PROFILE_KEYS.items():
        out[k] = check(row.get(k), f"row.{k}")
    prof = row.get("profile")
    check_value(isinstance(prof, list), "'row.profile' must be a list of column profiles")
    check_value(all(isinstance(p, dict) for p in prof), "'row.profile' items must be objects")
    out["profile"] = _plain(prof, "row.profile")
    drift = row.get("drift")
    if drift is not None:
        check_value(isinstance(drift, dict), "'row.drift' must be an object or null")
        cols = drift.get("columns")
        check_value(isinstance(cols, list), "'row.drift.columns' must be a list")
        for i, c in enumerate(cols):
            check_value(
                isinstance(c, dict)
                and isinstance(c.get("column"), str)
                and isinstance(c.get("drifted"), bool),
                f"'row.drift.columns[{i}]' needs a column name and drifted true/false",
            )
        out["drift"] = _plain(drift, "row.drift")
    return out


class ProfilesHandler(_Handler):
    """POST {"row": {...}}: store one closed input window (store/serving_profiles.py) and,
    when it drifted, the once-per-window alert on the version's run, in one transaction.
    A window already stored (model, version, variant, worker, start) is not stored again."""

    async def post(self) -> None:
        def go() -> dict:
            row = _window_row(self.body_json().get("row"))
            return {"stored": _save_window(self.store, row)}

        await self.go(go)


def _save_window(store: Any, row: dict[str, Any]) -> bool:
    from ..serving.input_drift import alert

    key = ("model", "version", "variant", "worker", "window_start")
    with store.write("store an input profile") as c:
        cond = " AND ".join(f"{k} IS NULL" if row[k] is None else f"{k}=?" for k in key)
        args = [row[k] for k in key if row[k] is not None]
        if c.execute(f"SELECT 1 FROM serving_profiles WHERE {cond}", args).fetchone():
            return False
        sp.save_profile(store, row)
        if row.get("drifted") and row.get("drift") and row.get("reference"):
            alert(
                store,
                row["model"],
                row["version"],
                row["variant"],
                row["window_start"],
                row["window_end"],
                row["drift"],
                row["reference"],
            )
    return True


class ReferencesHandler(_Handler):
    """GET ?version=V: the profiled data versions the run of that version read (the
    training data its live inputs are compared with), as GET /api/v1/data/versions/{ref}."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            from ..data.catalog import _from_row
            from ..store import data as dstore
            from ..store import registry as rs
            from .data_routes import _public

            n = _name(name)
            v = _version(self.get_query_argument("version", ""))
            rs.find_version(self.store, n, v)  # 404 for an unknown model or version
            rid = sp.model_run(self.store, n, v)
            out = []
            for d in dstore.run_versions(self.store, rid) if rid is not None else []:
                if d["role"] != "input":
                    continue
                row = dstore.get_version(self.store, d["_id"])
                if _from_row(row).profile:
                    out.append(_public(row))
            return {"versions": out}

        await self.go(go)


class OutcomesHandler(_Handler):
    """GET ?since=&until=: per variant, the answered requests with their newest feedback
    (store/serving.outcomes: what mj.ab_report counts)."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            n = _name(name)
            since = _query_num(self, "since")
            until = _query_num(self, "until")
            return {"outcomes": sstore.outcomes(self.store, n, since, until)}

        await self.go(go)


class ABInputsHandler(_Handler):
    """GET ?since=&until=&metric=: what mj.ab_report needs, counted by the server
    (serving/report.ab_inputs): per variant (successes, n) for a binary metric or the
    feedback values, and the versions each variant answered with. "binary" and "values"
    are both null where the values need the full read (the outcomes route)."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            from ..serving.report import ab_inputs

            n = _name(name)
            since = _query_num(self, "since")
            until = _query_num(self, "until")
            metric = self.get_query_argument("metric", None)
            check_value(metric in (None, "binary", "continuous"), "metric: binary or continuous")
            got = ab_inputs(self.store, n, since, until, metric)
            if got is None:
                from ..store.serving_stats import answered_versions

                vals, versions = None, answered_versions(self.store, n, since, until)
            else:
                vals, versions = got
            binary = vals is not None and all(isinstance(x, tuple) for x in vals.values())
            return {
                "versions": {v: sorted(vs) for v, vs in versions.items()},
                "binary": {v: list(x) for v, x in vals.items()} if binary and vals else None,
                "values": vals if vals is not None and not binary else None,
            }

        await self.go(go)


def _query_num(h: Any, key: str) -> float | None:
    v = h.get_query_argument(key, None)
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        f = math.nan
    check_value(math.isfinite(f), f"{key!r} must be a number (seconds since the epoch)")
    return f


class DriftHandler(_Handler):
    """GET ?version=&reference=&last=: mj.serving_drift's frame (an Arrow IPC stream in
    base64, as /api/v1/frames/...). Windows no worker could judge are judged here, and
    their missed alerts sent, as a local call does."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            from ..serving.input_drift import drift_frame
            from ..store import registry as rs

            n = _name(name)
            v = self.get_query_argument("version", None)
            version = _version(v) if v is not None else None
            rs.find_version(self.store, n, version)  # 404 for an unknown model or version
            ref = _str(self.get_query_argument("reference", None), "reference", limit=200)
            last = self.get_query_argument("last", None)
            if last is not None:
                check_value(last.isdigit() and int(last) >= 1, "'last' must be a positive int")
            try:
                df = drift_frame(self.store, n, version, ref, int(last) if last else None)
            except LookupError as e:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", str(e)) from None
            buf = io.BytesIO()
            df.write_ipc_stream(buf)
            return {"data": base64.b64encode(buf.getvalue()).decode()}

        await self.go(go)


class RolloutHandler(_Handler):
    """GET: the stored rollout of the model (or null), what serving workers poll. POST
    {"action": split|canary|rollback|promote, ...} (admin): change it, as `mlops-jupyter
    rollout set|rollback|promote` does on a local store; answers the new rollout."""

    def needed_scope(self) -> str:
        return "read" if self.request.method in ("GET", "HEAD") else "admin"

    async def get(self, name: str) -> None:
        await self.go(lambda: {"rollout": sr.get(self.store, _name(name))})

    async def post(self, name: str) -> None:
        def go() -> dict:
            body = self.body_json()
            return {"rollout": _change(self.store, _name(name), body, self.who(body))}

        await self.go(go)


def _change(store: Any, model: str, body: dict, user: str) -> dict:
    from ..serving import canary as cn
    from ..serving.variants import using_store

    action = body.get("action")
    check_value(action in ("split", "canary", "rollback", "promote"), "'action': split, "
                "canary, rollback or promote")  # fmt: skip
    with using_store(store):
        if action == "split":
            split = _str(body.get("split"), "split", limit=2000)
            shadow = _str(body.get("shadow"), "shadow", limit=200)
            return cn.set_split(store, model, split, shadow, user)
        if action == "rollback":
            return cn.rollback(store, model, _str(body.get("reason"), "reason"), user)
        if action == "promote":
            return cn.promote(store, model, user)
        rules = body.get("rules") or {}
        check_value(isinstance(rules, dict), "'rules' must be an object")
        try:
            r = cn.Rules(**rules)
        except TypeError as e:
            raise InvalidInputError(f"'rules': {e}") from None
        every = _num(body.get("every"), "every")
        return cn.start_canary(
            store,
            model,
            _str(body.get("canary"), "canary", optional=False, limit=200),
            _str(body.get("ramp"), "ramp", limit=2000),
            cn.DEFAULT_EVERY if every is None else every,
            _str(body.get("shadow"), "shadow", limit=200),
            r,
            user,
        )


class RolloutShowHandler(_Handler):
    """GET: `mlops-jupyter rollout show`'s answer (layout, step, checks, history, refusals)."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            from ..serving import canary as cn
            from ..serving.variants import using_store

            with using_store(self.store):
                return cn.show(self.store, _name(name))

        await self.go(go)


class RefusalsHandler(_Handler):
    """POST {"generation", "worker", "layout", "failed": [{name, version, error}]}: a worker
    could not load a layout (once per model, generation and worker). GET ?generation=&last=:
    the recorded refusals."""

    async def get(self, name: str) -> None:
        def go() -> dict:
            g = self.get_query_argument("generation", None)
            gen = _int(int(g) if g and g.isdigit() else g, "generation")
            return {"refusals": sr.refusals(self.store, _name(name), gen)}

        await self.go(go)

    async def post(self, name: str) -> None:
        def go() -> dict:
            body = self.body_json()
            n = _name(name)
            gen = _int(body.get("generation"), "generation", optional=False)
            worker = _str(body.get("worker"), "worker", optional=False, limit=300)
            layout = _str(body.get("layout"), "layout", optional=False, limit=2000)
            failed = body.get("failed")
            check_value(isinstance(failed, list), "'failed' must be a list")
            for i, f in enumerate(failed):
                check_value(isinstance(f, dict), f"'failed[{i}]' must be an object")
            recorded = sr.record_refusal(
                self.store, n, gen, worker, layout, _plain(failed, "failed")
            )
            return {"recorded": recorded}

        await self.go(go)


class TickHandler(_Handler):
    """POST {}: one step of the model's canary controller (serving/canary.py tick) on this
    store: compare-and-set, so any number of serving processes may call it. Its answer is
    the step taken ({"action", ...}) or null."""

    async def post(self, name: str) -> None:
        def go() -> dict:
            from ..serving import canary as cn
            from ..serving.variants import using_store

            n = _name(name)
            with using_store(self.store):
                return {"tick": cn.tick(self.store, n)}

        await self.go(go)


ROUTES = [
    (r"/api/v1/serving/predictions", PredictionsHandler),
    (r"/api/v1/serving/feedback", FeedbackHandler),
    (r"/api/v1/serving/profiles", ProfilesHandler),
    (r"/api/v1/serving/models/([^/]+)/references", ReferencesHandler),
    (r"/api/v1/serving/models/([^/]+)/outcomes", OutcomesHandler),
    (r"/api/v1/serving/models/([^/]+)/ab_inputs", ABInputsHandler),
    (r"/api/v1/serving/models/([^/]+)/drift", DriftHandler),
    (r"/api/v1/serving/rollouts/([^/]+)", RolloutHandler),
    (r"/api/v1/serving/rollouts/([^/]+)/show", RolloutShowHandler),
    (r"/api/v1/serving/rollouts/([^/]+)/refusals", RefusalsHandler),
    (r"/api/v1/serving/rollouts/([^/]+)/tick", TickHandler),
]
