"""The online store: the latest feature values per entity, for serving.

`mj.materialize(view, start=None, end=None)` writes, for each entity, the latest row of the
view's current offline data whose timestamp is in [start, end] (end: now) to the online
store; the feature timestamp is kept with the values and an older value never overwrites a
newer one. `mj.online_features(entities, features)` reads them back: one row per requested
entity, in request order; unknown entities, and values older than the view's TTL
(now - feature_ts > ttl), are null, as in `mj.training_set` with labels at "now".

Backends: the team store itself (a table, SQLite or PostgreSQL; the default; through the
tracking server's routes for a remote client) or Redis when
MLOPS_JUPYTER_ONLINE_STORE=redis://host:port/db."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

import polars as pl

from ..errors import InvalidInputError
from ..store import features as fstore
from ..store import features_online as ostore
from .join import _outputs, parse_refs
from .views import (
    FeatureView,
    FeatureViewInfo,
    _info,
    _remote,
    _store,
    check_name,
    frame_of,
    get_feature_view,
)

ENV = "MLOPS_JUPYTER_ONLINE_STORE"
_DATETIME = re.compile(r"Datetime\(time_unit='(\w+)', time_zone=(?:'([^']*)'|None)\)")


class OnlineBackend(Protocol):
    """Where online features live. `name` is recorded with each materialization."""

    name: str

    def write(
        self, view: str, version: int, rows: list[tuple[str, float, dict[str, Any]]]
    ) -> int: ...

    def read(
        self, view: str, version: int, keys: list[str], features: list[str]
    ) -> dict[str, tuple[float, list[Any]]]: ...


class StoreOnline:
    """Online features in a table of the team store (one transaction per materialization)."""

    name = "store"

    def __init__(self, store) -> None:
        self.store = store

    def write(self, view: str, version: int, rows: list[tuple[str, float, dict[str, Any]]]) -> int:
        enc = [(k, ts, json.dumps(v, default=str)) for k, ts, v in rows]
        return ostore.upsert_online(self.store, view, version, enc)

    def read(
        self, view: str, version: int, keys: list[str], features: list[str]
    ) -> dict[str, tuple[float, list[Any]]]:
        got = ostore.read_online(self.store, view, version, keys)
        # one JSON parse for the whole batch: far cheaper than one per entity
        dicts = json.loads("[" + ",".join(v for _, v in got.values()) + "]")
        return {
            k: (ts, [d.get(f) for f in features]) for (k, (ts, _)), d in zip(got.items(), dicts)
        }


_redis: dict[str, OnlineBackend] = {}


def backend(store=None) -> OnlineBackend:
    """The configured online backend: Redis when MLOPS_JUPYTER_ONLINE_STORE is a redis://
    (or rediss://) URL, else the team store (its table through the tracking server when
    the store is http(s)://)."""
    url = os.environ.get(ENV, "").strip()
    if not url or url == "store":
        remote = _remote() if store is None else None
        if remote is not None:  # the same table, through the tracking server
            from ..remote.features import ServerOnline

            return ServerOnline(remote)
        return StoreOnline(store or _store())
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidInputError(
            f"{ENV} must be a redis://host:port/db URL (or 'store' for the team store),"
            f" got {url.split('@')[-1]!r}"
        )
    if url not in _redis:
        from .redis_store import RedisOnline

        _redis[url] = RedisOnline(url)
    return _redis[url]


@dataclass
class OnlineMaterialization:
    """What `materialize` wrote: view version, entities written, range, backend."""

    view: str
    version: int
    rows: int
    start: datetime | None
    end: datetime
    backend: str


def _epoch_s(v: Any, what: str) -> float:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=timezone.utc).timestamp()
    if isinstance(v, str):
        try:
            return _epoch_s(datetime.fromisoformat(v), what)
        except ValueError:
            pass
    raise InvalidInputError(f"{what} must be a datetime, a date or an ISO time, got {v!r}")


def _get(store, name: str, version: int | None) -> FeatureViewInfo:
    if store is None:
        return get_feature_view(name, version)
    return _info(fstore.get_view(store, check_name(name), version))


