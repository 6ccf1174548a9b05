"""Feature views: a named, versioned definition (entity columns, timestamp column, TTL,
schema, code) whose offline data is a parquet file in the artifact store, recorded as a data
version with column profiles.

Versioning: the definition hash covers the code (its syntax tree, so comments and
formatting do not count), the entity and timestamp columns, the TTL and the output schema.
The same name with the same definition is the same version (registering again only records
new data); a changed definition gets the next version, unless an explicit `version=` names
one that exists with another definition: that is refused. The definition's checks and
hashes are in definition.py (re-exported here)."""

from __future__ import annotations

import functools
import inspect
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InvalidInputError
from ..store import features as fstore
from .definition import (  # noqa: F401  (re-exported: callers import them from here)
    _entities,
    _epoch,
    check_columns,
    check_name,
    check_timestamp,
    code_of,
    definition_hash,
    format_ttl,
    frame_of,
    parse_ttl,
    user,
)


def _store():
    from ..tracking.api import current_store

    return current_store()


def _remote():
    """The tracking server's handle when the store is http(s)://, else None (the feature
    store then goes through remote/features.py)."""
    from ..tracking.api import remote_url

    url = remote_url()
    if url is None:
        return None
    from ..remote.api import remote_store

    return remote_store(url)


@dataclass
class FeatureViewInfo:
    """A registered feature view version and its latest offline materialization."""

    name: str
    version: int
    entities: list[str]
    timestamp: str
    ttl_s: float | None
    schema: list[dict[str, str]]
    features: list[str]
    code_hash: str | None
    owner: str | None
    created: float
    description: str | None = None
    code: str | None = field(default=None, repr=False)
    n_rows: int | None = None
    newest: float | None = None
    data_version: str | None = None
    is_new: bool = False
    _id: int = field(default=0, repr=False)
    _data_version_id: int | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"FeatureViewInfo({self.name!r}, version={self.version}, entity="
            f"{', '.join(self.entities)!r}, timestamp={self.timestamp!r}, ttl={self.ttl!r}, "
            f"features={self.features!r}, rows={self.n_rows}, data_version={self.data_version!r})"
        )

    @property
    def ttl(self) -> str:
        """The TTL as text ('30d'), '-' for none."""
        return format_ttl(self.ttl_s)

    def frame(self) -> pl.DataFrame:
        """The offline feature data of this version's latest materialization."""
        if self._digest is None:
            raise InvalidInputError(f"feature view {self.name!r} has no offline data yet")
        return read_offline(self._digest)


def _info(d: dict[str, Any], is_new: bool = False) -> FeatureViewInfo:
    m = d["materialization"] or {}
    keys = set(d["entities"]) | {d["timestamp"]}
    return FeatureViewInfo(
        name=d["name"],
        version=d["version"],
        entities=d["entities"],
        timestamp=d["timestamp"],
        ttl_s=d["ttl_s"],
        schema=d["schema"],
        features=[c["name"] for c in d["schema"] if c["name"] not in keys],
        code_hash=d["code_hash"],
        owner=d["owner"],
        created=d["created"],
        description=d["description"],
        code=d["code"],
        n_rows=m.get("n_rows"),
        newest=m.get("newest"),
        data_version=m.get("data_version"),
        is_new=is_new,
        _id=d["_id"],
        _data_version_id=m.get("_data_version_id"),
        _digest=m.get("digest"),
    )


@functools.lru_cache(maxsize=8)
def read_offline(digest: str) -> pl.DataFrame:
    """The parquet blob `digest` as a frame (kept for reuse: blobs never change)."""
    remote = _remote()
    if remote is not None:  # downloaded into the local cache, its digest checked
        from ..remote import features as rfeat

        return pl.read_parquet(rfeat.offline_file(remote, digest))
    return pl.read_parquet(_store().artifacts.blob_file(digest))


