"""Drift of the windows of live inputs that serving workers store (see monitor.py): the
training data a model version is compared with, the per-window verdict, the alert on the
version's run, and reading windows back (merged across workers) for `mj.serving_drift`,
the canary controller (`latest_drift`) and the sidebar (`drift_windows`)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from ..errors import InvalidInputError

MIN_ROWS = 30  # fewer sampled rows: the window is profiled but its drift not judged
# Against a reference of more than 1000 rows drift is a distance (Wasserstein, PSI,
# Jensen-Shannon), not a test: a window of unchanged data is at a distance near
# 1.4/sqrt(rows) by sampling alone (measured on profiles: 0.13 at 100 rows, 0.045 at 1000,
# p99 about twice that), so with the fixed 0.1 threshold 78 % of 100-row columns, 14 % of
# 400-row ones and 0.3 % of 1000-row ones drifted by chance. A window's distance thresholds
# are raised to NOISE_K/sqrt(rows) where that is higher (0.45 at 100 rows, 0.1 from 2000).
NOISE_K = 4.5


def reference_candidates(store: Any, model: str, version: int) -> list:
    """The profiled data versions the run of `version` read (its training data)."""
    from ..data.catalog import _from_row

    if getattr(store, "remote_serving", False):  # over a tracking server: its GET route
        return store.reference_candidates(model, version)
    from ..store import data as dstore
    from ..store import serving_profiles as sp

    rid = sp.model_run(store, model, version)
    if rid is None:
        return []
    out = []
    for d in dstore.run_versions(store, rid):
        if d["role"] != "input":
            continue
        v = _from_row(dstore.get_version(store, d["_id"]))
        if v.profile:
            out.append(v)
    return out


def pick_reference(candidates: list, columns: list[str]) -> Any:
    """Of the candidates, the one sharing the most columns with the window (the first
    linked among equals); None when none shares a column."""
    best, shared = None, 0
    cols = set(columns)
    for v in candidates:
        k = len(cols & {p["name"] for p in v.profile})
        if k > shared:
            best, shared = v, k
    return best


def judge(ref: Any, profile: list[dict], n: int) -> dict | None:
    """Per-column drift of a window's profile against data version `ref` (None when the
    window has too few rows to judge)."""
    from ..data.catalog import DataVersion
    from ..data.compare import THRESHOLDS, drift

    if n < MIN_ROWS:
        return None
    cur = DataVersion(id="window", fingerprint="", name=None, kind="serving", n_rows=n)
    cur.profile = profile
    floor = NOISE_K / n**0.5
    th = {m: max(THRESHOLDS[m], floor) for m in ("wasserstein", "psi", "jensenshannon")}
    rep = drift(ref, cur, thresholds=th, store=False).data
    keep = ("column", "method", "statistic", "threshold", "drifted")
    return {
        "columns": [{k: c[k] for k in keep} for c in rep["columns"]],
        "skipped": rep["skipped"],
    }


def _verdict(d: dict | None) -> tuple[bool | None, float | None]:
    """A window drifts when any of its columns drifts."""
    if not d or not d["columns"]:
        return None, None
    k = sum(c["drifted"] for c in d["columns"])
    return k > 0, k / len(d["columns"])


def alert(
    store: Any,
    model: str,
    version: int,
    variant: str,
    start: float,
    end: float,
    d: dict,
    ref_id: str,
) -> bool:
    """One warning event on the version's run per drifted window (whichever worker or
    caller gets there first); False when there is no run or it was already sent."""
    from ..store import runs as rstore
    from ..store import serving_profiles as sp

    rid = sp.model_run(store, model, version)
    if rid is None or not sp.claim_alert(store, model, version, variant, start):
        return False
    cols = [c["column"] for c in d["columns"] if c["drifted"]]
    span = f"{_utc(start)}-{_utc(end)[11:]} UTC"
    rstore.add_event(
        store,
        rid,
        "serving_drift",
        f"input drift: model {model!r} version {version} (variant {variant}), window {span}: "
        f"{len(cols)}/{len(d['columns'])} columns drifted ({', '.join(cols)}) "
        f"against training data {ref_id}",
        level="warning",
        data={
            "model": model,
            "version": version,
            "variant": variant,
            "window_start": start,
            "window_end": end,
            "columns": cols,
            "reference": ref_id,
        },
    )
    return True


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


# -- reading windows back --------------------------------------------------------------------


def merge(rows: list[dict]) -> dict[str, Any]:
    """One window from the rows of several workers: counts added, each column's statistic
    averaged and its verdict voted, both weighted by the rows each worker judged."""
    first = rows[0]
    out: dict[str, Any] = {
        "window_start": first["window_start"],
        "window_end": max(r["window_end"] for r in rows),
        "variant": first["variant"],
        "version": first["version"],
        "n": sum(r["n_rows"] for r in rows),
        "drifted": None,
        "share": None,
        "columns": [],
        "statistics": {},
        "reference": first.get("reference"),
    }
    judged = [r for r in rows if r.get("drift") and r["drift"]["columns"]]
    if not judged:
        return out
    stat: dict[str, float] = defaultdict(float)
    vote: dict[str, float] = defaultdict(float)
    weight: dict[str, float] = defaultdict(float)
    for r in judged:
        wt = float(r["n_sampled"])
        for c in r["drift"]["columns"]:
            name = c["column"]
            stat[name] += wt * (c["statistic"] or 0.0)
            vote[name] += wt * bool(c["drifted"])
            weight[name] += wt
    names = list(weight)
    drifted = [n for n in names if vote[n] / weight[n] >= 0.5]
    out.update(
        drifted=bool(drifted),
        share=len(drifted) / len(names),
        columns=drifted,
        statistics={n: stat[n] / weight[n] for n in names},
    )
    return out


def _group(rows: list[dict], by_variant: bool = True) -> list[list[dict]]:
    """Rows grouped by window (and variant, version), in the order first seen."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["window_start"], r["version"], r["variant"] if by_variant else None)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def latest_drift(store: Any, model: str, version: int, since: float) -> dict | None:
    """Drift of the newest judged window of `version` of `model` starting at or after
    `since` (all its variants and workers merged): {"drifted", "share", "window_start",
    "columns"}; None when there is none yet."""
    from ..store import serving_profiles as sp

    rows = sp.profiles(store, model, version, since, with_profile=False)
    for group in _group(rows, by_variant=False):
        m = merge(group)
        if m["drifted"] is not None:
            return {
                "drifted": m["drifted"],
                "share": m["share"],
                "window_start": m["window_start"],
                "columns": m["columns"],
            }
    return None