def _resolve(view: Any, version: int | None, store=None) -> FeatureViewInfo:
    if isinstance(view, FeatureViewInfo):
        return view if version is None else _get(store, view.name, version)
    if isinstance(view, FeatureView):
        return _get(store, view.name, version)
    if isinstance(view, str):
        name, _, ver = view.partition("@")
        if ver:
            if not ver.isdigit():
                raise InvalidInputError(f"bad feature view reference {view!r} (use 'name@2')")
            version = int(ver)
        return _get(store, name, version)
    raise InvalidInputError(
        f"view must be a feature view name, a @feature_view function or a FeatureViewInfo,"
        f" got {type(view).__name__}"
    )


def _ts_seconds(df: pl.DataFrame, col: str) -> pl.Expr:
    dt = df.schema[col]
    c = pl.col(col).cast(pl.Datetime("us")) if isinstance(dt, pl.Date) else pl.col(col)
    return c.dt.epoch("us").cast(pl.Float64) / 1e6


def _enc(v: Any) -> str:
    # ints are most entity ids: str() is what json.dumps writes for them, only faster
    if type(v) is int:
        return str(v)
    return json.dumps(v, default=str)


def _key(vals: tuple | list) -> str:
    """The online key of an entity: its values as a compact JSON list."""
    return "[" + ",".join(map(_enc, vals)) + "]"


def materialize(
    view: Any,
    start: Any = None,
    end: Any = None,
    *,
    version: int | None = None,
) -> OnlineMaterialization:
    """Write each entity's latest feature row with timestamp in [start, end] (end default
    now; naive times read as UTC; `start` may be a timedelta before `end`) from the view's
    offline data (its current version, or `version` / "name@2") to the online store."""
    info = _resolve(view, version)
    end_s = time.time() if end is None else _epoch_s(end, "end")
    if isinstance(start, timedelta):
        start_s = end_s - start.total_seconds()
    else:
        start_s = None if start is None else _epoch_s(start, "start")
    if start_s is not None and start_s > end_s:
        raise InvalidInputError("start is after end: nothing to materialize")
    remote = _remote()
    store = None if remote is not None else _store()
    be = backend(store)
    df = info.frame()
    ents, ts = info.entities, info.timestamp
    sec = _ts_seconds(df, ts)
    cond = sec <= end_s if start_s is None else sec.is_between(start_s, end_s)
    latest = (
        df.drop_nulls([*ents, ts])
        .filter(cond)
        .with_columns(sec.alias("__mj_s"))
        .sort([*ents, ts], maintain_order=True)  # ties keep registration order: last wins
        .unique(subset=ents, keep="last", maintain_order=True)
    )
    feats = info.features
    keys = latest.select(ents).rows()
    rows = [
        (_key(k), s, dict(zip(feats, v)))
        for k, s, v in zip(keys, latest.get_column("__mj_s"), latest.select(feats).rows())
    ]
    be.write(info.name, info.version, rows)
    if remote is not None:
        from ..remote import features as rfeat

        rfeat.record_online(remote, info.name, info.version, be.name, start_s, end_s, len(rows))
    else:
        ostore.record_online_materialization(store, info._id, be.name, start_s, end_s, len(rows))

    def as_dt(s: float | None) -> datetime | None:
        return None if s is None else datetime.fromtimestamp(s, timezone.utc)

    return OnlineMaterialization(
        info.name, info.version, len(rows), as_dt(start_s), as_dt(end_s), be.name
    )


def _dtype(s: str) -> pl.DataType | None:
    """The polars dtype a schema string names (simple types and Datetime), else None."""
    m = _DATETIME.fullmatch(s)
    if m:
        return pl.Datetime(m.group(1), m.group(2))
    t = getattr(pl, s, None)
    if isinstance(t, type) and issubclass(t, pl.DataType):
        try:
            return t()
        except TypeError:
            return None
    return None


_PLAIN = (pl.Float64, pl.Float32, pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.Boolean, pl.String)


