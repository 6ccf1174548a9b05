"""Export feature views as a Feast repository (`mlops-jupyter features export --to-feast DIR`).

The repository holds feature_store.yaml (local provider, file offline store, sqlite online
store and registry under DIR/data), feature_repo.py (entities, one FileSource and one
FeatureView per view, with the view's schema and TTL) and DIR/data/<view>.parquet, a copy
of each view's offline data read through the artifact contract. This module writes text
and parquet only: it never imports feast.

The parquet copy is prepared so that Feast's point-in-time join (feature_ts <= label_ts and
label_ts - ttl <= feature_ts, both inclusive, like ours) gives exactly `mj.training_set`'s
values: rows with a null entity or timestamp are left out (ours never match them; Feast
would keep a null-timestamp row as a candidate), duplicate (entity, timestamp) rows are
reduced to the one registered last (ours; Feast's pick among ties is unspecified), Date
timestamps become midnight UTC datetimes and aware ones UTC (the same instants), and small
integer types widen to the Feast type they are declared as. Feast reads naive timestamps
as UTC on both sides, so naive labels against naive features compare as ours do.

What stays different is the shape of Feast's result (docs/features.md, "Export to Feast"):
one row per distinct (entity, timestamp) of the labels, and no row at all for a label
whose entity has feature rows but none in its window (ours: nulls).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InvalidInputError
from .views import FeatureViewInfo, get_feature_view

MANIFEST = "mlops_jupyter_export.json"
DEFS = "feature_repo.py"
_VIEW_REF = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)(?:@(\d+))?$")
_FEAST_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# polars dtype -> (Feast type, polars dtype of the parquet copy); None: as is
_SCALARS: dict[type, tuple[str, Any]] = {
    pl.Int8: ("Int32", pl.Int32),
    pl.Int16: ("Int32", pl.Int32),
    pl.Int32: ("Int32", None),
    pl.Int64: ("Int64", None),
    pl.UInt8: ("Int32", pl.Int32),
    pl.UInt16: ("Int32", pl.Int32),
    pl.UInt32: ("Int64", pl.Int64),
    pl.Float32: ("Float32", None),
    pl.Float64: ("Float64", None),
    pl.Boolean: ("Bool", None),
    pl.String: ("String", None),
    pl.Binary: ("Bytes", None),
}
# Feast entity value types for join keys
_ENTITY_TYPES = {"Int32": "INT32", "Int64": "INT64", "String": "STRING", "Bytes": "BYTES"}


def feast_type(dtype: pl.DataType, column: str, view: str) -> tuple[str, pl.DataType | None]:
    """(Feast type expression, polars dtype to cast the copy to or None) for a feature
    column; a clear error for a dtype Feast cannot hold."""
    if isinstance(dtype, pl.Datetime):
        return "UnixTimestamp", None
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        if type(inner) in _SCALARS and not isinstance(inner, pl.Binary):
            name, cast = _SCALARS[type(inner)]
            return f"Array({name})", None if cast is None else pl.List(cast)
    elif type(dtype) in _SCALARS:
        return _SCALARS[type(dtype)]
    hint = {
        pl.UInt64: "cast it to pl.Int64 if its values fit",
        pl.Date: "cast it to pl.Datetime",
        pl.Categorical: "cast it to pl.String",
        pl.Enum: "cast it to pl.String",
        pl.Decimal: "cast it to pl.Float64 or pl.String",
    }.get(
        type(dtype),
        "Feast takes integers, floats, booleans, strings, bytes, datetimes and lists of those",
    )
    raise InvalidInputError(
        f"feature {column!r} of view {view!r} has dtype {dtype}, which Feast cannot hold: {hint}"
    )


def _pick_views(views: list[str] | None) -> list[FeatureViewInfo]:
    from .views import feature_views

    if not views:  # the current version of each (through the tracking server too)
        names = feature_views().get_column("name").to_list()
        if not names:
            raise InvalidInputError("no feature views are registered: nothing to export")
        return [get_feature_view(n) for n in names]
    out: list[FeatureViewInfo] = []
    for ref in views:
        m = _VIEW_REF.match(ref.strip()) if isinstance(ref, str) else None
        if m is None:
            raise InvalidInputError(f"view {ref!r} must look like NAME or NAME@VERSION")
        info = get_feature_view(m.group(1), int(m.group(2)) if m.group(2) else None)
        if any(o.name == info.name for o in out):
            raise InvalidInputError(
                f"view {info.name!r} named twice: a Feast repository holds one version of it"
            )
        out.append(info)
    return out


def _prepared(info: FeatureViewInfo) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """The view's offline rows as Feast should read them (see the module docstring) and
    [(column, Feast type)] of its entity and feature columns."""
    if not _FEAST_NAME.match(info.name):
        # Feast's SQLite online store names a table after the view, unquoted
        raise InvalidInputError(
            f"view {info.name!r} cannot be a Feast feature view name (letters, digits and '_' "
            "only): register it under such a name to export it"
        )
    df = info.frame()
    keys = [*info.entities, info.timestamp]
    fields, casts = [], {}
    for col in [*info.entities, *info.features]:
        ftype, cast = feast_type(df.schema[col], col, info.name)
        if col in info.entities and ftype not in _ENTITY_TYPES:
            raise InvalidInputError(
                f"entity column {col!r} of view {info.name!r} has dtype {df.schema[col]}: "
                f"Feast join keys are integers, strings or bytes"
            )
        fields.append((col, ftype))
        if cast is not None:
            casts[col] = cast
    ts = df.schema[info.timestamp]
    if isinstance(ts, pl.Date):
        ts_expr = pl.col(info.timestamp).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif ts.time_zone is None:
        ts_expr = pl.col(info.timestamp)
    else:
        ts_expr = pl.col(info.timestamp).dt.convert_time_zone("UTC")
    df = df.with_columns(ts_expr, *(pl.col(c).cast(t) for c, t in casts.items()))
    df = df.drop_nulls(keys).unique(keys, keep="last", maintain_order=True)
    return df, fields


def _yaml(project: str) -> str:
    return (
        "# Written by `mlops-jupyter features export --to-feast`; re-exporting overwrites it.\n"
        f"project: {project}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        "offline_store:\n"
        "  type: file\n"
        "online_store:\n"
        "  type: sqlite\n"
        "  path: data/online_store.db\n"
        "entity_key_serialization_version: 3\n"
    )


def _defs(infos: list[FeatureViewInfo], fields: dict[str, list[tuple[str, str]]]) -> str:
    entities: dict[str, tuple[str, str]] = {}
    for info in infos:
        for col, ftype in fields[info.name]:
            if col not in info.entities:
                continue
            seen = entities.setdefault(col, (ftype, info.name))
            if seen[0] != ftype:
                raise InvalidInputError(
                    f"entity column {col!r} is {seen[0]} in view {seen[1]!r} but {ftype} in "
                    f"view {info.name!r}: one Feast entity has one type; cast one of them"
                )
    lines = [
        '"""Feast definitions of feature views exported by mlops-jupyter',
        "(`mlops-jupyter features export --to-feast`); re-exporting overwrites this file.",
        '"""',
        "",
        "from datetime import timedelta",
        "",
        "from feast import Entity, FeatureView, Field, FileSource, ValueType",
        "from feast.data_format import ParquetFormat",
        "from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String,"
        " UnixTimestamp  # noqa: F401",
        "",
        "# each entity at the top level: `feast apply` registers only module-level objects",
    ]
    for k, (col, (ftype, _)) in enumerate(entities.items()):
        lines.append(
            f"entity_{k} = Entity(name={col!r}, join_keys=[{col!r}], "
            f"value_type=ValueType.{_ENTITY_TYPES[ftype]})"
        )
    lines += ["ENTITIES = {"]
    lines += [f"    {col!r}: entity_{k}," for k, col in enumerate(entities)]
    lines += ["}", ""]
    for i, info in enumerate(infos):
        ttl = "timedelta(0)" if info.ttl_s is None else f"timedelta(seconds={info.ttl_s!r})"
        tags = {
            "mlops_jupyter.version": str(info.version),
            "mlops_jupyter.data_version": info.data_version or "",
            "mlops_jupyter.code_hash": info.code_hash or "",
        }
        schema = "\n".join(f"        Field(name={c!r}, dtype={t})," for c, t in fields[info.name])
        lines += [
            f"source_{i} = FileSource(",
            f"    name={info.name + '_source'!r},",
            f"    path={'data/' + info.name + '.parquet'!r},",
            "    file_format=ParquetFormat(),",
            f"    timestamp_field={info.timestamp!r},",
            ")",
            f"view_{i} = FeatureView(",
            f"    name={info.name!r},",
            f"    entities=[{', '.join(f'ENTITIES[{e!r}]' for e in info.entities)}],",
            f"    ttl={ttl},  # {info.ttl}; timedelta(0) is Feast's 'no limit'",
            "    schema=[",
            schema,
            "    ],",
            f"    source=source_{i},",
            "    online=True,",
            f"    description={(info.description or '')!r},",
            f"    tags={tags!r},",
            ")",
            "",
        ]
    return "\n".join(lines)


