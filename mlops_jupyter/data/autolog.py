"""Automatic input versioning: while a run is active, files read with polars
(read_csv/read_parquet/read_ipc/read_ndjson and their scan_* forms) and pandas
(read_csv/read_parquet) are versioned as inputs of the active run.

Only libraries already imported are patched (polars or pandas imported later are patched
right after their import; neither is ever imported here), and everything is restored when no run is active. A failure to
record only warns: reading data never breaks because of tracking.
Set MLOPS_JUPYTER_AUTOLOG_DATA=0 to turn it off."""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV = "MLOPS_JUPYTER_AUTOLOG_DATA"
# frames bigger than this many cells get a fingerprint without a profile (keeps reads cheap)
PROFILE_MAX_CELLS = 50_000_000

_POLARS = ("read_csv", "read_parquet", "read_ipc", "read_ndjson")
_POLARS_LAZY = ("scan_csv", "scan_parquet", "scan_ipc", "scan_ndjson")
_PANDAS = ("read_csv", "read_parquet")

_lock = threading.RLock()
_attached: set[int] = set()  # ids of runs with autolog on
_originals: dict[tuple[str, str], Any] = {}
_local = threading.local()  # re-entrancy guard: our own reads are not recorded
_profiled: dict[tuple, bool] = {}  # file key -> profile already stored
_warned = False


def enabled() -> bool:
    """Whether autolog is on (MLOPS_JUPYTER_AUTOLOG_DATA is not 0/false/off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def attach(run) -> None:
    """Start hook: version files read while `run` is active; undo when the last run ends."""
    if not enabled():
        return
    with _lock:
        _attached.add(id(run))
        _patch_all()
    run.on_end(_detach)


def _detach(run, status: str) -> None:
    with _lock:
        _attached.discard(id(run))
        if not _attached:
            _unpatch_all()


def active() -> bool:
    """Whether the readers are currently patched."""
    return bool(_originals)


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Reads in this block (this thread) are not versioned: for mlops-jupyter's own files,
    such as the stage outputs an exported pipeline caches, which are not data inputs."""
    prev = getattr(_local, "busy", False)
    _local.busy = True
    try:
        yield
    finally:
        _local.busy = prev


# -- patching -------------------------------------------------------------------------------
def _patch_all() -> None:
    pl = sys.modules.get("polars")
    if pl is not None and hasattr(pl, "read_csv"):
        _patch_polars(pl)
    pd = sys.modules.get("pandas")
    if pd is not None and hasattr(pd, "read_csv"):
        _patch_module(pd, "pandas", _PANDAS, lazy=False)
    if (pl is None or pd is None) and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _patch_polars(pl) -> None:
    _patch_module(pl, "polars", _POLARS, lazy=False)
    _patch_module(pl, "polars", _POLARS_LAZY, lazy=True)


def _patch_module(mod, lib: str, names: tuple[str, ...], lazy: bool) -> None:
    for name in names:
        key = (lib, name)
        if key in _originals or not hasattr(mod, name):
            continue
        orig = getattr(mod, name)
        _originals[key] = orig
        setattr(mod, name, _wrap(orig, lib, name, lazy))


def _unpatch_all() -> None:
    for (lib, name), orig in list(_originals.items()):
        mod = sys.modules.get(lib)
        if mod is not None and getattr(getattr(mod, name, None), "_mlops_wrapped", False):
            setattr(mod, name, orig)
    _originals.clear()
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def _wrap(orig, lib: str, name: str, lazy: bool):
    import functools

    @functools.wraps(orig)
    def reader(*args, **kwargs):
        result = orig(*args, **kwargs)
        if not getattr(_local, "busy", False):
            try:
                _local.busy = True
                _record(lib, name, args, kwargs, result, lazy)
            except Exception as e:  # tracking must never break a read
                _warn(f"could not version data read by {lib}.{name}: {e}")
            finally:
                _local.busy = False
        return result

    reader._mlops_wrapped = True
    return reader


class _ImportFinder(importlib.abc.MetaPathFinder):
    """Patches polars or pandas right after they are imported, if a run is active then."""

    targets = ("polars", "pandas")

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.targets:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            with _lock:
                if _attached:
                    if fullname == "polars":
                        _patch_polars(module)
                    else:
                        _patch_module(module, "pandas", _PANDAS, lazy=False)

        spec.loader.exec_module = exec_and_patch
        return spec


_finder = _ImportFinder()


# -- recording ------------------------------------------------------------------------------
def _warn(msg: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"mlops-jupyter: {msg}", RuntimeWarning, stacklevel=3)


def _paths(args: tuple, kwargs: dict) -> list[Path]:
    src = args[0] if args else None
    for k in ("source", "filepath_or_buffer", "path", "file"):
        if src is None and k in kwargs:
            src = kwargs[k]
    items = src if isinstance(src, (list, tuple)) else [src]
    out = []
    for s in items:
        if not isinstance(s, (str, os.PathLike)):
            continue  # buffers, URLs given as objects
        s = os.fspath(s)
        if "://" in s:
            continue  # remote objects are not fingerprinted
        if any(ch in s for ch in "*?["):
            out.extend(Path(p) for p in sorted(glob.glob(s, recursive=True)))
        else:
            out.append(Path(s))
    return [p.resolve() for p in out if p.exists()]


def _record(lib: str, name: str, args: tuple, kwargs: dict, result: Any, lazy: bool) -> None:
    from ..tracking.api import active_run

    run = active_run()
    if run is None or id(run) not in _attached:
        return
    paths = _paths(args, kwargs)
    if not paths:
        return
    from ..store import data as dstore
    from . import fingerprint as fpr
    from .catalog import dir_record, file_record
    from .profile import to_polars

    frame = None
    if not lazy and len(paths) == 1 and paths[0].is_file():
        frame = result
    for p in paths:
        if p.is_dir():
            rec, _ = dir_record(p, None), None
        else:
            st = p.stat()
            key = (run.store.key, *fpr._file_key(p, st))
            df = None
            if frame is not None and not _profiled.get(key):
                if _has_profile(run, fpr.file_fingerprint(p)):
                    _profiled[key] = True  # profiled before (another process): skip
                else:
                    try:
                        df = to_polars(frame)
                    except Exception as e:  # still record the file, without a profile
                        _warn(f"could not profile data read by {lib}.{name}: {e}")
                        df = None
                    if df is not None and df.height * max(df.width, 1) > PROFILE_MAX_CELLS:
                        df = None
            rec, _ = file_record(p, None, frame=df, profile=False)
            if df is not None:
                _profiled[key] = True
        store = run.store
        if _remote(run):
            from ..remote import data as rdata

            # the record only (the data stays here); the server links it as locally
            # one try: a read in the user's code never waits for an unreachable server
            rdata.save_version(store, rec, "input", run, rec.get("name"), retry_s=0)
            continue
        vrid, _ = dstore.save_version(store, rec)
        dstore.link_version(store, run.store_id, vrid, "input", rec.get("name"), rec.get("source"))


def _remote(run: Any) -> bool:
    """Whether `run` is logged through a tracking server."""
    return type(run.store).__name__ == "RemoteStore"


def _has_profile(run: Any, fingerprint: str) -> bool:
    if _remote(run):
        from ..remote import data as rdata

        return rdata.has_profile(run.store, fingerprint, retry_s=0)
    from ..store import data as dstore

    return dstore.has_profile(run.store, fingerprint)