def _columns(
    rows: list[list[Any]], cols: list[str], outs: list[str], dtypes: dict[str, Any]
) -> dict[str, pl.Series]:
    """The feature columns of `rows` (one list of values per entity). Plain numbers,
    booleans and strings are built in one row-oriented frame (one conversion instead of one
    per column); the others column by column with their own rules (`_column`)."""
    got: dict[str, pl.Series] = {}
    plain = [i for i, c in enumerate(cols) if dtypes.get(c) in _PLAIN]
    if len(plain) > 1 and rows:
        try:
            frame = pl.DataFrame(
                [[r[i] for i in plain] for r in rows],
                schema={outs[i]: dtypes[cols[i]] for i in plain},
                orient="row",
                strict=False,
            )
            got.update({outs[i]: frame.get_column(outs[i]) for i in plain})
        except Exception:  # a value the JSON round trip changed: column by column below
            got = {}
    columns = list(zip(*rows)) if rows else [()] * len(cols)
    for i, (c, o) in enumerate(zip(cols, outs)):
        if o not in got:
            got[o] = _column(list(columns[i]), dtypes.get(c), o)
    return {o: got[o] for o in outs}


def _column(vals: list[Any], dtype: pl.DataType | None, name: str) -> pl.Series:
    if isinstance(dtype, (pl.Datetime, pl.Date)):
        s = pl.Series(name, vals, dtype=pl.String)
        if isinstance(dtype, pl.Date):
            return s.str.to_date("%Y-%m-%d")
        s = s.str.to_datetime(
            time_unit=dtype.time_unit, time_zone="UTC" if dtype.time_zone else None
        )
        return s.dt.convert_time_zone(dtype.time_zone) if dtype.time_zone else s
    if dtype is not None:
        try:
            return pl.Series(name, vals, dtype=dtype, strict=False)
        except Exception:  # a type the JSON round trip changed: let polars infer it
            pass
    return pl.Series(name, vals)


def _request(entities: Any, infos: list[FeatureViewInfo]) -> pl.DataFrame:
    """The requested entities as a frame with each view's entity columns."""
    if isinstance(entities, dict):
        try:
            return pl.DataFrame(entities)
        except Exception as e:
            raise InvalidInputError(f"entities: cannot read the columns given: {e}") from None
    if isinstance(entities, (pl.DataFrame, pl.LazyFrame)) or (
        type(entities).__module__.startswith("pandas") and type(entities).__name__ == "DataFrame"
    ):
        return frame_of(entities, "entities")
    if isinstance(entities, (str, bytes)) or not hasattr(entities, "__iter__"):
        raise InvalidInputError(
            "entities must be a list of entity ids, a dict of entity columns or a frame"
        )
    cols = {tuple(i.entities) for i in infos}
    if len(cols) != 1:
        raise InvalidInputError(
            "the views requested have different entity columns "
            f"({'; '.join(', '.join(c) for c in sorted(cols))}): pass entities as a dict or a"
            " frame with those columns"
        )
    names = list(next(iter(cols)))
    vals = list(entities)
    if len(names) == 1:
        return pl.DataFrame({names[0]: vals})
    if not all(isinstance(v, (tuple, list)) and len(v) == len(names) for v in vals):
        raise InvalidInputError(
            f"entities: each entity of a compound key ({', '.join(names)}) must be a tuple of "
            f"{len(names)} values"
        )
    return pl.DataFrame(
        [list(c) for c in zip(*vals)] if vals else [[]] * len(names), schema=names, orient="col"
    )


