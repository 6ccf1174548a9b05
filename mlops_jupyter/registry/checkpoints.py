"""Training checkpoints with resume, for torch and MLX.

    state = mj.resume(model=model, optimizer=opt, scheduler=sched)   # no-op on a fresh start
    for epoch in range(state.next_epoch, epochs):
        ...
        mj.checkpoint(model=model, optimizer=opt, scheduler=sched, epoch=epoch,
                      metrics={"val_loss": v}, best="val_loss", keep_last=3)

A checkpoint holds the full training state: weights, optimizer and scheduler state, epoch,
metrics and the random generators (python, numpy, torch/CUDA or MLX), so a resumed run
continues exactly where the saved one was. Files are written to a temporary name, fsync'ed
and renamed, and the manifest naming the latest/best checkpoint is replaced the same way
afterwards: a process killed mid-save leaves the previous latest checkpoint intact.

Checkpoints live in the store's artifact store under `checkpoints/<experiment>/<run name>/`
(`.mlops/checkpoints/...` for a store's own folder), or in `dir=`, so a new process starting
a run with the same name resumes from the previous one's checkpoints. With object storage
(MLOPS_JUPYTER_ARTIFACTS=s3://...) each file is written to a local working folder in the
cache first and uploaded before checkpoint() returns; the stored manifest is the one resume
reads, so a run resumes on another machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.base import checkpoint_key
from ..errors import InvalidInputError
from .ckpt_io import (
    MANIFEST,
    CheckpointError,
    Series,
    UntrustedCheckpointError,
    atomic_write,
    framework_of,
    load_mlx,
    load_torch,
    rng_state,
    save_mlx,
    save_torch,
    set_rng_state,
    valid_name,
)

__all__ = [
    "CheckpointError",
    "Resumed",
    "UntrustedCheckpointError",
    "checkpoint",
    "checkpoint_dir",
    "checkpoints",
    "resume",
]


@dataclass
class Resumed:
    """What `resume()` found. False-y when there was nothing to resume from.

    `next_epoch` is where the training loop continues (0 on a fresh start). When no
    objects were passed to resume(), the raw states are in `model_state`,
    `optimizer_state` and `scheduler_state`."""

    found: bool = False
    epoch: int | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: Any = None
    path: Path | None = None
    run_id: str | None = None
    best: dict[str, Any] | None = None
    model_state: Any = None
    optimizer_state: Any = None
    scheduler_state: Any = None

    @property
    def next_epoch(self) -> int:
        return 0 if self.epoch is None else self.epoch + 1

    def __bool__(self) -> bool:
        return self.found


# -- where --------------------------------------------------------------------------------
def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._") or "default"


def _series(name: str | None = None, dir: str | os.PathLike | None = None) -> Series:
    """The series `dir` (a plain local folder), else `checkpoints/<experiment>/<name>` in
    the store's artifact store, with `name` defaulting to the active run's name."""
    if dir is not None:
        return Series(Path(dir).expanduser())
    from ..config import cache_dir
    from ..tracking.api import active_run, current_store, remote_url

    run = active_run()
    experiment = run.experiment if run is not None else "default"
    if name is None:
        name = run.name if run is not None else "default"
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("checkpoint name must be a non-empty string")
    url = remote_url()
    if url is not None:  # a tracking server: its checkpoints/ folder, through its routes
        from ..remote.api import remote_store
        from ..remote.checkpoints import series_store

        artifacts = series_store(remote_store(url))
    else:
        artifacts = current_store().artifacts
    prefix = checkpoint_key(_slug(experiment), _slug(name))
    local = artifacts.local_path(prefix)
    if local is not None:
        return Series(local)
    # object storage: a working folder in the local cache, one per store location
    ident = hashlib.sha256(artifacts.location.encode()).hexdigest()[:16]
    return Series(cache_dir() / "checkpoints" / ident / prefix, artifacts, prefix)


def checkpoint_dir(name: str | None = None, dir: str | os.PathLike | None = None) -> Path:
    """The local folder of a checkpoint series: `dir`, else the store's
    `checkpoints/<experiment>/<name>` (with object storage, its local working copy in the
    cache), `name` defaulting to the active run's name."""
    return _series(name, dir).folder


# -- public API ---------------------------------------------------------------------------
def _clean_metrics(metrics: Any) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise InvalidInputError(f"metrics must be a dict, got {type(metrics).__name__}")
    try:
        return {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError):
        raise InvalidInputError("metrics values must be numbers") from None


def _event(kind: str, message: str, data: dict) -> None:
    """Record on the active run; never fail the training loop over it."""
    from ..tracking.api import active_run

    run = active_run()
    if run is None:
        return
    try:
        run.add_event(kind, message, data=data)
    except Exception as e:
        warnings.warn(f"mlops-jupyter: could not record the {kind}: {e}", RuntimeWarning, 3)


