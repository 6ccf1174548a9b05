"""The offline part of bench_features.py: a point-in-time join of label rows against 3
feature views, `mj.training_set` against Feast's `get_historical_features` (file offline
store) on the same data exported with `features export --to-feast`. Each side runs in a
child process of its own (Feast in .venv-feast, under an address-space cap), first on a
sample of the labels where both must give the same values. Also the child-process runner
and Feast's environment, which the online part uses too. Not a benchmark to run on its
own: see bench_features.py."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
TARGET_OFFLINE_RATIO = 10.0
FEAST_BIN = ROOT / ".venv-feast" / "bin"
FEAST_MEM_CAP = (
    18 << 30
)  # address space of Feast's child: fail with MemoryError, not the OOM killer
VIEWS = ("v0", "v1", "v2")
T0 = dt.datetime(2024, 1, 1)
SPAN_S = 60 * 86400

# Children: each prints one JSON line {seconds, peak_mib, base_mib, rows}. Timed: the join
# alone; peak: the process's RSS high-water mark (labels and imports included, base_mib is
# the RSS just before the join).
_RSS = """
import resource
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
OURS_CHILD = (
    _RSS
    + """
import json, sys, time
import polars as pl
import mlops_jupyter as mj
labels = pl.read_parquet(sys.argv[1])
base = rss_mib()
t = time.perf_counter()
out = mj.training_set(labels, sys.argv[2].split(","), record=False)
secs = time.perf_counter() - t
peak = peak_mib()
if sys.argv[3]:
    out.write_parquet(sys.argv[3])
print(json.dumps({"seconds": secs, "peak_mib": peak, "base_mib": base, "rows": out.height}))
"""
)
FEAST_HISTORICAL_CHILD = (
    _RSS
    + """
import json, sys, time
import pandas as pd
from feast import FeatureStore
store = FeatureStore(repo_path=".")
labels = pd.read_parquet(sys.argv[1])
base = rss_mib()
t = time.perf_counter()
out = store.get_historical_features(entity_df=labels, features=sys.argv[2].split(",")).to_df()
secs = time.perf_counter() - t
peak = peak_mib()
if sys.argv[3]:
    out.to_parquet(sys.argv[3])
print(json.dumps({"seconds": secs, "peak_mib": peak, "base_mib": base, "rows": len(out)}))
"""
)


def _feast_env(tmp: Path) -> dict[str, str]:
    return {"PATH": f"{FEAST_BIN}:/usr/bin:/bin", "HOME": str(tmp), "FEAST_USAGE": "False"}


def feast_apply(repo: Path, tmp: Path) -> subprocess.CompletedProcess:
    """`feast apply` in the exported repository (its registry and stores made)."""
    return subprocess.run(
        [str(FEAST_BIN / "feast"), "apply"],
        cwd=repo,
        env=_feast_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (FEAST_MEM_CAP, FEAST_MEM_CAP))


