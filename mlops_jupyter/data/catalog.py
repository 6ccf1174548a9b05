"""`mj.version`: fingerprint + column profile of a DataFrame, array, file or directory, stored
once per content and linked to the active run as an input or output."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError
from ..store import data as dstore
from . import fingerprint as fpr
from .profile import frame_profile, schema_of, to_polars

# files read to profile them when versioned explicitly (larger ones get a fingerprint only)
PROFILE_MAX_BYTES = 512 << 20
_TABULAR = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ipc": "ipc",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
_DIR_LIST_MAX = 1000


@dataclass
class DataVersion:
    """A stored data version. `id` is stable: the same content always gets the same id."""

    id: str
    fingerprint: str
    name: str | None
    kind: str
    source: str | None = None
    n_rows: int | None = None
    n_cols: int | None = None
    size_bytes: int | None = None
    schema: list[dict[str, Any]] | None = None
    profile: list[dict[str, Any]] | None = None
    created: float | None = None
    is_new: bool = False
    _rid: int | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shape = f"{self.n_rows} rows x {self.n_cols} cols" if self.n_rows is not None else ""
        return f"DataVersion(id={self.id!r}, name={self.name!r}, kind={self.kind!r}{', ' + shape if shape else ''})"

    def profile_frame(self) -> pl.DataFrame:
        """The column profile as a polars DataFrame (one row per column)."""
        rows = []
        for p in self.profile or []:
            q = p.get("quantiles") or {}
            top = p.get("top") or []
            rows.append(
                {
                    "column": p["name"],
                    "dtype": p["dtype"],
                    "kind": p["kind"],
                    "count": p.get("count"),
                    "nulls": p.get("nulls"),
                    "min": p.get("min"),
                    "max": p.get("max"),
                    "mean": p.get("mean"),
                    "std": p.get("std"),
                    "p50": q.get("p50"),
                    "n_unique": p.get("n_unique"),
                    "top": ", ".join(f"{v} ({c})" for v, c in top[:3]) or None,
                }
            )
        return pl.DataFrame(rows, infer_schema_length=None)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of this version, profile included."""
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return d

    def _repr_html_(self) -> str:
        from .report import version_html

        return version_html(self)


def _from_row(d: dict[str, Any], is_new: bool = False) -> DataVersion:
    return DataVersion(
        id=d["id"],
        fingerprint=d["fingerprint"],
        name=d.get("name"),
        kind=d["kind"],
        source=d.get("source"),
        n_rows=d.get("n_rows"),
        n_cols=d.get("n_cols"),
        size_bytes=d.get("size_bytes"),
        schema=d.get("schema"),
        profile=d.get("profile"),
        created=d.get("created"),
        is_new=is_new,
        _rid=d.get("_id"),
    )


def _read_tabular(path: Path, fmt: str) -> pl.DataFrame:
    if fmt == "csv":
        return pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",")
    if fmt == "parquet":
        return pl.read_parquet(path)
    if fmt == "ipc":
        return pl.read_ipc(path)
    return pl.read_ndjson(path)


