"""REST routes of the sidebar's Features view (issue #22):

    GET /mlops/api/v1/features
        {"views": [{name, version, versions, entities, timestamp, ttl_s, features, rows,
        newest, age_s, stale, online, created, owner, data_version}], "now": T}: the current
        version of every feature view (store.features.list_views). `newest` is the newest
        feature timestamp of the current offline materialization, `age_s` its age, `stale`
        true when the age exceeds the TTL; `online` the latest online materialization.
    GET /mlops/api/v1/features/{name}
        The view as listed, plus "versions" (every version with its materializations),
        "drift" (per feature, between consecutive offline materializations of any version,
        from the data versions' profiles with mj.drift's code), "usage" (training sets and
        the runs that used them) and "models" (registered model versions of those runs).

An unknown view is a 404 JSON answer. Everything goes through the store's feature
functions; no SQL here."""

from __future__ import annotations

import time
from typing import Any

import tornado.web

from ..errors import InvalidInputError, RunNotFoundError
from ..store.db import Store
from .handlers import BaseHandler

DRIFT_PAIRS = 20  # the newest consecutive pairs: each pair reads two profiles


def _features(view: dict[str, Any]) -> list[str]:
    skip = {*view["entities"], view["timestamp"]}
    return [c["name"] for c in view["schema"] if c["name"] not in skip]


def _summary(view: dict[str, Any], online: dict[str, Any] | None, now: float) -> dict[str, Any]:
    mat = view["materialization"] or {}
    newest = mat.get("newest")
    age = None if newest is None else now - newest
    ttl = view["ttl_s"]
    return {
        "name": view["name"],
        "version": view["version"],
        "entities": view["entities"],
        "timestamp": view["timestamp"],
        "ttl_s": ttl,
        "features": _features(view),
        "rows": mat.get("n_rows"),
        "newest": newest,
        "age_s": age,
        "stale": bool(ttl is not None and age is not None and age > ttl),
        "online": online,
        "created": view["created"],
        "owner": view["owner"],
        "description": view["description"],
        "data_version": mat.get("data_version"),
    }


def list_feature_views(store: Store, now: float | None = None) -> dict[str, Any]:
    """Every feature view's current version with freshness and its last online write."""
    from ..store import features as fstore
    from ..store.api_queries import clean
    from ..store.features_online import online_materializations

    now = time.time() if now is None else now
    last_online: dict[str, dict[str, Any]] = {}
    for m in online_materializations(store):  # newest first: keep the first of each name
        last_online.setdefault(m["view"], m)
    counts: dict[str, int] = {}
    for v in fstore.list_views(store, all_versions=True):
        counts[v["name"]] = counts.get(v["name"], 0) + 1
    views = []
    for v in fstore.list_views(store):
        s = _summary(v, last_online.get(v["name"]), now)
        s["versions"] = counts.get(v["name"], 1)
        views.append(s)
    views.sort(key=lambda s: s["name"])
    return clean({"views": views, "now": now})


def _pair_drift(
    store: Store, ref_id: int, cur_id: int, columns: list[str], seen: dict[int, Any]
) -> dict[str, Any]:
    """Per-feature drift between two data versions, from their profiles (mj.drift's code,
    not stored): {column: {method, statistic, threshold, drifted}} or a note. `seen` keeps
    the versions read (consecutive pairs share one)."""
    from ..data.catalog import _from_row
    from ..data.compare import drift
    from ..store import data as dstore

    for i in (ref_id, cur_id):
        if i not in seen:
            seen[i] = _from_row(dstore.get_version(store, i))
    ref, cur = seen[ref_id], seen[cur_id]
    if ref.profile is None or cur.profile is None:
        return {"columns": {}, "note": "a data version has no column profile"}
    names = {p["name"] for p in ref.profile} & {p["name"] for p in cur.profile}
    cols = [c for c in columns if c in names]
    if not cols:
        return {"columns": {}, "note": "no feature in common"}
    try:
        rep = drift(ref, cur, columns=cols, store=False).to_dict()
    except InvalidInputError as e:
        return {"columns": {}, "note": str(e)}
    out = {
        r["column"]: {
            "method": r["method"],
            "statistic": r["statistic"],
            "threshold": r["threshold"],
            "drifted": r["drifted"],
        }
        for r in rep["columns"]
    }
    for s in rep["skipped"]:
        out[s["column"]] = {"method": None, "statistic": None, "threshold": None,
                            "drifted": None, "note": s["reason"]}  # fmt: skip
    return {"columns": out, "note": None}