def checkpoint(
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    epoch: int | None = None,
    metrics: dict[str, float] | None = None,
    best: str | None = "val_loss",
    *,
    mode: str = "min",
    keep_last: int = 3,
    step: int | None = None,
    extra: Any = None,
    name: str | None = None,
    dir: str | os.PathLike | None = None,
) -> Path:
    """Save the full training state; keep the latest, the best (by `metrics[best]`, `mode`
    "min" or "max") and the last `keep_last` checkpoints. Returns the file written.

    `extra`: anything else to restore (torch: any picklable value; MLX: JSON-able)."""
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise InvalidInputError(f"epoch must be an int, got {type(epoch).__name__}")
    if not isinstance(keep_last, int) or keep_last < 1:
        raise InvalidInputError(f"keep_last must be an integer >= 1, got {keep_last!r}")
    if mode not in ("min", "max"):
        raise InvalidInputError(f"mode must be 'min' or 'max', got {mode!r}")
    mets = _clean_metrics(metrics)
    fw = framework_of(model, optimizer)
    if not fw:
        raise InvalidInputError("checkpoint() needs a torch or MLX model or optimizer")
    if scheduler is not None and fw == "mlx":
        raise InvalidInputError(
            "MLX schedules live in the optimizer's state, which is saved with optimizer=; "
            "leave scheduler= out"
        )
    series = _series(name, dir)
    d = series.folder
    d.mkdir(parents=True, exist_ok=True)
    manifest = series.manifest() or {"entries": series.scan(), "best": None}
    seq = max((e.get("seq", 0) for e in manifest["entries"]), default=0) + 1
    ext = "pt" if fw == "torch" else "safetensors"
    fname = f"ckpt-{seq:06d}-e{'x' if epoch is None else epoch}.{ext}"
    from ..tracking.api import active_run

    run = active_run()
    meta = {
        "epoch": epoch,
        "step": step,
        "metrics": mets,
        "extra": extra,
        "time": time.time(),
        "run_id": run.id if run is not None else None,
        "framework": fw,
    }
    rng = rng_state(fw)
    if fw == "torch":
        save_torch(d / fname, model, optimizer, scheduler, meta, rng)
    else:
        save_mlx(d / fname, model, optimizer, meta, rng)
    series.stored(fname)  # uploaded before the manifest names it
    entry = {k: meta[k] for k in ("epoch", "step", "metrics", "time", "run_id")}
    entry.update(file=fname, seq=seq)
    entries = [*manifest["entries"], entry]
    best_file = manifest.get("best")
    is_best = False
    if best is not None and best in mets and math.isfinite(mets[best]):
        cur = next((e for e in entries if e["file"] == best_file), None)
        old = cur["metrics"].get(best) if cur else None
        if old is None or (mets[best] < old if mode == "min" else mets[best] > old):
            best_file, is_best = fname, True
    keep = {e["file"] for e in entries[-keep_last:]} | ({best_file} if best_file else set())
    new = {"entries": [e for e in entries if e["file"] in keep], "best": best_file}
    new.update(best_key=best, mode=mode, latest=fname)
    atomic_write(d / MANIFEST, lambda tmp: tmp.write_text(json.dumps(new, indent=1)))
    series.stored(MANIFEST)
    for e in entries:  # only after the manifest stops naming them
        # read_manifest/scan only return names the writer produces: nothing outside d
        if e["file"] not in keep and valid_name(e["file"]):
            series.remove(e["file"])
    data = {"path": str(d / fname), "epoch": epoch, "metrics": mets, "best": is_best}
    if series.remote is not None:
        data["stored"] = f"{series}/{fname}"
    _event("checkpoint", f"checkpoint {fname}" + (" (best)" if is_best else ""), data)
    return d / fname


def checkpoints(name: str | None = None, dir: str | os.PathLike | None = None):
    """The kept checkpoints of a series (polars): file, epoch, step, time, run_id,
    is_latest, is_best and `metrics.<k>` columns."""
    import polars as pl

    series = _series(name, dir)
    m = series.manifest() or {"entries": series.scan(), "best": None}
    rows = []
    for i, e in enumerate(m["entries"]):
        row = {
            "file": e["file"],
            "epoch": e.get("epoch"),
            "step": e.get("step"),
            "run_id": e.get("run_id"),
            "is_latest": i == len(m["entries"]) - 1,
            "is_best": e["file"] == m.get("best"),
        }
        row.update({f"metrics.{k}": v for k, v in (e.get("metrics") or {}).items()})
        rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"file": pl.String})