def file_record(
    path: Path, name: str | None, frame: pl.DataFrame | None = None, profile: bool | str = "auto"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record of a file: fingerprint of its bytes; a profile of `frame` (the data read from
    it) or, for tabular files within PROFILE_MAX_BYTES, of the file read here."""
    fp = fpr.file_fingerprint(path)
    size = path.stat().st_size
    rec: dict[str, Any] = {
        "id": fpr.version_id(fp),
        "fingerprint": fp,
        "name": name or path.name,
        "kind": "file",
        "source": str(path),
        "size_bytes": size,
    }
    raws: dict[str, Any] = {}
    fmt = _TABULAR.get(path.suffix.lower())
    if frame is None and fmt and profile and (profile is True or size <= PROFILE_MAX_BYTES):
        try:
            frame = _read_tabular(path, fmt)
        except Exception:
            frame = None  # not readable as its extension says: fingerprint only
    if frame is not None:
        profs, raws = frame_profile(frame)
        rec.update(n_rows=frame.height, n_cols=frame.width, profile=profs, schema=schema_of(profs))
    return rec, raws


def dir_record(path: Path, name: str | None) -> dict[str, Any]:
    """Record of a directory: fingerprint of its tree and a listing of its files."""
    fp, files = fpr.dir_fingerprint(path)
    return {
        "id": fpr.version_id(fp),
        "fingerprint": fp,
        "name": name or path.name,
        "kind": "dir",
        "source": str(path),
        "n_rows": len(files),
        "size_bytes": sum(f["size"] for f in files),
        "schema": [
            {"name": f["path"], "dtype": "file", "kind": "file", "size": f["size"]}
            for f in files[:_DIR_LIST_MAX]
        ],
    }


def identity(obj: Any, df: pl.DataFrame) -> tuple[str, str]:
    """(kind, fingerprint) of an in-memory object and its polars view."""
    if isinstance(obj, np.ndarray):
        return "numpy", fpr.array_fingerprint(obj)
    if isinstance(obj, (pl.DataFrame, pl.LazyFrame, pl.Series)):
        return "polars", fpr.frame_fingerprint(df)
    return "pandas", fpr.frame_fingerprint(df, fpr.pandas_index(obj))


def object_record(
    obj: Any,
    name: str | None,
    categorical: list[str] | None = None,
    done: dict | None = None,
    df: pl.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record (fingerprint + profile) of an in-memory object, with raw column summaries.

    `df`: the object already converted to polars; `done`: see profile.frame_profile."""
    if df is None:
        df = to_polars(obj)
    kind, fp = identity(obj, df)
    profs, raws = frame_profile(df, categorical, done)
    rec = {
        "id": fpr.version_id(fp),
        "fingerprint": fp,
        "name": name,
        "kind": kind,
        "n_rows": df.height,
        "n_cols": df.width,
        "size_bytes": int(obj.nbytes) if isinstance(obj, np.ndarray) else df.estimated_size(),
        "schema": schema_of(profs),
        "profile": profs,
    }
    return rec, raws


def build_record(
    obj: Any, name: str | None = None, categorical: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record of anything `mj.version` accepts."""
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj).expanduser()
        if not p.exists():
            raise InvalidInputError(f"no such file or directory: {p}")
        p = p.resolve()
        if p.is_dir():
            return dir_record(p, name), {}
        return file_record(p, name)
    return object_record(obj, name, categorical)


def _store():
    from ..tracking.api import current_store

    return current_store()


def _remote() -> Any:
    """The tracking server's handle when the store is http(s)://, else None."""
    from ..tracking.api import remote_url

    url = remote_url()
    if url is None:
        return None
    from ..remote.api import remote_store

    return remote_store(url)


def _has_profile(fp: str) -> bool:
    remote = _remote()
    if remote is not None:
        from ..remote import data as rdata

        return rdata.has_profile(remote, fp)
    return dstore.has_profile(_store(), fp)


def _save_remote(
    remote: Any, rec: dict[str, Any], role: str | None, run: Any, name: str | None
) -> tuple[dict[str, Any], bool, Any]:
    # the same links as locally: the active run unless run=False; the server resolves refs
    from ..remote import data as rdata
    from ..tracking.api import active_run

    if run is None:
        run = active_run()
    if run is False:
        run = None
    d, new = rdata.save_version(remote, rec, role, run, name)
    return {**d, "_id": None}, new, (run if role else None)


def _run_rid(run: Any) -> int | None:
    from ..tracking.api import active_run, resolve_run
    from ..tracking.run import Run

    if run is None:
        run = active_run()
    if run is None or run is False:
        return None
    if isinstance(run, Run):
        return run.store_id
    return resolve_run(run, _store())


def save(
    rec: dict[str, Any], role: str | None = "input", run: Any = None, name: str | None = None
) -> DataVersion:
    """Store a record (deduplicated by fingerprint) and link it to the run."""
    remote = _remote()
    if remote is not None:
        d, new, rid = _save_remote(remote, rec, role, run, name)
    else:
        store = _store()
        vrid, new = dstore.save_version(store, rec)
        rid = _run_rid(run) if role else None
        if rid is not None:
            link = name or rec.get("name")
            dstore.link_version(store, rid, vrid, role, link, rec.get("source"))
        d = dstore.get_version(store, vrid)
    v = _from_row(d, is_new=new)
    if name and not v.name:
        v.name = name
    elif name and v.name != name and rid is None:
        # A version keeps the name it was first stored under; a run's link records its own
        # name. Outside a run there is no link, so say that `name` was not recorded.
        warnings.warn(
            f"mlops-jupyter: this content is already stored as data version {v.id} named "
            f"{v.name!r}; the name {name!r} was not recorded (outside a run a version keeps "
            f"its first name; inside a run the run's link records {name!r}). Refer to it as "
            f"{v.id!r} or {v.name!r}",
            RuntimeWarning,
            3,
        )
    return v


def version(
    obj: Any,
    name: str | None = None,
    role: str = "input",
    *,
    run: Any = None,
    categorical: list[str] | None = None,
) -> DataVersion:
    """Version a polars/pandas DataFrame, numpy array, file or directory.

    The content fingerprint (xxh3-128) makes the version id: the same content gives the same
    id and is stored once. A column profile (dtype, counts, nulls, min/max/mean/std,
    quantiles, histogram sketch, top categories) is kept so stored versions can be compared
    without the data. Inside a run the version is linked to it as `role` ("input" or
    "output"); `mj.lineage(run)` shows them."""
    if role not in dstore.ROLES:
        raise InvalidInputError(f"role must be 'input' or 'output', got {role!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInputError("name must be a non-empty string")
    if isinstance(obj, DataVersion):
        rec = {"fingerprint": obj.fingerprint, "id": obj.id, "kind": obj.kind, "name": name}
        return save(rec, role, run, name)
    if not isinstance(obj, (str, os.PathLike)):
        # content already stored with a profile: only link it (no second profiling pass)
        df = to_polars(obj)
        kind, fp = identity(obj, df)
        if _has_profile(fp):
            rec = {"fingerprint": fp, "id": fpr.version_id(fp), "kind": kind, "name": name}
            return save(rec, role, run, name)
        rec, _ = object_record(obj, name, categorical, None, df)
        return save(rec, role, run, name)
    rec, _ = build_record(obj, name, categorical)
    return save(rec, role, run, name)


def get_version(ref: str | DataVersion) -> DataVersion:
    """A stored data version by id, id prefix, fingerprint or name (latest under the name)."""
    if isinstance(ref, DataVersion):
        return ref
    remote = _remote()
    if remote is not None:
        from ..remote import data as rdata

        return _from_row(rdata.get_version(remote, ref))
    store = _store()
    return _from_row(dstore.get_version(store, dstore.resolve_version(store, ref)))


def versions(name: str | None = None, limit: int = 200) -> pl.DataFrame:
    """Stored data versions, newest first (optionally only those recorded under `name`)."""
    remote = _remote()
    if remote is not None:
        from ..remote import data as rdata

        rows = rdata.list_versions(remote, name, limit)
    else:
        rows = dstore.list_versions(_store(), name, limit)
    cols = ["id", "name", "kind", "n_rows", "n_cols", "size_bytes", "source", "fingerprint"]
    frame = pl.DataFrame(
        {c: [r[c] for r in rows] for c in cols},
        schema={
            "id": pl.String,
            "name": pl.String,
            "kind": pl.String,
            "n_rows": pl.Int64,
            "n_cols": pl.Int64,
            "size_bytes": pl.Int64,
            "source": pl.String,
            "fingerprint": pl.String,
        },
    )
    created = pl.Series("created", [int(r["created"] * 1e6) for r in rows], dtype=pl.Int64)
    return frame.with_columns(created.cast(pl.Datetime("us", "UTC")))
