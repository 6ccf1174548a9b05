"""`mj.training_set`: point-in-time correct joins of labels with feature views.

For each label row and each feature view, the features come from the latest feature row of
the same entity whose timestamp is at or before the label's timestamp and at most the
view's TTL older than it (polars `join_asof(strategy="backward", by=entity,
tolerance=ttl)`); beyond the TTL, for an unknown entity, or where the label's entity or
timestamp is null, the features are null. A value from after the label's time is never
used. Label rows keep their order and count exactly (duplicates included).

Duplicate feature timestamps (one entity, one timestamp, several rows): the row that comes
last in the registered frame wins, as if each row overwrote the one before it.

The result is recorded as a data version (name `name`) whose lineage rows name the labels'
data version and, per view, the version and data version of the features used; inside a run
(or with `run=`) it is linked to the run as an input."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError
from ..store import data as dstore
from ..store import features as fstore
from .views import (
    FeatureViewInfo,
    _remote,
    _store,
    check_columns,
    check_timestamp,
    frame_of,
    get_feature_view,
    save_frame,
)

_REF = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)(?:@(\d+))?:(.+)$")
_ROW = "__mj_row"
_TS = "__mj_ts"
_UNIT_ORDER = {"ns": 0, "us": 1, "ms": 2}


def parse_refs(features: Any) -> list[tuple[str, int | None, list[str]]]:
    """[(view, version or None, [feature or "*", ...])] from "view:feature", "view:*" and
    "view@2:feature" references, views in order of first mention."""
    if isinstance(features, str):
        features = [features]
    if not isinstance(features, (list, tuple)) or not features:
        raise InvalidInputError(
            "features must be a non-empty list of 'view:feature' or 'view:*' references"
        )
    out: dict[tuple[str, int | None], list[str]] = {}
    for ref in features:
        m = _REF.match(ref.strip()) if isinstance(ref, str) else None
        if m is None:
            raise InvalidInputError(
                f"feature reference {ref!r} must look like 'view:feature', 'view:*' or "
                "'view@2:feature'"
            )
        key = (m.group(1), int(m.group(2)) if m.group(2) else None)
        names = out.setdefault(key, [])
        if m.group(3) not in names:
            names.append(m.group(3))
    return [(v, ver, names) for (v, ver), names in out.items()]


def _selected(info: FeatureViewInfo, names: list[str]) -> list[str]:
    cols: list[str] = []
    for n in names:
        if n == "*":
            new = info.features
        elif n in info.features:
            new = [n]
        else:
            raise InvalidInputError(
                f"feature view {info.name!r} (version {info.version}) has no feature {n!r} "
                f"(features: {', '.join(info.features)})"
            )
        cols += [c for c in new if c not in cols]
    return cols


def _outputs(
    info: FeatureViewInfo, names: list[str], full_names: bool, taken: set[str], beside: str
) -> tuple[list[str], list[str]]:
    """The view's selected feature columns and their output names, which must not clash
    with `taken` (`beside` names what holds those: "a labels column", "an entity column");
    the output names are added to `taken`."""
    cols = _selected(info, names)
    outs = [f"{info.name}__{c}" if full_names else c for c in cols]
    clash = [o for o in outs if o in taken]
    if clash:
        raise InvalidInputError(
            f"feature column(s) {', '.join(map(repr, clash))} of view {info.name!r} clash "
            f"with {beside} or another view's feature: pass full_names=True"
        )
    taken.update(outs)
    return cols, outs


def _finest(a: pl.DataType, b: pl.DataType) -> str:
    units = [getattr(t, "time_unit", None) or "us" for t in (a, b)]
    return min(units, key=_UNIT_ORDER.__getitem__)


def _as_datetime(s: pl.Series, unit: str, tz: str | None) -> pl.Series:
    if isinstance(s.dtype, pl.Date):
        s = s.cast(pl.Datetime(unit))
        return s.dt.replace_time_zone(tz) if tz else s
    s = s.dt.cast_time_unit(unit)
    return s.dt.convert_time_zone(tz) if tz and s.dtype.time_zone != tz else s


def _tz(dt: pl.DataType) -> str | None:
    return getattr(dt, "time_zone", None)


@dataclass
class ViewJoin:
    """One feature view's part of a point-in-time join: its frame and key columns, the
    labels' key columns, the feature `columns` to take and their output names `outs`."""

    feats: pl.DataFrame
    label_entities: list[str]
    label_ts: str
    view_entities: list[str]
    view_ts: str
    ttl_s: float | None
    columns: list[str]
    outs: list[str]
    what: str = "feature view"


