"""Model registry: versioned models with stages, aliases and an audit log. The files of a
version live in the store's artifact store (`store.artifacts`: the store's folder, a shared
folder, or object storage) under `models/<name>/<digest16>-<random>` (files.py).

    v = mj.register_model("mnist-cnn", model, init_kwargs={"hidden": 64})
    mj.promote_model("mnist-cnn", v, "staging")
    mj.promote_model("mnist-cnn", v, "production", reason="beats v3 on val_acc")
    model = mj.load_model("mnist-cnn", stage="production")

Stages: none -> staging -> production -> archived (see TRANSITIONS). One version is in
production at a time unless `archive_existing=False`: promoting one archives the other.
"""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InvalidInputError
from ..store import Store
from ..store import registry as rs
from ..store.registry import ModelNotFoundError, StageTransitionError
from .card import model_card
from .files import _digest, _files, _store_files  # noqa: F401  (_digest: re-exported)
from .flavors import ModelLoadError, UntrustedModelError

__all__ = [
    "STAGES",
    "TRANSITIONS",
    "ModelLoadError",
    "ModelNotFoundError",
    "StageTransitionError",
    "UntrustedModelError",
    "PROMOTION_CHECKS",
    "history",
    "model_card",
    "load_model",
    "model_path",
    "model_version",
    "models",
    "promote_model",
    "register_model",
    "remove_alias",
    "set_alias",
    "versions",
]

STAGES = ("none", "staging", "production", "archived")
# Allowed stage changes. Production is reached through staging; an archived version can
# come back to staging, or straight to production to roll back a bad release.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "none": ("staging", "archived"),
    "staging": ("production", "archived", "none"),
    "production": ("archived", "staging"),
    "archived": ("staging", "production"),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Promotion gates: fn(version_info, stage) -> reason to refuse, or None. Features add theirs
# (e.g. mj.privacy.set_promotion_policy requires a recorded privacy guarantee).
PROMOTION_CHECKS: list = []


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (e.g. a container without passwd entry)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _store() -> Store:
    from ..tracking.api import current_store

    return current_store()


def _remote() -> str | None:
    """The tracking server's URL when MLOPS_JUPYTER_STORE is http(s)://: the registry then
    goes through its routes (remote/registry.py), else None."""
    from ..tracking.api import remote_url

    return remote_url()


def _check_name(name: Any, what: str = "model name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"{what} must be 1-128 characters of letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit), got {name!r}"
        )
    return name


def _check_version(version: Any) -> int:
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)  # from the command line
    if isinstance(version, (bool, float)) or not hasattr(version, "__index__"):
        raise InvalidInputError(f"version must be a positive integer, got {version!r}")
    v = int(version.__index__())
    if v < 1:
        raise InvalidInputError(f"version must be a positive integer, got {version!r}")
    return v


def _check_stage(stage: Any) -> str:
    if stage not in STAGES:
        raise InvalidInputError(f"stage must be one of {STAGES}, got {stage!r}")
    return stage


def _run_rid(store: Store, run: Any) -> tuple[int | None, dict]:
    """The run row id to link and its last metric values (for default metrics)."""
    from ..store import metrics as mstore
    from ..store import runs as rstore
    from ..tracking import Run
    from ..tracking.api import active_run

    if run is None:
        run = active_run()
        if run is None:
            return None, {}
    if isinstance(run, Run):
        run.flush()
        rid = run.store_id
    elif isinstance(run, str):
        rid = rstore.resolve_run(store, run)
    else:
        raise InvalidInputError(f"run must be a Run or a run id/name, got {type(run).__name__}")
    return rid, mstore.last_values(store, rid)