def _child(cmd: list[str], cwd: Path, env: dict, timeout: float, feast: bool) -> dict | str:
    """Run one child; its JSON line, or why it gave none (timeout, error) as a string."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_cap_memory if feast else None,
        )
    except subprocess.TimeoutExpired:
        return f"did not finish in {timeout:.0f} s"
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed (exit {proc.returncode}): {err[:200]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _offline_data(n_labels: int, rows: int) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Labels over 60 days and 3 views of `rows` rows (10 rows an entity on average, random
    times over the same 60 days, ttl 30d: labels early in the span find nothing)."""
    rng = np.random.default_rng(2)
    n_ent = max(rows // 10, 1)

    def times(n: int) -> pl.Series:
        us = rng.integers(0, SPAN_S * 1_000_000, n)
        t0_us = (T0 - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
        return pl.Series(us + t0_us).cast(pl.Datetime("us"))

    views = {}
    for v in VIEWS:
        views[v] = pl.DataFrame(
            {
                "user_id": rng.integers(0, n_ent, rows),
                "event_ts": times(rows),
                f"{v}_count": rng.integers(0, 1000, rows),
                f"{v}_mean": rng.normal(size=rows),
                f"{v}_rate": rng.random(rows),
            }
        )
    labels = pl.DataFrame(
        {"user_id": rng.integers(0, n_ent, n_labels), "event_ts": times(n_labels)}
    ).with_columns(label=pl.int_range(pl.len()))
    return labels, views


def _refs() -> list[str]:
    return [f"{v}:{v}_{f}" for v in VIEWS for f in ("count", "mean", "rate")]


def _ours(tmp: Path, labels: Path, out: str = "") -> dict | str:
    env = {k: v for k, v in os.environ.items()}
    return _child(
        [sys.executable, "-c", OURS_CHILD, str(labels), ",".join(_refs()), out],
        ROOT,
        env,
        3600,
        feast=False,
    )


def _theirs(tmp: Path, repo: Path, labels: Path, timeout: float, out: str = "") -> dict | str:
    return _child(
        [
            str(FEAST_BIN / "python"),
            "-c",
            FEAST_HISTORICAL_CHILD,
            str(labels),
            ",".join(_refs()),
            out,
        ],
        repo,
        _feast_env(tmp),
        timeout,
        feast=True,
    )


def _verify(tmp: Path, repo: Path, labels: pl.DataFrame) -> tuple[int, int, dict, dict]:
    """Both sides on a sample of the labels must give the same values (Feast's rows matched
    back to the labels by (user_id, event_ts)); returns the rows compared, the rows Feast
    gave, and both runs' figures."""
    keys = ["user_id", "event_ts"]
    sample = labels.unique(keys, maintain_order=True).head(20_000)
    path = tmp / "sample.parquet"
    sample.write_parquet(path)
    ours = _ours(tmp, path, str(tmp / "ours.parquet"))
    theirs = _theirs(tmp, repo, path, 600, str(tmp / "theirs.parquet"))
    for side, r in (("ours", ours), ("Feast", theirs)):
        if isinstance(r, str):
            raise SystemExit(f"sample check: {side} {r}")
    want = pl.read_parquet(tmp / "ours.parquet")
    got = pl.read_parquet(tmp / "theirs.parquet")
    cols = [r.split(":")[1] for r in _refs()]
    got = got.with_columns(
        pl.col("event_ts")
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
        .dt.cast_time_unit("us"),
        *(pl.col(c).fill_nan(None) for c in cols if got[c].dtype.is_float()),
    ).select(*keys, *cols)
    # Feast leaves out a label row when one of the views has no value in its window (its
    # documented shape, docs/features.md); ours keeps it with nulls. So: every row Feast
    # gives must equal ours, and every row it leaves out must have a null in ours.
    both = want.join(got, on=keys, how="left", maintain_order="left", suffix="_feast")
    given = sample.join(
        got.select(keys).with_columns(given=pl.lit(True)),
        on=keys,
        how="left",
        maintain_order="left",
    )["given"].fill_null(False)
    for c in cols:
        a, b = both[c].to_list(), both[f"{c}_feast"].cast(want[c].dtype).to_list()
        bad = [i for i, (x, y, g) in enumerate(zip(a, b, given)) if g and x != y]
        if bad:
            raise SystemExit(
                f"sample check: {c} differs on {len(bad)} of {len(a)} rows, e.g. row"
                f" {bad[0]}: ours {a[bad[0]]}, Feast {b[bad[0]]}"
            )
    left_out = want.filter(~given)
    if (
        left_out.height
        and not left_out.select(pl.any_horizontal(pl.col(cols).is_null())).to_series().all()
    ):
        raise SystemExit("sample check: Feast left out a row that has every feature in ours")
    return sample.height, int(given.sum()), ours, theirs


def _line(label: str, ours: dict, theirs: dict | str | None) -> float | None:
    mine = f"{ours['seconds']:7.2f} s, peak RSS {ours['peak_mib']:,.0f} MiB"
    if theirs is None:
        print(f"{label:<34} ours {mine}   Feast -", flush=True)
        return None
    if isinstance(theirs, str):
        print(f"{label:<34} ours {mine}   Feast {theirs}", flush=True)
        return None
    ratio = theirs["seconds"] / ours["seconds"]
    print(
        f"{label:<34} ours {mine}   Feast {theirs['seconds']:7.2f} s, peak RSS"
        f" {theirs['peak_mib']:,.0f} MiB   {ratio:,.1f}x faster, Feast's peak RSS"
        f" {theirs['peak_mib'] / ours['peak_mib']:.1f}x ours (target >= {TARGET_OFFLINE_RATIO:.0f}x:"
        f" {'met' if ratio >= TARGET_OFFLINE_RATIO else 'MISSED'})",
        flush=True,
    )
    return ratio


def offline(args: argparse.Namespace, tmp: Path) -> None:
    """The offline part: `mj.training_set` against Feast's get_historical_features."""
    import mlops_jupyter as mj
    from mlops_jupyter.features.feast_export import export_feast

    print(
        f"offline join: {args.labels:,} labels × {len(VIEWS)} views × {args.rows:,} rows"
        f" × 3 features (ttl 30d)",
        flush=True,
    )
    os.environ["MLOPS_JUPYTER_STORE"] = str(tmp / "off" / "store.db")
    os.environ["MLOPS_JUPYTER_ARTIFACTS"] = str(tmp / "off-a")
    os.environ.pop("MLOPS_JUPYTER_ONLINE_STORE", None)
    mj.set_store(None)
    labels, views = _offline_data(args.labels, args.rows)
    for name, frame in views.items():
        mj.register_features(name, frame, entity="user_id", timestamp="event_ts", ttl="30d")
    del views
    full = tmp / "labels.parquet"
    labels.write_parquet(full)
    use_feast = not args.no_feast and (FEAST_BIN / "python").exists()
    repo = tmp / "feast_repo"
    if use_feast:
        export_feast(repo, list(VIEWS))
        proc = feast_apply(repo, tmp)
        if proc.returncode != 0:
            raise SystemExit(f"feast apply failed: {proc.stderr[-2000:]}")
        n, given, ours, theirs = _verify(tmp, repo, labels)
        print(
            f"sample check: {n:,} label rows, {len(_refs())} features: the {given:,} rows Feast"
            f" returns equal ours; the {n - given:,} it leaves out have no value in some view's"
            " window (ours: nulls)",
            flush=True,
        )
    elif not args.no_feast:
        print(f"no Feast venv at {FEAST_BIN.parent} (make feast): our side only", flush=True)
    # the sample was all the labels (small runs): its timed runs are the figures
    reuse = use_feast and n == labels.height
    if not reuse:
        ours = _ours(tmp, full)
        if isinstance(ours, str):
            raise SystemExit(f"training_set {ours}")
        theirs = None
    size = args.labels
    if use_feast and not reuse:
        tried = []
        while True:
            path = full if size == args.labels else tmp / f"labels{size}.parquet"
            if size != args.labels:
                labels.head(size).write_parquet(path)
            theirs = _theirs(tmp, repo, path, args.feast_timeout)
            if not isinstance(theirs, str) or size <= 10_000:
                break
            tried.append(f"{size:,} labels: {theirs}")
            size //= 10
        for t in tried:
            print(f"Feast at {t}", flush=True)
    if size == args.labels:
        _line(f"point-in-time join, {args.labels:,} labels", ours, theirs)
    else:
        _line(f"point-in-time join, {args.labels:,} labels", ours, "did not finish (above)")
        path = tmp / f"labels{size}.parquet"
        small = _ours(tmp, path)
        if isinstance(small, str):
            raise SystemExit(f"training_set {small}")
        _line(f"point-in-time join, {size:,} labels", small, theirs)