def drift_windows(store: Any, model: str, limit: int = 50) -> list[dict]:
    """The newest `limit` windows of `model` (per variant and version), newest first:
    window_start, window_end, variant, version, n, drifted, share, columns."""
    from ..store import serving_profiles as sp

    cap = max(1, int(limit)) * 8  # rows: one per worker of each window
    rows = sp.profiles(store, model, limit=cap, with_profile=False)
    groups = _group(rows)
    if len(rows) == cap and len(groups) > 1:
        groups.pop()  # the oldest window may be cut off: some of its workers' rows missing
    keys = ("window_start", "window_end", "variant", "version", "n", "drifted", "share")
    out = []
    for group in groups[: max(0, int(limit))]:
        m = merge(group)
        out.append({**{k: m[k] for k in keys}, "columns": m["columns"]})
    return out


def serving_drift(
    model: str,
    version: int | None = None,
    reference: Any = None,
    last: int | None = None,
):
    """Drift of the live inputs of `model` (one `version`, or all) per window, oldest
    first (the `last` N windows, or all): a polars DataFrame with window_start,
    window_end, variant, version, n (rows answered), drifted, share (of drifted columns),
    columns (the drifted ones), reference (data version id) and one `stat:COLUMN` column
    per input column (the statistic mj.drift chose for it).

    The reference is the training data linked to each version (the data versions its run
    read; see mj.version), or `reference=` a data version name or id for every window.
    Raises InvalidInputError when a version has no linked training data and no
    `reference=` is given, ModelNotFoundError for an unknown model or version."""
    from .. import registry
    from ..tracking.api import current_store, remote_url

    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInputError(f"version must be an int, got {version!r}")
        registry.model_version(model, version=version)
    else:
        registry.model_version(model)  # an unknown model fails here, naming it
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise InvalidInputError(f"last must be a positive int, got {last!r}")
    if (url := remote_url()) is not None:  # computed by the server on its store
        from ..remote import serving as remote

        return remote.serving_drift(url, model, version, reference, last)
    return drift_frame(current_store(), model, version, reference, last)