def register_model(
    name: str,
    model_or_path: Any,
    run: Any = None,
    metrics: dict[str, float] | None = None,
    *,
    init_kwargs: dict[str, Any] | None = None,
    alias: str | None = None,
    description: str | None = None,
    format: str = "",
    metadata: dict[str, Any] | None = None,
    signature: dict[str, Any] | None = None,
) -> int:
    """Store a new version of model `name` and return its version number (1, 2, ...).

    `model_or_path`: a torch or MLX module (weights + class reference; pass `init_kwargs`
    if its constructor needs arguments), a file/folder path, or any picklable object.
    `run`: the run it came from (default: the active run, if any); `metrics` default to
    that run's last metric values. `alias`: also point this alias (e.g. "candidate") at it.
    `metadata`: JSON-able facts kept with the version (model card); a run trained with
    mj.privacy adds its guarantee under "privacy" (epsilon, delta, accountant, steps).
    `signature`: the input the model takes, checked by `mlops-jupyter serve` (e.g.
    `{"x": {"shape": [4], "dtype": "float32"}}`, `{"columns": {"age": "int64"}}`, or
    `mj.serving.infer_signature(batch)`; see docs/serving.md).
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    from . import flavors

    _check_name(name)
    if alias is not None:
        _check_name(alias, "alias")
    if metrics is not None and not isinstance(metrics, dict):
        raise InvalidInputError(f"metrics must be a dict, got {type(metrics).__name__}")
    if signature is not None:
        from ..serving.signature import normalize

        signature = normalize(signature)
    flavor = flavors.flavor_of(model_or_path)
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        save = lambda d: flavors.save(model_or_path, d, flavor, init_kwargs, format)  # noqa: E731
        return remote.register(
            url, name, flavor, save, run, metrics, alias, description, metadata, signature
        )
    store = _store()
    rid, run_metrics = _run_rid(store, run)
    if metrics is None:
        metrics = run_metrics
    try:
        metrics = {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError):
        raise InvalidInputError("metrics values must be numbers") from None
    # Files first, then the row: a crash leaves unreferenced files (`artifacts gc` finds
    # them), never a version whose files are missing.
    meta, rel, digest, size = _store_files(
        store.artifacts, name, lambda d: flavors.save(model_or_path, d, flavor, init_kwargs, format)
    )
    metadata = dict(metadata or {})
    if rid is not None and "privacy" not in metadata:
        from ..privacy.guarantee import flush_run, from_run_detail
        from ..store import query

        uid = query.run_detail(store, rid)["id"]
        flush_run(uid)  # the newest epsilon of a training still tracked
        if (g := from_run_detail(query.run_detail(store, rid))) is not None:
            metadata["privacy"] = g
    if metadata:
        meta = {**meta, "metadata": metadata}
    if signature is not None:
        meta = {**meta, "signature": signature}
    version = rs.create_version(
        store, name, flavor, rel, digest, size, rid, metrics, meta, _user(), description
    )
    if alias is not None:
        rs.set_alias(store, name, alias, version, _user())
    return version


def model_version(
    name: str, version: int | None = None, stage: str | None = None, alias: str | None = None
) -> dict[str, Any]:
    """Details of one version (see load_model for how it is chosen)."""
    _check_name(name)
    if sum(x is not None for x in (version, stage, alias)) > 1:
        raise InvalidInputError("give at most one of version=, stage=, alias=")
    if version is not None:
        version = _check_version(version)
    if stage is not None:
        _check_stage(stage)
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        return remote.find_version(url, name, version, stage, alias)
    return rs.find_version(_store(), name, version, stage, alias)


def model_path(name: str, version: int | None = None, stage=None, alias=None) -> Path:
    """Local folder holding the stored files of a version: the stored folder itself in a
    local artifact store; with object storage a cached copy (downloaded, and refreshed when
    the stored objects change), so writing into it changes nothing stored."""
    info = model_version(name, version, stage, alias)
    return _files(info, verify=False)


def load_model(
    name: str,
    stage: str | None = None,
    alias: str | None = None,
    version: int | None = None,
    *,
    into: Any = None,
    map_location: str = "cpu",
    verify: bool = True,
    trusted: bool = False,
) -> Any:
    """Load a registered model: by `version=`, `stage=` (newest version in that stage) or
    `alias=`; with none, the production version, else the newest one.

    torch/MLX modules come back rebuilt with their weights (in the train/eval mode they
    were saved in); paths come back as a local Path (with object storage, a cached copy);
    other objects unpickled.
    `verify` re-hashes the stored files and refuses ones that changed.
    `trusted=True` allows a full unpickle (objects of your own classes; module structures
    naming them): only for models you registered yourself, as unpickling can run code.
    Without it such a model raises UntrustedModelError."""
    from . import flavors

    if not isinstance(trusted, bool):
        raise InvalidInputError(f"trusted must be True or False, got {trusted!r}")

    info = model_version(name, version, stage, alias)
    folder = _files(info, verify)
    return flavors.load(folder, info["flavor"], info["meta"], into, map_location, trusted)


def promote_model(
    name: str,
    version: int,
    stage: str,
    reason: str | None = None,
    *,
    archive_existing: bool = True,
) -> list[dict[str, Any]]:
    """Move `version` of `name` to `stage` following TRANSITIONS, recording who, when and
    why. Entering production archives the previous production version unless
    `archive_existing=False`. Returns the transitions made."""
    _check_name(name)
    version = _check_version(version)
    _check_stage(stage)
    if reason is not None and not isinstance(reason, str):
        raise InvalidInputError("reason must be a string")
    if not isinstance(archive_existing, bool):
        raise InvalidInputError(f"archive_existing must be True or False, got {archive_existing!r}")
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        if PROMOTION_CHECKS:  # this process's own gates; the server applies the stored policy
            _run_checks(remote.find_version(url, name, version), stage)
        return remote.promote(url, name, version, stage, reason, archive_existing)
    return promote_in(_store(), name, version, stage, reason, archive_existing, _user())


def _run_checks(info: dict[str, Any], stage: str) -> None:
    for check in list(PROMOTION_CHECKS):
        if (why := check(info, stage)) is not None:
            raise StageTransitionError(f"promotion refused: {why}")


def promote_in(
    store: Store,
    name: str,
    version: int,
    stage: str,
    reason: str | None,
    archive_existing: bool,
    user: str,
) -> list[dict[str, Any]]:
    """promote_model on `store` as `user` (arguments checked): the model's stored policy,
    this process's PROMOTION_CHECKS, then the transition. The tracking server calls it."""
    from ..loop.policy import check_promotion  # the model's stored policy (mj.set_model_policy)

    if (why := check_promotion(store, name, version, stage)) is not None:
        raise StageTransitionError(f"promotion refused: {why}")
    if PROMOTION_CHECKS:
        _run_checks(rs.find_version(store, name, version), stage)
    return rs.transition(store, name, version, stage, TRANSITIONS, reason, user, archive_existing)


