"""`mj.drift(reference, current)`: per-column drift verdicts between two DataFrames (exact
tests on the raw values) or two stored data versions (from their profiles alone)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError
from ..progress import progress
from ..store import data as dstore
from . import stats
from .catalog import (
    DataVersion,
    _remote,
    _run_rid,
    _store,
    build_record,
    get_version,
    object_record,
    save,
)
from .profile import _kind, column_profile, numeric_values, to_polars
from .stats import Binned, grid_size

NUM_METHODS = ("ks", "wasserstein", "psi", "jensenshannon")
CAT_METHODS = ("chisquare", "psi", "jensenshannon")
# thresholds: p-value below it (ks, chisquare) or distance at/above it (others) means drift
THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "wasserstein": 0.1, "psi": 0.1, "jensenshannon": 0.1}
P_VALUE_METHODS = ("ks", "chisquare")
AUTO_SMALL = 1000  # at most this many reference rows: hypothesis tests, else distances
REPORT_BINS = 20
REPORT_CATS = 10


def _pick(method: str, kind: str, n_ref: int) -> str:
    if method != "auto":
        return method
    if kind == "numeric":
        return "ks" if n_ref <= AUTO_SMALL else "wasserstein"
    return "chisquare" if n_ref <= AUTO_SMALL else "jensenshannon"


def _verdict(method: str, value: float, threshold: float) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return value < threshold if method in P_VALUE_METHODS else value >= threshold


def _clean(v: float) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return 1e300 if v == math.inf else float(v)


def _numeric(pr: dict, pc: dict, xr: dict | None, xc: dict | None, method: str) -> dict:
    """Numeric statistics of one column. The KS p-value is computed only when KS gives the
    verdict (`method`): at 200k rows scipy takes 0.1-0.2 s for a small p, and elsewhere it
    would be paid for and not used; it is None (not computed) then. D is always given."""
    sr, sc = pr["sketch"], pc["sketch"]
    if isinstance(xr, dict) and "ks_d" in xr:
        d = xr["ks_d"]
    else:
        d = stats.ks_from_sketches(sr, sc)
    w = stats.wasserstein_from_sketches(sr, sc)
    std = pr.get("std") or 0.0
    wn = w / std if std > 0 else (0.0 if w == 0 else math.inf)
    edges = stats.reference_bins(sr)
    p, q = stats.binned_probs(sr, edges), stats.binned_probs(sc, edges)
    lo, hi = min(pr["min"], pc["min"]), max(pr["max"], pc["max"])
    hedges = np.linspace(lo, hi, REPORT_BINS + 1) if hi > lo else np.array([lo, lo + 1])
    return {
        "stats": {
            "ks": stats.ks_pvalue(d, pr["count"], pc["count"]) if method == "ks" else None,
            "ks_d": d,
            "wasserstein": _clean(wn),
            "psi": stats.psi(p, q),
            "jensenshannon": stats.js_distance(p, q),
        },
        "hist": {
            "edges": [float(e) for e in hedges],
            "ref": [float(v) for v in _hist(sr, hedges)],
            "cur": [float(v) for v in _hist(sc, hedges)],
        },
    }


def _hist(sk: list[float], edges: np.ndarray) -> np.ndarray:
    cdf = stats.sketch_cdf(sk, edges)
    cdf[0], cdf[-1] = 0.0, 1.0
    return np.diff(cdf)


def _cat_counts(prof: dict, raw: Any) -> tuple[dict[str, int], int]:
    """Category counts: exact from raw value counts, else the profile's top list plus the
    rest as one "other" bucket."""
    if raw is not None:
        values, counts = raw
        return dict(zip(values, counts.tolist())), 0
    return {v: c for v, c in prof.get("top", [])}, int(prof.get("other", 0))


def _categorical(pr: dict, pc: dict, rr: Any, rc: Any) -> dict:
    cr, other_r = _cat_counts(pr, rr)
    cc, other_c = _cat_counts(pc, rc)
    cats = list(dict.fromkeys([*cr, *cc]))
    a = np.array([cr.get(k, 0) for k in cats] + [other_r], dtype=float)
    b = np.array([cc.get(k, 0) for k in cats] + [other_c], dtype=float)
    chi, p, dof = stats.chi2_two_sample(a, b)
    pa = a / a.sum() if a.sum() else a
    pb = b / b.sum() if b.sum() else b
    order = np.argsort(-(pa[:-1] + pb[:-1]), kind="stable")[:REPORT_CATS]
    return {
        "stats": {
            "chisquare": p,
            "chi2": chi,
            "dof": dof,
            "psi": stats.psi(a, b),
            "jensenshannon": stats.js_distance(a, b),
        },
        "cats": {
            "labels": [cats[i] for i in order],
            "ref": [float(pa[i]) for i in order],
            "cur": [float(pb[i]) for i in order],
        },
    }


def _in_memory(obj: Any) -> bool:
    return not isinstance(obj, (str, DataVersion)) and not hasattr(obj, "__fspath__")


def _numeric_pair(sr: pl.Series, sc: pl.Series) -> tuple[tuple, tuple] | None:
    """Profiles of one numeric column on both sides, binned on one shared grid so the exact
    KS statistic needs no sort. The bins are dropped afterwards: memory stays bounded by
    the columns in flight, not the whole frame."""
    xr, mr = numeric_values(sr)
    xc, mc = numeric_values(sc)
    if len(xr) == 0 or len(xc) == 0:
        return None
    lo, hi = min(float(xr.min()), float(xc.min())), max(float(xr.max()), float(xc.max()))
    k = grid_size(len(xr) + len(xc))
    br, bc = Binned.build(xr, lo, hi, k), Binned.build(xc, lo, hi, k)
    pr, _ = column_profile(sr, None, (xr, mr, br))
    pc, _ = column_profile(sc, None, (xc, mc, bc))
    d = stats.ks_binned(br, bc)
    return (pr, {"ks_d": d}), (pc, {"ks_d": d})


def _raw_pair(reference: Any, current: Any, categorical: list[str] | None):
    """Records of two in-memory datasets, with exact KS statistics for shared numeric
    columns (see stats.Binned)."""
    dfr, dfc = to_polars(reference), to_polars(current)
    cats = set(categorical or ())
    names = [
        n
        for n in dfr.columns
        if n not in cats
        and n in dfc.columns
        and _kind(dfr.schema[n]) in ("numeric", "datetime")
        and _kind(dfc.schema[n]) in ("numeric", "datetime")
    ]
    big = dfr.height * dfr.width + dfc.height * dfc.width >= 1_000_000
    # the heavy parts (binning, sorting cells, hashing) release the GIL: use both cores
    from concurrent.futures import ThreadPoolExecutor

    with (
        ThreadPoolExecutor(2 if big else 1) as ex,
        progress(total=len(names), desc="drift: profiling", unit="col") as bar,
    ):

        def pair(n: str):
            out = _numeric_pair(dfr[n], dfc[n])
            bar.update()
            return out

        pairs = list(ex.map(pair, names))
        done_r = {n: p[0] for n, p in zip(names, pairs) if p is not None}
        done_c = {n: p[1] for n, p in zip(names, pairs) if p is not None}
        fr = ex.submit(object_record, reference, None, categorical, done_r, dfr)
        fc = ex.submit(object_record, current, None, categorical, done_c, dfc)
        return fr.result(), fc.result()


def _side(obj: Any, categorical: list[str] | None) -> tuple[dict, dict | None, DataVersion | None]:
    """(record with profile, raw summaries or None, stored version or None)."""
    if isinstance(obj, DataVersion) or isinstance(obj, str) and not _is_path(obj):
        v = get_version(obj)
        if v.profile is None:
            raise InvalidInputError(
                f"data version {v.id} ({v.name}) has no column profile to compare"
            )
        return {"profile": v.profile, "id": v.id, "name": v.name, "n_rows": v.n_rows}, None, v
    rec, raws = build_record(obj, None, categorical)
    if rec.get("profile") is None:
        raise InvalidInputError(f"cannot profile {obj!r} for drift: not tabular data")
    return rec, raws, None


def _is_path(s: str) -> bool:
    """An existing file or directory wins over a stored version of the same name."""
    import os

    return os.path.exists(s)


def drift(
    reference: Any,
    current: Any,
    *,
    columns: list[str] | None = None,
    categorical: list[str] | None = None,
    num_method: str = "auto",
    cat_method: str = "auto",
    thresholds: dict[str, float] | None = None,
    drift_share: float = 0.5,
    store: bool = True,
    run: Any = None,
):
    """Compare `current` data against `reference`, column by column.

    Each side is a DataFrame (polars/pandas), numpy array, tabular file, a stored
    `DataVersion` or a version id/name. With raw data on both sides the KS statistic is
    exact; stored versions are compared from their profiles (quantile sketches, category
    counts) without the data. Methods: numeric "ks", "wasserstein" (normed by the reference
    std), "psi", "jensenshannon"; categorical "chisquare" (two-sample test of homogeneity),
    "psi", "jensenshannon"; "auto" picks KS/chi-squared up to 1000 reference rows and
    Wasserstein/Jensen-Shannon above (close to Evidently's rule). Every column's `stats` holds
    all statistics, except the KS p-value, which is computed only where KS gives the verdict
    (None elsewhere: it is the one that is slow on large samples). The dataset drifts when the
    share of drifted columns reaches `drift_share`. The result is stored (linked to the active run
    and to both versions) unless store=False."""
    from .report import DriftReport

    stats.require_scipy()  # fail before any work, with the extra to install
    if num_method != "auto" and num_method not in NUM_METHODS:
        raise InvalidInputError(f"num_method must be 'auto' or one of {NUM_METHODS}")
    if cat_method != "auto" and cat_method not in CAT_METHODS:
        raise InvalidInputError(f"cat_method must be 'auto' or one of {CAT_METHODS}")
    th = dict(THRESHOLDS)
    for k, v in (thresholds or {}).items():
        if k not in THRESHOLDS or not isinstance(v, (int, float)):
            raise InvalidInputError(f"thresholds: unknown method or value {k!r}: {v!r}")
        th[k] = float(v)
    if not 0 < drift_share <= 1:
        raise InvalidInputError("drift_share must be in (0, 1]")
    if _in_memory(reference) and _in_memory(current):
        (ref, rraw), (cur, craw) = _raw_pair(reference, current, categorical)
        rv = cv = None
    else:
        ref, rraw, rv = _side(reference, categorical)
        cur, craw, cv = _side(current, categorical)
    mode = "raw" if rraw is not None and craw is not None else "profile"
    pref = {p["name"]: p for p in ref["profile"]}
    pcur = {p["name"]: p for p in cur["profile"]}
    names = [n for n in pref if n in pcur]
    if columns is not None:
        missing = [c for c in columns if c not in pref or c not in pcur]
        if missing:
            raise InvalidInputError(f"columns not in both datasets: {missing}")
        names = list(columns)
    results, skipped = [], []
    cats = set(categorical or ())
    # KS p-values of large samples take scipy ~0.1 s per column: a bar once it runs a second
    for n in progress(names, desc="drift: tests", unit="col"):
        pr, pc = pref[n], pcur[n]
        kr = "categorical" if n in cats or pr["kind"] == "boolean" else pr["kind"]
        kc = "categorical" if n in cats or pc["kind"] == "boolean" else pc["kind"]
        kr = "numeric" if kr == "datetime" else kr
        kc = "numeric" if kc == "datetime" else kc
        if kr != kc or kr not in ("numeric", "categorical"):
            skipped.append({"column": n, "reason": f"kinds differ or unsupported: {kr}/{kc}"})
            continue
        if kr == "categorical" and not ("top" in pr and "top" in pc):
            skipped.append({"column": n, "reason": "stored as numeric: no category counts"})
            continue
        if not pr.get("count") or not pc.get("count"):
            skipped.append({"column": n, "reason": "no values on one side"})
            continue
        if kr == "numeric":
            method = _pick(num_method, kr, pr["count"])
            xr, xc = (rraw.get(n) if rraw else None), (craw.get(n) if craw else None)
            body = _numeric(pr, pc, xr, xc, method)
        else:
            method = _pick(cat_method, kr, pr["count"])
            body = _categorical(
                pr, pc, rraw.get(n) if rraw else None, craw.get(n) if craw else None
            )
        value = body["stats"][method]
        results.append(
            {
                "column": n,
                "kind": kr,
                "method": method,
                "statistic": _clean(value),
                "threshold": th[method],
                "drifted": _verdict(method, value, th[method]),
                "stats": {
                    k: _clean(v) if isinstance(v, float) else v for k, v in body["stats"].items()
                },
                "ref": _summary(pr),
                "cur": _summary(pc),
                **{k: v for k, v in body.items() if k != "stats"},
            }
        )
    n_drifted = sum(r["drifted"] for r in results)
    share = n_drifted / len(results) if results else 0.0
    rep = {
        "n_columns": len(results),
        "n_drifted": n_drifted,
        "drift_share": share,
        "dataset_drift": bool(results) and share >= drift_share,
        "mode": mode,
        "columns": results,
        "skipped": skipped,
        "settings": {
            "num_method": num_method,
            "cat_method": cat_method,
            "thresholds": th,
            "drift_share": drift_share,
        },
        "reference": {"id": ref["id"], "name": ref.get("name"), "n_rows": ref.get("n_rows")},
        "current": {"id": cur["id"], "name": cur.get("name"), "n_rows": cur.get("n_rows")},
    }
    report = DriftReport(rep)
    if store:
        _store_report(report, ref, cur, rv, cv, run)
    return report


def _summary(p: dict) -> dict[str, Any]:
    keys = ("count", "nulls", "mean", "std", "min", "max", "n_unique")
    return {k: p[k] for k in keys if k in p}


def _store_report(report, ref: dict, cur: dict, rv, cv, run: Any) -> None:
    """Save both sides as data versions (deduplicated) and the result linked to them."""
    d = report.data
    remote = _remote()
    if remote is not None:  # the server stores it and adds the run's event
        from ..remote import data_more as rmore

        rv = rv or save(ref, role=None)
        cv = cv or save(cur, role=None)
        result = {"columns": d["columns"], "settings": d["settings"], "skipped": d["skipped"]}
        d["id"] = rmore.save_drift(remote, {**d, "result": result}, rv.id, cv.id, run)
        return
    st = _store()
    rv = rv or save(ref, role=None)
    cv = cv or save(cur, role=None)
    rid = _run_rid(run)
    uid = dstore.save_drift(
        st,
        {
            "run_rid": rid,
            "ref_version_rid": rv._rid,
            "cur_version_rid": cv._rid,
            "n_columns": d["n_columns"],
            "n_drifted": d["n_drifted"],
            "drift_share": d["drift_share"],
            "dataset_drift": d["dataset_drift"],
            "mode": d["mode"],
            "result": {"columns": d["columns"], "settings": d["settings"], "skipped": d["skipped"]},
        },
    )
    d["id"] = uid
    if rid is not None:
        from ..store import runs as rstore

        level = "warning" if d["dataset_drift"] else "info"
        rstore.add_event(
            st,
            rid,
            "drift",
            f"data drift: {d['n_drifted']}/{d['n_columns']} columns drifted"
            f" (reference {rv.id}, current {cv.id})",
            level=level,
            data={"report": uid, "reference": rv.id, "current": cv.id, "share": d["drift_share"]},
        )


def drift_reports(run: Any = None, limit: int = 50) -> list:
    """Stored drift reports (of `run`, or all), newest first, as DriftReport objects."""
    from .report import DriftReport

    remote = _remote()
    if remote is not None:
        from ..remote import data_more as rmore

        rows = rmore.drift_reports(remote, run, limit)
    else:
        st = _store()
        rows = dstore.drift_reports(st, _run_rid(run) if run is not None else None, limit)
    out = []
    for r in rows:
        r["reference"]["n_rows"] = None
        r["current"]["n_rows"] = None
        out.append(DriftReport(r))
    return out