def feature_view_detail(store: Store, name: str, now: float | None = None) -> dict[str, Any]:
    """Everything the Features view shows for view `name` (see the module docstring)."""
    from ..store import data as dstore
    from ..store import features as fstore
    from ..store import registry as rs
    from ..store.api_queries import clean
    from ..store.features_online import online_materializations

    now = time.time() if now is None else now
    try:
        current = fstore.get_view(store, name)
    except fstore.FeatureViewNotFoundError as e:
        raise RunNotFoundError(str(e)) from None  # the API's 404
    online = online_materializations(store, view=name)
    out = _summary(current, online[0] if online else None, now)
    versions, mats = [], []
    for v in fstore.list_views(store, all_versions=True):
        if v["name"] != name:
            continue
        ms = fstore.materializations(store, v["_id"])
        for m in ms:
            mats.append((m, v))
        versions.append(
            {
                "version": v["version"],
                "features": _features(v),
                "ttl_s": v["ttl_s"],
                "code_hash": v["code_hash"],
                "owner": v["owner"],
                "created": v["created"],
                "current": v["version"] == current["version"],
                "materializations": [
                    {k: m[k] for k in ("data_version", "n_rows", "oldest", "newest", "created")}
                    for m in ms
                ],
                "online": [o for o in online if o["version"] == v["version"]],
            }
        )
    out["versions"] = versions[::-1]  # newest version first
    mats.sort(key=lambda mv: mv[0]["_id"])
    drift, seen = [], {}
    pairs = list(zip(mats, mats[1:]))[-DRIFT_PAIRS:]
    for (ma, va), (mb, vb) in pairs:
        if ma["_data_version_id"] == mb["_data_version_id"]:
            continue  # the same data made current again: nothing moved
        feats = [f for f in _features(vb) if f in set(_features(va))]
        d = _pair_drift(store, ma["_data_version_id"], mb["_data_version_id"], feats, seen)
        drift.append(
            {
                "from": {
                    "version": va["version"],
                    "data_version": ma["data_version"],
                    "created": ma["created"],
                },  # fmt: skip
                "to": {
                    "version": vb["version"],
                    "data_version": mb["data_version"],
                    "created": mb["created"],
                },  # fmt: skip
                **d,
                "n_drifted": sum(1 for c in d["columns"].values() if c["drifted"]),
            }
        )
    out["drift"] = drift[::-1]  # newest pair first
    usage = fstore.view_usage(store, name)
    names: dict[str, str | None] = {}
    for u in usage:  # the training set's name beside its version id
        if u["training_set"] not in names:
            dv = dstore.get_version(store, dstore.resolve_version(store, u["training_set"]))
            names[u["training_set"]] = dv["name"]
        u["training_set_name"] = names[u["training_set"]]
    out["usage"] = usage
    runs = {u["run"] for u in usage if u["run"]}
    out["models"] = [
        {k: m[k] for k in ("name", "version", "stage", "run_id", "created", "aliases")}
        for m in rs.list_versions(store)
        if m["run_id"] in runs
    ]
    return clean(out)


class FeatureViews(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(lambda: list_feature_views(self.store()))


class FeatureViewDetail(BaseHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        # tornado has already percent-decoded the name
        await self.answer(lambda: feature_view_detail(self.store(), name))


def feature_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [(r"/features", FeatureViews), (r"/features/([^/]+)", FeatureViewDetail)]