def resume(
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    which: str | int = "latest",
    name: str | None = None,
    dir: str | os.PathLike | None = None,
    restore_rng: bool = True,
    map_location: Any = "cpu",
    trusted: bool = False,
) -> Resumed:
    """Load the latest (or `which="best"`, or an epoch number, or a file path) checkpoint
    into the given model/optimizer/scheduler and restore the random generators.

    torch checkpoints are read with torch's safe loader; one that needs a full unpickle
    (an `extra=` holding your own objects) raises UntrustedCheckpointError unless
    `trusted=True`: only pass it for files you wrote, unpickling can run any code.

    Returns a `Resumed` (False-y, with next_epoch 0, when there is nothing to resume)."""
    if not isinstance(trusted, bool):
        raise InvalidInputError(f"trusted must be True or False, got {trusted!r}")
    if isinstance(which, (str, os.PathLike)) and which not in ("latest", "best"):
        series = Series(Path(which).parent)
        candidates = [Path(which).name]
        manifest = None
    else:
        series = _series(name, dir)
        manifest = series.manifest()
        entries = manifest["entries"] if manifest else series.scan()
        if which == "best":
            if not manifest or not manifest.get("best"):
                raise CheckpointError(f"no best checkpoint recorded in {series}")
            entries = [e for e in entries if e["file"] == manifest["best"]]
        elif isinstance(which, int) and not isinstance(which, bool):
            entries = [e for e in entries if e.get("epoch") == which]
            if not entries:
                raise CheckpointError(f"no kept checkpoint of epoch {which} in {series}")
        elif which != "latest":
            raise InvalidInputError("which must be 'latest', 'best', an epoch or a path")
        # newest first: with a damaged manifest an unreadable file falls back to the previous
        candidates = [e["file"] for e in reversed(entries)]
    if not candidates:
        return Resumed()
    payload, path, errors = None, None, []
    for fname in candidates:
        try:
            p = series.fetch(fname)  # downloaded first when the series is remote
            payload = load_torch(p, map_location, trusted) if p.suffix == ".pt" else load_mlx(p)
            path = p
            break
        except UntrustedCheckpointError:
            raise  # never fall back silently to an older checkpoint over this
        except Exception as e:  # deleted or damaged: the newest readable one wins
            errors.append(f"{fname}: {e}")
    if payload is None:
        raise CheckpointError(f"cannot read checkpoint in {series}: {'; '.join(errors)}")
    if errors:
        warnings.warn(
            f"mlops-jupyter: skipped unreadable checkpoints, resuming from {path.name}: "
            + "; ".join(errors),
            RuntimeWarning,
            2,
        )
    _apply(payload, model, optimizer, scheduler)
    if restore_rng:
        set_rng_state(payload.get("rng") or {})
    meta = payload["meta"]
    best_entry = None
    if manifest and manifest.get("best"):
        best_entry = next((e for e in manifest["entries"] if e["file"] == manifest["best"]), None)
    res = Resumed(
        found=True,
        epoch=meta.get("epoch"),
        step=meta.get("step"),
        metrics=meta.get("metrics") or {},
        extra=meta.get("extra"),
        path=path,
        run_id=meta.get("run_id"),
        best=best_entry,
        model_state=payload.get("model") if model is None else None,
        optimizer_state=payload.get("optimizer") if optimizer is None else None,
        scheduler_state=payload.get("scheduler") if scheduler is None else None,
    )
    _link(res)
    return res


def _apply(payload: dict, model, optimizer, scheduler) -> None:
    fw = payload["meta"].get("framework")
    if model is not None:
        if payload.get("model") is None:
            raise CheckpointError("the checkpoint holds no model state")
        if fw == "torch":
            model.load_state_dict(payload["model"])
        else:
            import mlx.core as mx

            try:
                model.update(payload["model"], strict=True)
            except TypeError:  # older MLX without strict=
                model.update(payload["model"])
            mx.eval(model.parameters())
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise CheckpointError("the checkpoint holds no optimizer state")
        if fw == "torch":
            optimizer.load_state_dict(payload["optimizer"])
        else:
            optimizer.state = payload["optimizer"]
    if scheduler is not None:
        if payload.get("scheduler") is None:
            raise CheckpointError("the checkpoint holds no scheduler state")
        scheduler.load_state_dict(payload["scheduler"])


def _link(res: Resumed) -> None:
    from ..tracking.api import active_run

    run = active_run()
    if run is None:
        return
    try:
        tags = {"resumed_from.checkpoint": str(res.path), "resumed_from.epoch": res.epoch}
        if res.run_id:
            tags["resumed_from.run"] = res.run_id
        run.set_tags(tags)
    except Exception as e:
        warnings.warn(f"mlops-jupyter: could not tag the resumed run: {e}", RuntimeWarning, 3)
    _event(
        "resume",
        f"resumed from {res.path.name if res.path else '?'} (epoch {res.epoch})",
        {"path": str(res.path), "epoch": res.epoch, "from_run": res.run_id},
    )