def _clear_previous(root: Path) -> None:
    """Remove what an earlier export wrote (listed in its manifest); refuse a non-empty
    folder that no export made, so nothing of the user's is overwritten."""
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInputError(f"{manifest} is not an export manifest") from None
        for rel in old:
            p = (root / rel).resolve()
            if p.parent in (root.resolve(), (root / "data").resolve()) and p.is_file():
                p.unlink()
        return
    if root.exists() and any(root.iterdir()):
        raise InvalidInputError(
            f"{root} is not empty and holds no earlier export ({MANIFEST}): choose a new or "
            "empty folder"
        )


def export_feast(
    directory: str | os.PathLike[str],
    views: list[str] | None = None,
    project: str = "mlops_jupyter",
) -> dict[str, Any]:
    """Write a Feast repository for `views` ("NAME" or "NAME@VERSION"; default: the current
    version of every view) into `directory`; returns {"dir", "views", "files"}. Re-exporting
    into the same folder replaces the earlier export (Feast's registry and online store
    there are kept: `feast apply` updates them)."""
    root = Path(directory).expanduser()
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root} exists and is not a folder")
    if not isinstance(project, str) or not _FEAST_NAME.match(project):
        raise InvalidInputError(
            f"Feast project name must be a letter then letters, digits or '_', got {project!r}"
        )
    infos = _pick_views(views)
    prepared = {info.name: _prepared(info) for info in infos}  # every check before writing
    fields = {name: f for name, (_, f) in prepared.items()}
    defs = _defs(infos, fields)
    _clear_previous(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    files = ["feature_store.yaml", DEFS]
    for info in infos:
        rel = f"data/{info.name}.parquet"
        tmp = root / (rel + ".tmp")
        prepared[info.name][0].write_parquet(tmp)
        tmp.replace(root / rel)
        files.append(rel)
    (root / "feature_store.yaml").write_text(_yaml(project))
    (root / DEFS).write_text(defs)
    (root / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")
    shutil.rmtree(root / "__pycache__", ignore_errors=True)  # Feast's import of the old defs
    return {"dir": str(root), "views": [i.name for i in infos], "files": files}