def online_features(
    entities: Any,
    features: list[str] | str,
    *,
    full_names: bool = False,
) -> pl.DataFrame:
    """The online feature values of `entities` (a list of ids, a dict of entity columns or a
    frame): one row per entity in request order, the entity columns then the features;
    null for entities not materialized and values beyond the view's TTL."""
    refs = parse_refs(features)
    store = None if _remote() is not None else _store()
    infos = [_resolve(v, ver, store) for v, ver, _ in refs]
    req = _request(entities, infos)
    be = backend(store)
    now = time.time()
    out: dict[str, pl.Series] = {}
    taken = set(req.columns)
    for info, (_, _, names) in zip(infos, refs):
        cols, outs = _outputs(info, names, full_names, taken, "an entity column")
        if not _materialized(store, info, be.name):
            raise InvalidInputError(
                f"feature view {info.name!r} version {info.version} has not been materialized "
                f"to the online store ({be.name}): run mj.materialize({info.name!r})"
            )
        keys, typed = _keys(req, info)
        if len(refs) == 1:  # the entity columns in the view's types (an empty list too)
            req = req.with_columns(typed)
        got = be.read(info.name, info.version, [k for k in keys if k is not None], cols)
        oldest = -float("inf") if info.ttl_s is None else now - info.ttl_s
        rows = []
        for k in keys:
            hit = got.get(k) if k is not None else None
            rows.append(None if hit is None or hit[0] < oldest else hit[1])
        nulls = [None] * len(cols)
        filled = [nulls if r is None else r for r in rows]
        dtypes = {c["name"]: _dtype(c["dtype"]) for c in info.schema}
        out.update(_columns(filled, cols, outs, dtypes))
    return pl.concat([req, pl.DataFrame(list(out.values()))], how="horizontal") if out else req


_seen: set[tuple[str, int, str]] = set()


def _materialized(store, info: FeatureViewInfo, backend_name: str) -> bool:
    """Whether the view version was materialized to the backend (a yes is remembered).
    `store` None: the tracking server's log."""
    remote = _remote() if store is None else None
    key = (remote.key if remote is not None else str(store), info._id, backend_name)
    if key in _seen:
        return True
    if remote is not None:
        from ..remote import features as rfeat

        done = rfeat.has_online(remote, info.name, info.version, backend_name)
    else:
        done = ostore.has_online(store, info._id, backend_name)
    if done:
        _seen.add(key)
        return True
    return False


def _keys(req: pl.DataFrame, info: FeatureViewInfo) -> tuple[list[str | None], list[pl.Series]]:
    """The online key of each requested row for a view (None where an entity is null), and
    the entity columns cast to the view's types."""
    missing = [e for e in info.entities if e not in req.columns]
    if missing:
        raise InvalidInputError(
            f"entities have no column {', '.join(map(repr, missing))} for feature view "
            f"{info.name!r} (columns: {', '.join(req.columns)})"
        )
    dtypes = {c["name"]: _dtype(c["dtype"]) for c in info.schema}
    cols, typed = [], []
    for e in info.entities:
        s = req.get_column(e)
        target = dtypes.get(e)
        if target is not None and s.dtype != target:
            try:
                s = s.cast(target, strict=True)
            except Exception:
                raise InvalidInputError(
                    f"entity column {e!r} ({s.dtype}) does not match feature view "
                    f"{info.name!r} ({target})"
                ) from None
        cols.append(s.to_list())
        typed.append(s)
    return [None if any(v is None for v in vals) else _key(vals) for vals in zip(*cols)], typed


def online_materializations(view: str | None = None) -> pl.DataFrame:
    """The log of online materializations (newest first): view, version, backend, start,
    end, rows, created."""
    remote = _remote()
    if remote is not None:
        from ..remote import features as rfeat

        rows = rfeat.online_materializations(remote, view)
    else:
        rows = ostore.online_materializations(_store(), view)

    def ts(k: str) -> pl.Series:
        return pl.Series(
            [None if r[k] is None else int(r[k] * 1e6) for r in rows], dtype=pl.Int64
        ).cast(pl.Datetime("us", "UTC"))

    return pl.DataFrame(
        {
            "view": pl.Series([r["view"] for r in rows], dtype=pl.String),
            "version": pl.Series([r["version"] for r in rows], dtype=pl.Int64),
            "backend": pl.Series([r["backend"] for r in rows], dtype=pl.String),
            "start": ts("start"),
            "end": ts("end"),
            "rows": pl.Series([r["rows"] for r in rows], dtype=pl.Int64),
            "created": ts("created"),
        }
    )
