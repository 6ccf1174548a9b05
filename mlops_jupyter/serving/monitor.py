"""Monitoring live inputs: windowed column profiles of what each worker answered, their
drift against the training data of the model version, and alerts on the version's run.

On the request path a worker only appends a reference to the request's parsed input
arrays to the buffer of its (window, variant, version) - a dict lookup and a list append.
Each window keeps at most `max_rows` rows: once full, every further request replaces a
random kept request with probability kept/seen (a reservoir sample of requests), so memory
stays bounded whatever the traffic. A background thread closes each window shortly after
it ends: it computes the same column profiles as data versions (data.profile), compares
them with the data version(s) the version's run read (`mj.drift` on profiles, store=False:
the verdict is kept on the window's own row, not as one more stored drift report and two
data versions per minute), writes one row (store/serving_profiles.py) and, for a drifted
window, one event on the version's run. Raw rows are stored only with log_inputs=True.

Window boundaries are aligned to the clock (multiples of the window length since the
epoch), so the rows of several workers and machines for one window line up and are merged
when read (weighted by their sampled rows)."""

from __future__ import annotations

import logging
import random
import re
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError

log = logging.getLogger("mlops_jupyter.serving")
DEFAULT_WINDOW = 60.0
DEFAULT_ROWS = 10_000  # rows kept per window, variant and worker
MIN_ROWS = 30  # fewer sampled rows: the window is profiled but its drift not judged
MAX_COLUMNS = 100  # columns profiled per window: a profile is ~4 KB per numeric column
GRACE = 0.25  # s after a window ends before it is closed (requests already in flight)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h)?\s*$")