def set_alias(name: str, alias: str, version: int) -> int | None:
    """Point `alias` (e.g. "champion") at `version`; returns the version it pointed to."""
    _check_name(name)
    _check_name(alias, "alias")
    if alias in STAGES:
        raise InvalidInputError(f"{alias!r} is a stage name; choose another alias")
    version = _check_version(version)
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        return remote.set_alias(url, name, alias, version)
    return rs.set_alias(_store(), name, alias, version, _user())


def remove_alias(name: str, alias: str) -> int | None:
    """Delete an alias; returns the version it pointed to."""
    _check_name(name)
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        return remote.set_alias(url, name, _check_name(alias, "alias"), None)
    return rs.set_alias(_store(), name, alias, None, _user())


def versions(name: str | None = None) -> pl.DataFrame:
    """Registered versions (of one model or all): name, version, stage, aliases, flavor,
    run_id, created, created_by, size and `metrics.<k>` columns."""
    if name is not None:
        _check_name(name)
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        rows = remote.list_versions(url, name)  # ModelNotFoundError for an unknown name
    else:
        rows = rs.list_versions(_store(), name)
        if name is not None and not rows:
            rs.find_version(_store(), name)  # raises ModelNotFoundError with known names
    base = {
        "name": pl.Series([r["name"] for r in rows], dtype=pl.String),
        "version": pl.Series([r["version"] for r in rows], dtype=pl.Int64),
        "stage": pl.Series([r["stage"] for r in rows], dtype=pl.String),
        "aliases": pl.Series([",".join(r["aliases"]) for r in rows], dtype=pl.String),
        "flavor": pl.Series([r["flavor"] for r in rows], dtype=pl.String),
        "run_id": pl.Series([r["run_id"] for r in rows], dtype=pl.String),
        "created": pl.Series([int(r["created"] * 1e6) for r in rows], dtype=pl.Int64).cast(
            pl.Datetime("us", "UTC")
        ),
        "created_by": pl.Series([r["created_by"] for r in rows], dtype=pl.String),
        "size": pl.Series([r["size"] for r in rows], dtype=pl.Int64),
    }
    keys = sorted({k for r in rows for k in r["metrics"]})
    for k in keys:
        base[f"metrics.{k}"] = pl.Series([r["metrics"].get(k) for r in rows], dtype=pl.Float64)
    return pl.DataFrame(base)


def models() -> pl.DataFrame:
    """One row per model: name, latest version, production/staging versions, aliases."""
    df = versions()
    if df.is_empty():
        return pl.DataFrame(
            schema={
                "name": pl.String,
                "latest": pl.Int64,
                "production": pl.Int64,
                "staging": pl.Int64,
                "versions": pl.UInt32,
            }
        )
    return (
        df.group_by("name", maintain_order=True)
        .agg(
            pl.col("version").max().alias("latest"),
            pl.col("version").filter(pl.col("stage") == "production").max().alias("production"),
            pl.col("version").filter(pl.col("stage") == "staging").max().alias("staging"),
            pl.len().alias("versions"),
        )
        .sort("name")
    )


def history(name: str | None = None) -> pl.DataFrame:
    """Audit log of registrations, stage transitions and alias moves, oldest first:
    time, model, version, action, from_stage, to_stage, alias, reason, user."""
    if (url := _remote()) is not None:
        from ..remote import registry as remote

        rows = remote.audit_log(url, name)
    else:
        rows = rs.audit_log(_store(), name)
    cols = [
        "time",
        "model",
        "version",
        "action",
        "from_stage",
        "to_stage",
        "alias",
        "reason",
        "user",
    ]
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    out = {
        c: pl.Series(v, dtype=pl.Int64 if c == "version" else pl.String)
        for c, v in data.items()
        if c != "time"
    }
    t = pl.Series([int(x * 1e6) for x in data["time"]], dtype=pl.Int64).cast(
        pl.Datetime("us", "UTC")
    )
    return pl.DataFrame({"time": t, **out})