def drift_frame(store: Any, model: str, version: int | None, reference: Any, last: int | None):
    """serving_drift's frame from `store` (the arguments checked by the caller)."""
    import polars as pl

    from ..data.catalog import _from_row
    from ..store import data as dstore
    from ..store import serving_profiles as sp

    rows = sp.profiles(store, model, version, with_profile=reference is not None)
    if reference is not None:
        ref = _from_row(dstore.get_version(store, dstore.resolve_version(store, str(reference))))
        if not ref.profile:
            raise InvalidInputError(f"data version {ref.id} ({ref.name}) has no column profile")
        for r in rows:
            r["reference"] = ref.id
            r["drift"] = judge(ref, r["profile"], r["n_sampled"])
    else:
        versions = [version] if version is not None else sorted({r["version"] for r in rows})
        for v in versions:
            _judge_missing(store, model, v, rows)
    groups = [merge(g) for g in _group(rows)]
    groups.sort(key=lambda m: (m["window_start"], m["version"], m["variant"]))
    if last is not None:
        starts = sorted({m["window_start"] for m in groups})[-last:]
        groups = [m for m in groups if m["window_start"] >= starts[0]] if starts else []
    stat_names = list(dict.fromkeys(n for m in groups for n in m["statistics"]))
    ts = pl.Datetime("us", "UTC")
    data: dict[str, pl.Series] = {
        "window_start": pl.Series([int(m["window_start"] * 1e6) for m in groups]).cast(ts),
        "window_end": pl.Series([int(m["window_end"] * 1e6) for m in groups]).cast(ts),
        "variant": pl.Series([m["variant"] for m in groups], dtype=pl.String),
        "version": pl.Series([m["version"] for m in groups], dtype=pl.Int64),
        "n": pl.Series([m["n"] for m in groups], dtype=pl.Int64),
        "drifted": pl.Series([m["drifted"] for m in groups], dtype=pl.Boolean),
        "share": pl.Series([m["share"] for m in groups], dtype=pl.Float64),
        "columns": pl.Series([m["columns"] for m in groups], dtype=pl.List(pl.String)),
        "reference": pl.Series([m["reference"] for m in groups], dtype=pl.String),
    }
    for n in stat_names:
        data[f"stat:{n}"] = pl.Series([m["statistics"].get(n) for m in groups], dtype=pl.Float64)
    return pl.DataFrame(data)


def _judge_missing(store: Any, model: str, version: int, rows: list[dict]) -> None:
    """Judge the windows of `version` its workers could not (no training data linked
    then): against the training data linked now, sending the alerts they missed."""
    from ..store import serving_profiles as sp

    mine = [r for r in rows if r["version"] == version]
    todo = [r for r in mine if r["reference"] is None]
    if mine and not todo:
        return
    cands = reference_candidates(store, model, version)
    if not cands:
        raise InvalidInputError(
            f"model {model!r} version {version} has no linked training data (its run read "
            f"no data version with a column profile: call mj.version(train_df) in the run "
            f"that registers the model); pass reference= a data version name or id"
        )
    full = {r["id"]: r for r in sp.profiles(store, model, version) if r["reference"] is None}
    for r in todo:
        prof = full[r["id"]]["profile"] if r["id"] in full else r["profile"]
        ref = pick_reference(cands, [p["name"] for p in prof or []])
        if ref is None:
            continue
        r["reference"] = ref.id
        r["drift"] = judge(ref, prof, r["n_sampled"])
        drifted, _ = _verdict(r["drift"])
        if drifted:
            alert(
                store,
                model,
                version,
                r["variant"],
                r["window_start"],
                r["window_end"],
                r["drift"],
                ref.id,
            )