def parse_window(text: str | float | int) -> float:
    """Seconds of a window length: 60, "60s", "500ms", "5m", "1h"; 0 or "off" = no
    monitoring. Raises InvalidInputError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        secs = float(text)
    elif isinstance(text, str) and text.strip().lower() in ("off", "none", "no"):
        return 0.0
    else:
        m = _WINDOW.match(str(text))
        if not m:
            raise InvalidInputError(
                f"window must be a duration like 60s, 500ms, 5m or 1h (0 or off: none); "
                f"got {text!r}"
            )
        secs = float(m[1]) * _UNITS[m[2] or "s"]
    if secs != 0 and not 0.1 <= secs <= 86_400:
        raise InvalidInputError(f"window must be between 100ms and 24h (or 0), got {text!r}")
    return secs


class _Window:
    __slots__ = ("items", "rows", "seen", "requests")

    def __init__(self) -> None:
        self.items: list[dict[str, np.ndarray]] = []
        self.rows = 0  # rows kept in items
        self.seen = 0  # rows answered
        self.requests = 0


class InputMonitor:
    """One worker's windows of answered inputs, closed and stored by a background thread."""

    def __init__(
        self,
        store: Any,
        model: str,
        window: float = DEFAULT_WINDOW,
        max_rows: int = DEFAULT_ROWS,
        log_inputs: bool = False,
        worker: str | None = None,
    ) -> None:
        if window <= 0:
            raise InvalidInputError("window must be positive")
        if max_rows < 1:
            raise InvalidInputError("max_rows must be at least 1")
        self.store, self.model, self.window = store, model, float(window)
        self.max_rows, self.log_inputs, self.worker = int(max_rows), log_inputs, worker
        self.windows: dict[tuple[int, str, int], _Window] = {}
        self.written = 0
        self.failed = 0
        self._refs: dict[int, list] = {}  # version -> candidate reference DataVersions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mj-serve-monitor", daemon=True)
        self._thread.start()

    def add(self, variant: str, version: int, fields: dict[str, np.ndarray]) -> None:
        """Count one answered request's inputs (event loop only: no lock needed)."""
        key = (int(time.time() // self.window), variant, version)
        w = self.windows.get(key)
        if w is None:
            w = self.windows.setdefault(key, _Window())
        n = len(next(iter(fields.values())))
        w.seen += n
        w.requests += 1
        if w.rows + n <= self.max_rows:
            w.items.append(fields)
            w.rows += n
            return
        if n > self.max_rows:  # one request larger than the whole sample
            fields = {k: a[: self.max_rows] for k, a in fields.items()}
            n = self.max_rows
        # reservoir over requests: replace a random kept one with probability kept/seen
        j = int(random.random() * w.requests)
        if j < len(w.items):
            old = len(next(iter(w.items[j].values())))
            if w.rows - old + n <= self.max_rows:
                w.items[j] = fields
                w.rows += n - old

    def _loop(self) -> None:
        tick = min(1.0, self.window / 4)
        while not self._stop.wait(tick):
            self.flush(time.time())
        self.flush(None)

    def flush(self, now: float | None) -> None:
        """Close and store the windows that ended before `now` (None: all, at stop)."""
        current = None if now is None else int((now - GRACE) // self.window)
        for key in sorted(self.windows):
            if current is not None and key[0] >= current:
                continue
            w = self.windows.pop(key, None)
            if w is None or not w.items:
                continue
            start = key[0] * self.window
            end = min(start + self.window, time.time())
            try:
                self._close(key[1], key[2], start, end, w)
                self.written += 1
            except Exception as e:  # never stop serving over monitoring
                self.failed += 1
                log.warning("input profile of %s not stored: %s", self.model, e)

    def _close(self, variant: str, version: int, start: float, end: float, w: _Window) -> None:
        from ..data.profile import frame_profile
        from ..store import serving_profiles as sp

        frame = window_frame(w.items)
        profs, _ = frame_profile(frame)
        row: dict[str, Any] = {
            "model": self.model,
            "version": version,
            "variant": variant,
            "worker": self.worker,
            "window_start": start,
            "window_end": end,
            "n_rows": w.seen,
            "n_sampled": frame.height,
            "n_requests": w.requests,
            "profile": profs,
        }
        if version not in self._refs:
            self._refs[version] = reference_candidates(self.store, self.model, version)
        ref = pick_reference(self._refs[version], frame.columns)
        if ref is not None:
            row["reference"] = ref.id
            row["drift"] = judge(ref, profs, frame.height)
            row["drifted"], row["drift_share"] = _verdict(row["drift"])
        if self.log_inputs:
            row["inputs_blob"] = _store_rows(self.store, frame)
        sp.save_profile(self.store, row)
        if row.get("drifted"):
            alert(self.store, self.model, version, variant, start, end, row["drift"], ref.id)

    def close(self) -> None:
        """Stop the thread after storing every window, the current (partial) one included."""
        self._stop.set()
        self._thread.join(timeout=30)


def start(store: Any, model: str, worker: str | None, opts: dict[str, Any]) -> InputMonitor | None:
    """The monitor a worker runs with serve's options (None when monitor_window is 0)."""
    window = parse_window(opts.get("monitor_window", DEFAULT_WINDOW))
    if not window:
        return None
    return InputMonitor(
        store,
        model,
        window,
        int(opts.get("monitor_rows") or DEFAULT_ROWS),
        bool(opts.get("log_inputs", False)),
        worker,
    )


def preload(store: Any, model: str, versions: list[int]) -> bool:
    """Import the drift check (scipy) now when a served version has training data linked:
    called before the workers fork, so no worker's first window imports it in a thread
    that would hold the GIL for a second or more between requests."""
    if not any(reference_candidates(store, model, v) for v in versions):
        return False
    from ..data import compare  # noqa: F401
    from ..data.stats import require_scipy

    require_scipy()
    return True


def window_frame(items: list[dict[str, np.ndarray]]):
    """The kept requests as one polars DataFrame: a 1-D field is a column of its name, a
    field of shape [batch, k] k columns "field[i]" - or "0".."k-1" when it is the only
    field, the names a numpy training array gets as a data version. Only the first
    MAX_COLUMNS columns are kept (an image's pixels would make megabytes per window)."""
    import polars as pl

    names = list(items[0])
    cols: dict[str, Any] = {}
    for name in names:
        a = np.concatenate([np.asarray(it[name]) for it in items])
        if a.ndim == 1:
            cols[name] = a
        else:
            a = a.reshape(len(a), -1)
            for i in range(min(a.shape[1], MAX_COLUMNS - len(cols))):
                cols[str(i) if len(names) == 1 else f"{name}[{i}]"] = a[:, i]
        if len(cols) >= MAX_COLUMNS:
            break
    return pl.DataFrame(cols)


def reference_candidates(store: Any, model: str, version: int) -> list:
    """The profiled data versions the run of `version` read (its training data)."""
    from ..data.catalog import _from_row
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
    from ..data.compare import drift

    if n < MIN_ROWS:
        return None
    cur = DataVersion(id="window", fingerprint="", name=None, kind="serving", n_rows=n)
    cur.profile = profile
    rep = drift(ref, cur, store=False).data
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


def _store_rows(store: Any, frame: Any) -> str:
    """The window's kept rows as a Parquet blob (only with log_inputs); its digest."""
    with tempfile.TemporaryDirectory(prefix="mj-inputs-") as tmp:
        path = Path(tmp) / "inputs.parquet"
        frame.write_parquet(path)
        digest, _ = store.artifacts.put_blob(path)
    return digest


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

    rows = sp.profiles(store, model, limit=max(1, int(limit)) * 8, with_profile=False)
    keys = ("window_start", "window_end", "variant", "version", "n", "drifted", "share")
    out = []
    for group in _group(rows)[: max(0, int(limit))]:
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
    import polars as pl

    from .. import registry
    from ..data.catalog import _from_row
    from ..store import data as dstore
    from ..store import serving_profiles as sp
    from ..tracking.api import current_store

    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInputError(f"version must be an int, got {version!r}")
        registry.model_version(model, version=version)
    else:
        registry.model_version(model)  # an unknown model fails here, naming it
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise InvalidInputError(f"last must be a positive int, got {last!r}")
    store = current_store()
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