def _left_keys(labels: pl.DataFrame, j: ViewJoin, i: int) -> dict[str, pl.Series]:
    """The labels' key columns for view join `i`, cast to the view's types (checked)."""
    check_columns(labels, j.label_entities, "labels", "entity")
    lt = check_timestamp(labels, j.label_ts, "labels")
    check_columns(j.feats, j.view_entities, j.what, "entity")
    ft = check_timestamp(j.feats, j.view_ts, j.what)
    ltz, ftz = _tz(lt), _tz(ft)
    if (ltz is None) != (ftz is None):
        naive, aware = ("labels", j.what) if ltz is None else (j.what, "labels")
        raise InvalidInputError(
            f"timestamp column {j.label_ts!r} of labels is timezone-"
            f"{'naive' if ltz is None else 'aware'} ({lt}) but {j.view_ts!r} of {j.what} is "
            f"timezone-{'naive' if ftz is None else 'aware'} ({ft}): make {naive} "
            f"timezone-aware (.dt.replace_time_zone('UTC')) or {aware} naive"
        )
    out = {}
    for k, (le, ve) in enumerate(zip(j.label_entities, j.view_entities)):
        s, target = labels.get_column(le), j.feats.schema[ve]
        if s.dtype != target:
            try:
                s = s.cast(target, strict=True)
            except Exception:
                raise InvalidInputError(
                    f"entity column {le!r} of labels ({s.dtype}) does not match {ve!r} of "
                    f"{j.what} ({target})"
                ) from None
        out[f"__mj_e{i}_{k}"] = s
    out[f"__mj_t{i}"] = _as_datetime(labels.get_column(j.label_ts), _finest(lt, ft), ftz)
    return out


# both sides are sorted here; polars >= 1.2 would otherwise re-check it (or warn that it
# cannot, with `by`); polars 1.0-1.1 have no such argument
_ASOF_KW = (
    {"check_sortedness": False}
    if "check_sortedness" in inspect.signature(pl.DataFrame.join_asof).parameters
    else {}
)
# a left join keeps the labels' order: by default before polars 1.18 (no argument), by
# `maintain_order="left"` since
_LEFT_ORDER_KW = (
    {"maintain_order": "left"}
    if "maintain_order" in inspect.signature(pl.DataFrame.join).parameters
    else {}
)
_IDX = "__mj_idx"  # a row number column, dropped before the join


def _right(j: ViewJoin, i: int, unit: str) -> pl.DataFrame:
    """The view's rows ready for the as-of join: keys renamed to join `i`'s, null keys
    dropped, one row per entity and timestamp (the one registered last), sorted by time."""
    ents = [f"__mj_e{i}_{k}" for k in range(len(j.view_entities))]
    ts = f"__mj_t{i}"
    keys = [*ents, ts]
    df = (
        j.feats.select(
            *(pl.col(v).alias(e) for v, e in zip(j.view_entities, ents)),
            *(pl.col(c).alias(o) for c, o in zip(j.columns, j.outs)),
        )
        .with_columns(
            _as_datetime(j.feats.get_column(j.view_ts), unit, _tz(j.feats.schema[j.view_ts])).alias(
                ts
            )
        )
        .drop_nulls(keys)
        # a stable sort keeps the registration order among equal timestamps, so the last
        # row of each (entity, timestamp) is the one registered last
        .sort(ts, maintain_order=True)
    )
    # duplicates of (entity, timestamp) lie among rows sharing a timestamp with a neighbour:
    # dedupe only those (usually few) instead of hashing every row
    tied = (pl.col(ts) == pl.col(ts).shift(1)) | (pl.col(ts) == pl.col(ts).shift(-1))
    df = df.with_row_index(_IDX)
    sub = df.filter(tied.fill_null(False))
    if not sub.height:
        return df.drop(_IDX)
    drop = sub.filter(~pl.struct(keys).is_last_distinct()).get_column(_IDX).to_numpy()
    keep = np.ones(df.height, dtype=bool)
    keep[drop] = False  # _IDX is the row number
    return df.drop(_IDX).filter(pl.Series(keep))