def register_features(
    name: str,
    frame: Any,
    *,
    entity: str | list[str],
    timestamp: str,
    ttl: Any = None,
    version: int | None = None,
    description: str | None = None,
    _code: tuple[str, str] | None = None,
) -> FeatureViewInfo:
    """Register (or update) feature view `name` from a polars/pandas frame built elsewhere:
    one row per entity and timestamp, every other column a feature. The frame is saved as
    parquet in the artifact store and recorded as a data version with column profiles."""
    check_name(name)
    ents = _entities(entity)
    if not isinstance(timestamp, str) or not timestamp:
        raise InvalidInputError(f"timestamp must be a column name, got {timestamp!r}")
    if timestamp in ents:
        raise InvalidInputError(f"timestamp column {timestamp!r} is also an entity column")
    ttl_s = parse_ttl(ttl)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise InvalidInputError(f"version must be a positive integer, got {version!r}")
    df = frame_of(frame, f"feature view {name!r}")
    check_columns(df, ents, f"feature view {name!r}", "entity")
    check_timestamp(df, timestamp, f"feature view {name!r}")
    if df.width <= len(ents) + 1:
        raise InvalidInputError(f"feature view {name!r} has no feature columns")
    schema = [{"name": c, "dtype": str(t)} for c, t in df.schema.items()]
    code, code_hash = _code or (None, None)
    rec = {
        "name": name,
        "entities": ents,
        "timestamp": timestamp,
        "ttl_s": ttl_s,
        "schema": schema,
        "def_hash": definition_hash(code_hash, ents, timestamp, ttl_s, schema),
        "code_hash": code_hash,
        "code": code,
        "description": description,
        "owner": user(),
    }
    remote = _remote()
    if remote is not None:  # the server records it with the same rules (remote/features.py)
        from ..remote import features as rfeat

        d, is_new = rfeat.register(remote, rec, version, df)
        return _info(d, is_new)
    store = _store()
    view_id, ver, is_new = fstore.register_view(store, rec, version)
    _materialize(store, view_id, name, df, timestamp)
    return get_feature_view(name, ver, _is_new=is_new)


def save_frame(store, df: pl.DataFrame, name: str | None) -> tuple[int, str]:
    """Record `df` as a data version (fingerprint + profile; a frame stored before is only
    looked up); returns (row id, version id)."""
    from ..data.catalog import identity, object_record
    from ..data.fingerprint import version_id
    from ..store import data as dstore

    kind, fp = identity(df, df)
    if dstore.has_profile(store, fp):
        rec = {"fingerprint": fp, "id": version_id(fp), "kind": kind, "name": name}
    else:
        rec, _ = object_record(df, name, df=df)
    rid, _ = dstore.save_version(store, rec)
    return rid, rec["id"]


def _materialize(store, view_id: int, name: str, df: pl.DataFrame, ts: str) -> None:
    dv_rid, _ = save_frame(store, df, f"features/{name}")
    with tempfile.TemporaryDirectory(prefix="mj-features-") as tmp:
        path = Path(tmp) / "features.parquet"
        df.write_parquet(path, statistics=True)
        digest, size = store.artifacts.put_blob(path)
    col = df.get_column(ts).drop_nulls()
    fstore.add_materialization(
        store,
        view_id,
        {
            "data_version_id": dv_rid,
            "digest": digest,
            "size": size,
            "n_rows": df.height,
            "oldest": _epoch(col.min()) if len(col) else None,
            "newest": _epoch(col.max()) if len(col) else None,
        },
    )


def get_feature_view(
    name: str, version: int | None = None, *, _is_new: bool = False
) -> FeatureViewInfo:
    """A registered feature view: `version`, or the current one (the version materialized
    last, so re-running reverted code makes its earlier version current again)."""
    check_name(name)
    remote = _remote()
    if remote is not None:
        from ..remote import features as rfeat

        return _info(rfeat.get_view(remote, name, version), _is_new)
    return _info(fstore.get_view(_store(), name, version), _is_new)