def point_in_time_many(labels: pl.DataFrame, joins: list[ViewJoin]) -> pl.DataFrame:
    """The features of every view join as of each row of `labels` (one output row per label
    row, in order; columns named by each join's `outs`): the module docstring's rule.

    Views read at the same labels timestamp column share one sort of the labels."""
    rows = pl.int_range(0, labels.height, dtype=pl.UInt32, eager=True)
    parts: dict[str, pl.Series] = {}
    groups: dict[str, list[int]] = {}
    for i, j in enumerate(joins):
        groups.setdefault(j.label_ts, []).append(i)
    for group in groups.values():
        left = {_ROW: rows}
        for i in group:
            left.update(_left_keys(labels, joins[i], i))
        lf = pl.DataFrame(left)
        first = f"__mj_t{group[0]}"
        # the same labels column in every join of the group: one order serves them all
        cur = lf.filter(pl.col(first).is_not_null()).sort(first)
        for i in group:
            j = joins[i]
            ts = f"__mj_t{i}"
            unit = lf.schema[ts].time_unit
            ents = [f"__mj_e{i}_{k}" for k in range(len(j.view_entities))]
            cur = cur.join_asof(
                _right(j, i, unit),
                on=ts,
                by=ents,
                strategy="backward",
                tolerance=None if j.ttl_s is None else timedelta(seconds=j.ttl_s),
                **_ASOF_KW,
            )
        outs = [o for i in group for o in joins[i].outs]
        got = cur.select(_ROW, *outs)
        if got.height == lf.height:  # no null timestamps: restoring the label order is a sort
            got = got.sort(_ROW)
        else:
            got = lf.select(_ROW).join(got, on=_ROW, how="left", **_LEFT_ORDER_KW)
        parts.update({o: got.get_column(o) for o in outs})
    return (
        pl.DataFrame([parts[o] for j in joins for o in j.outs], schema=None)
        if joins
        else pl.DataFrame()
    )


def point_in_time(
    labels: pl.DataFrame,
    label_entities: list[str],
    label_ts: str,
    feats: pl.DataFrame,
    view_entities: list[str],
    view_ts: str,
    ttl_s: float | None,
    columns: list[str],
    what: str = "feature view",
) -> pl.DataFrame:
    """The `columns` of `feats` as of each row of `labels` (one output row per label row, in
    order): the module docstring's rule, for one view. Checks the key columns first."""
    join = ViewJoin(
        feats, label_entities, label_ts, view_entities, view_ts, ttl_s, columns, columns, what
    )
    return point_in_time_many(labels, [join])


def _keys(view: FeatureViewInfo, entity: Any, timestamp: str | None) -> tuple[list[str], str]:
    if entity is None:
        ents = list(view.entities)
    else:
        ents = [entity] if isinstance(entity, str) else list(entity)
        if len(ents) != len(view.entities) or not all(isinstance(e, str) for e in ents):
            raise InvalidInputError(
                f"entity={entity!r} must name one labels column per entity column of feature "
                f"view {view.name!r} ({', '.join(view.entities)})"
            )
    return ents, timestamp or view.timestamp


def _run_id(store, run: Any) -> int | None:
    from ..tracking.api import active_run, resolve_run

    if run is False:
        return None
    if run is None:
        run = active_run()
        if run is None:
            return None
    return resolve_run(run, store)


def training_set(
    labels: Any,
    features: list[str] | str,
    *,
    timestamp: str | None = None,
    entity: str | list[str] | None = None,
    name: str = "training_set",
    full_names: bool = False,
    run: Any = None,
    record: bool = True,
) -> Any:
    """Labels joined with feature values as of each label's time (see the module docstring).

    `features`: "view:feature", "view:*" or "view@2:feature" references. `timestamp` and
    `entity` name the labels' columns (default: the views' own column names). Output
    columns are the labels' then the features' (named "view__feature" with
    `full_names=True`). The result (a polars frame, or pandas for pandas labels) is recorded
    as data version `name` with its lineage, and linked to `run` (default: the active run;
    False: none) unless `record=False`."""
    lab = frame_of(labels, "labels")
    if timestamp is not None and not isinstance(timestamp, str):
        raise InvalidInputError(f"timestamp must be a column name, got {timestamp!r}")
    refs = parse_refs(features)
    remote = _remote()
    store = None if remote is not None else _store()
    joins: list[ViewJoin] = []
    sources, taken = [], set(lab.columns)
    for view_name, version, names in refs:
        info = get_feature_view(view_name, version)
        cols, outs = _outputs(info, names, full_names, taken, "a labels column")
        ents, ts = _keys(info, entity, timestamp)
        what = f"feature view {info.name!r}"
        joins.append(
            ViewJoin(
                info.frame(), ents, ts, info.entities, info.timestamp, info.ttl_s, cols, outs, what
            )
        )
        sources.append(
            {
                "view_id": info._id,
                "data_version_id": info._data_version_id,
                "features": cols,
                "view": info.name,
                "version": info.version,
                "data_version": info.data_version,
            }
        )
    out = pl.concat([lab, point_in_time_many(lab, joins)], how="horizontal")
    if record:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"name must be a non-empty string, got {name!r}")
        if remote is not None:  # profiled here, recorded with its lineage by the server
            from ..remote import features as rfeat

            rfeat.record_training_set(remote, name, lab, out, sources, run)
            return _as_labels(out, lab, labels)
        labels_rid, _ = save_frame(store, lab, f"{name}:labels")
        out_rid, _ = save_frame(store, out, name)
        fstore.record_training_set(store, out_rid, labels_rid, sources)
        rid = _run_id(store, run)
        if rid is not None:
            dstore.link_version(store, rid, out_rid, "input", name)
    return _as_labels(out, lab, labels)


def _as_labels(out: pl.DataFrame, lab: pl.DataFrame, labels: Any) -> Any:
    """`out` as the kind of frame the labels were: pandas labels give pandas (their index)."""
    if lab is not labels and not isinstance(labels, pl.LazyFrame):
        pdf = out.to_pandas()
        pdf.index = labels.index
        return pdf
    return out


def training_set_sources(ref: str) -> pl.DataFrame:
    """What a recorded training set (data version id or name) was built from: one row per
    source (role labels/features, data_version, view, version, features)."""
    remote = _remote()
    if remote is not None:
        from ..remote import features as rfeat

        rows = rfeat.training_set_sources(remote, ref)
    else:
        store = _store()
        rows = fstore.training_set_sources(store, dstore.resolve_version(store, ref))
    return pl.DataFrame(
        {
            "role": [r["role"] for r in rows],
            "data_version": [r["data_version"] for r in rows],
            "view": [r["view"] for r in rows],
            "version": [r["version"] for r in rows],
            "features": [", ".join(r["features"]) if r["features"] else None for r in rows],
        },
        schema={
            "role": pl.String,
            "data_version": pl.String,
            "view": pl.String,
            "version": pl.Int64,
            "features": pl.String,
        },
    )


def feature_view_usage(name: str) -> pl.DataFrame:
    """Recorded training sets built from view `name` (any version) and the runs that used
    them: version, training_set (data version id), run (id), run_name, created."""
    remote = _remote()
    if remote is not None:
        from ..remote import features as rfeat

        rows = rfeat.view_usage(remote, name)
    else:
        rows = fstore.view_usage(_store(), name)
    return pl.DataFrame(
        {
            "version": pl.Series([r["version"] for r in rows], dtype=pl.Int64),
            "training_set": pl.Series([r["training_set"] for r in rows], dtype=pl.String),
            "run": pl.Series([r["run"] for r in rows], dtype=pl.String),
            "run_name": pl.Series([r["run_name"] for r in rows], dtype=pl.String),
            "created": pl.Series([int(r["created"] * 1e6) for r in rows], dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
        }
    )