class FeatureView:
    """A function frame -> features frame, registered as a feature view when it runs.

    `view(*args)` computes the features, registers/updates the view and returns the frame;
    `view.materialize_offline(*args)` does the same and returns the FeatureViewInfo."""

    def __init__(
        self,
        fn: Callable,
        *,
        entity: str | list[str],
        timestamp: str,
        ttl: Any,
        name: str | None,
        version: int | None,
        description: str | None,
    ) -> None:
        self.fn = fn
        self.name = check_name(name or fn.__name__)
        self.entities = _entities(entity)
        self.timestamp = timestamp
        self.ttl_s = parse_ttl(ttl)
        self.version = version
        self.description = description if description is not None else inspect.getdoc(fn)
        self.code, self.code_hash = code_of(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return (
            f"FeatureView({self.name!r}, entity={self.entities!r}, timestamp={self.timestamp!r},"
            f" ttl={format_ttl(self.ttl_s)!r})"
        )

    def _register(self, out: Any) -> FeatureViewInfo:
        return register_features(
            self.name,
            out,
            entity=self.entities,
            timestamp=self.timestamp,
            ttl=self.ttl_s,
            version=self.version,
            description=self.description,
            _code=(self.code, self.code_hash),
        )

    def materialize_offline(self, *args: Any, **kwargs: Any) -> FeatureViewInfo:
        """Compute the features from the inputs and register them (offline store)."""
        return self._register(self.fn(*args, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.fn(*args, **kwargs)
        self._register(out)
        return out

    def info(self) -> FeatureViewInfo:
        """The current registered version of this view."""
        return get_feature_view(self.name)


def feature_view(
    fn: Callable | None = None,
    *,
    entity: str | list[str],
    timestamp: str,
    ttl: Any = None,
    name: str | None = None,
    version: int | None = None,
    description: str | None = None,
) -> Any:
    """Decorator: `@mj.feature_view(entity="user_id", timestamp="event_ts", ttl="30d")` on
    a function returning a polars/pandas frame of features. Each call registers the result
    (code hash, schema, owner, offline parquet + data version) and returns it."""

    def wrap(f: Callable) -> FeatureView:
        if not callable(f):
            raise InvalidInputError(f"feature_view decorates a function, got {f!r}")
        return FeatureView(
            f,
            entity=entity,
            timestamp=timestamp,
            ttl=ttl,
            name=name,
            version=version,
            description=description,
        )

    return wrap(fn) if fn is not None else wrap


def feature_views(all_versions: bool = False) -> pl.DataFrame:
    """Registered feature views: name, version, entity, timestamp, ttl, features, rows,
    freshness (newest feature timestamp), owner, created, data_version (the current version
    of each, see get_feature_view, unless `all_versions`)."""
    remote = _remote()
    if remote is not None:
        from ..remote import features as rfeat

        views = rfeat.list_views(remote, all_versions)
    else:
        views = fstore.list_views(_store(), all_versions)
    rows = [_info(d) for d in views]

    def ts(vals: list[float | None]) -> pl.Series:
        return pl.Series([None if v is None else int(v * 1e6) for v in vals], dtype=pl.Int64)

    return pl.DataFrame(
        {
            "name": pl.Series([r.name for r in rows], dtype=pl.String),
            "version": pl.Series([r.version for r in rows], dtype=pl.Int64),
            "entity": pl.Series([", ".join(r.entities) for r in rows], dtype=pl.String),
            "timestamp": pl.Series([r.timestamp for r in rows], dtype=pl.String),
            "ttl": pl.Series([r.ttl for r in rows], dtype=pl.String),
            "features": pl.Series([len(r.features) for r in rows], dtype=pl.Int64),
            "rows": pl.Series([r.n_rows for r in rows], dtype=pl.Int64),
            "freshness": ts([r.newest for r in rows]).cast(pl.Datetime("us", "UTC")),
            "owner": pl.Series([r.owner for r in rows], dtype=pl.String),
            "created": ts([r.created for r in rows]).cast(pl.Datetime("us", "UTC")),
            "data_version": pl.Series([r.data_version for r in rows], dtype=pl.String),
        }
    )
