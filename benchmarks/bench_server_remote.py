"""Tracking server benchmark, same machine, one run (loopback HTTP):

- remote ingest from one client: points/s committed through `POST /api/v1/ingest` (gzip,
  one keep-alive connection, batches of many keys), read back and counted;
- 16 concurrent client processes: p50/p99 request latency, points/s, points lost;
- the `mlflow` client logging 10k metrics with `log_batch` against our server and against a
  real `mlflow server` on the same kind of store: throughput ratio;
- `search_runs` over 10k runs on both (bulk-created through each store, timed apart): a
  filtered first page of 1,000, a full paged scan of the filter, and `mlflow.search_runs`
  of every run; latency ratios, and both must return the same number of runs.

    python benchmarks/bench_server_remote.py              # full sizes, SQLite files
    python benchmarks/bench_server_remote.py --postgres   # both on one throwaway PostgreSQL
    python benchmarks/bench_server_remote.py --store postgresql://... --mlflow-store ...
    python benchmarks/bench_server_remote.py --quick      # smaller, for a smoke run
    python benchmarks/bench_server_remote.py --no-mlflow  # only our server

Nothing here is a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from trackserver_helpers import Server, free_port  # noqa: E402


def _post(conn: http.client.HTTPConnection, path: str, tok: str, body: dict) -> dict:
    raw = gzip.compress(json.dumps(body).encode(), 1)
    conn.request(
        "POST",
        path,
        raw,
        {
            "Authorization": f"Bearer {tok}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    r = conn.getresponse()
    out = json.loads(r.read())
    if r.status != 200:
        raise RuntimeError(out)
    return out


def _chunk(key: str, seq: int, start: int, n: int, b64: bool) -> dict:
    steps = np.arange(start, start + n, dtype=np.int64)
    values = (steps % 1000) * 0.001
    ts = 1_764_950_400.0 + steps * 0.01
    if b64:  # what a client holding numpy arrays sends: no float formatting either side
        enc = base64.b64encode
        return {
            "key": key,
            "seq": seq,
            "steps_b64": enc(steps.astype("<i8").tobytes()).decode(),
            "values_b64": enc(values.astype("<f8").tobytes()).decode(),
            "timestamps_b64": enc(ts.astype("<f8").tobytes()).decode(),
        }
    return {
        "key": key,
        "seq": seq,
        "steps": steps.tolist(),
        "values": values.tolist(),
        "timestamps": ts.tolist(),
    }


def bench_ingest(
    url: str, tok: str, points: int, keys: int, per_chunk: int, b64: bool = True
) -> float:
    """Points/s committed by one client sending batches of `keys` chunks."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    rid = _post(conn, "/api/v1/runs", tok, {"experiment": "bench-ingest"})["id"]
    t0 = time.time()
    sent, seq = 0, 0
    while sent < points:
        chunks = [_chunk(f"m{k}", seq, seq * per_chunk, per_chunk, b64) for k in range(keys)]
        out = _post(conn, "/api/v1/ingest", tok, {"runs": [{"id": rid, "chunks": chunks}]})
        assert out["points"] == keys * per_chunk, out
        sent += out["points"]
        seq += 1
    elapsed = time.time() - t0
    conn.close()
    import mlops_jupyter as mj

    n = mj.metrics(rid).height
    assert n == sent, (n, sent)
    return sent / elapsed


def _client(args: tuple[str, str, int, int, int]) -> tuple[str, list[float], int, float, float]:
    """One concurrent client process: its own run, `batches` requests of `keys` chunks."""
    url, tok, batches, keys, per_chunk = args
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    rid = _post(conn, "/api/v1/runs", tok, {"experiment": "bench-concurrent"})["id"]
    lat, sent = [], 0
    start = time.time()
    for seq in range(batches):
        chunks = [_chunk(f"m{k}", seq, seq * per_chunk, per_chunk, True) for k in range(keys)]
        t = time.perf_counter()
        sent += _post(conn, "/api/v1/ingest", tok, {"runs": [{"id": rid, "chunks": chunks}]})[
            "points"
        ]
        lat.append(time.perf_counter() - t)
    conn.close()
    return rid, lat, sent, start, time.time()


def bench_concurrent(url: str, tok: str, procs: int, batches: int) -> dict[str, float]:
    """`procs` client processes at once (bounded: each sends `batches` requests)."""
    import multiprocessing as mp

    import mlops_jupyter as mj

    keys, per_chunk = 4, 2_500
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        res = pool.map_async(_client, [(url, tok, batches, keys, per_chunk)] * procs).get(1800)
    # from the first request to the last answer (not the interpreters' start-up)
    wall = max(r[4] for r in res) - min(r[3] for r in res)
    lat = sorted(x for r in res for x in r[1])
    sent = sum(r[2] for r in res)
    stored = sum(mj.metrics(r[0]).height for r in res)
    return {
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "points_s": sent / wall,
        "sent": sent,
        "lost": (procs * batches * keys * per_chunk) - stored,
        "requests": len(lat),
    }


def _in_subprocess(code: str, env: dict[str, str]) -> dict[str, float]:
    """Run mlflow client `code` in its own interpreter (its own MLFLOW_* settings); the last
    line it prints is a JSON object."""
    p = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600
    )
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_log_batch(url: str, env: dict[str, str], n_metrics: int) -> dict[str, float]:
    """`MlflowClient.log_batch` of n_metrics (the client splits it into requests of 1,000)."""
    code = f"""
import json, time
from mlflow import MlflowClient
from mlflow.entities import Metric
c = MlflowClient({url!r})
eid = c.create_experiment("bench-%d" % time.time_ns())
run = c.create_run(eid)
ms = [Metric("m%d" % (i % 10), float(i), 1764950400000 + i, i // 10) for i in range({n_metrics})]
t = time.perf_counter(); c.log_batch(run.info.run_id, metrics=ms); dt = time.perf_counter() - t
assert len(c.get_metric_history(run.info.run_id, "m0")) == {n_metrics} // 10
print(json.dumps({{"log_batch_s": dt}}))
"""
    return _in_subprocess(code, env)


SEARCH_FILTER = "metrics.loss < 0.5 and params.lr = '0.01'"
_LRS = ("0.01", "0.001", "0.1")


def _run_values(i: int) -> tuple[str, int, float, float]:
    """Params and metrics of the i-th bulk run: lr, batch, loss, acc (same on both sides)."""
    loss = (i * 7919 % 1000) / 1000
    return _LRS[i % 3], 32 << (i % 4), loss, 1.0 - loss


def expected_matches(n_runs: int) -> int:
    """How many bulk runs SEARCH_FILTER selects."""
    return sum(1 for i in range(n_runs) if _run_values(i)[0] == "0.01" and _run_values(i)[2] < 0.5)


def bulk_runs_ours(store_url: str, experiment: str, n_runs: int) -> float:
    """n_runs finished runs with 2 params and 2 metrics each, straight into our store; seconds."""
    from mlops_jupyter.store import ingest, open_store
    from mlops_jupyter.store import runs as rstore

    store = open_store(store_url)
    t0 = time.time()
    ingest.ensure_experiment(store, experiment)
    rids: list[int] = []
    for i in range(n_runs):
        lr, batch, _, _ = _run_values(i)
        rid = rstore.create_run(store, f"r{i}", experiment, {"lr": lr, "batch": batch})[0]
        rids.append(rid)
    ts = np.array([1_764_950_400_000], np.int64)
    step = np.zeros(1, np.int64)
    for lo in range(0, n_runs, 500):
        chunks = []
        for i in range(lo, min(n_runs, lo + 500)):
            _, _, loss, acc = _run_values(i)
            for key, v in (("loss", loss), ("acc", acc)):
                chunks.append(ingest.Chunk(rids[i], key, None, step, ts, np.array([v])))
        ingest.append(store, chunks)
    end = time.time()
    with store.write("finish bench runs") as c:  # finish_run's update, in one transaction
        c.executemany(
            "UPDATE runs SET status='finished', end_time=?, heartbeat=? WHERE id=?",
            [(end, end, rid) for rid in rids],
        )
    return time.time() - t0


def bulk_runs_mlflow(db_uri: str, experiment_id: str, n_runs: int) -> float:
    """The same runs straight into the MLflow database with MLflow's own table models (the
    rows its SqlAlchemyStore writes for create_run + log_batch + a FINISHED update); seconds."""
    import uuid

    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels import models as m

    t0 = time.time()
    eng = sa.create_engine(db_uri)
    now = int(time.time() * 1000)
    runs, params, metrics, tags = [], [], [], []
    for i in range(n_runs):
        lr, batch, loss, acc = _run_values(i)
        ru = uuid.uuid4().hex
        runs.append(
            {
                "run_uuid": ru,
                "name": f"r{i}",
                "source_type": "LOCAL",
                "source_name": "",
                "entry_point_name": "",
                "user_id": "bench",
                "status": "FINISHED",
                "start_time": now + i,
                "end_time": now + i + 1,
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{ru}/artifacts",
                "experiment_id": int(experiment_id),
            }
        )
        params += [
            {"key": "lr", "value": lr, "run_uuid": ru},
            {"key": "batch", "value": str(batch), "run_uuid": ru},
        ]
        for key, v in (("loss", loss), ("acc", acc)):
            metrics.append(
                {
                    "key": key,
                    "value": v,
                    "timestamp": now,
                    "step": 0,
                    "is_nan": False,
                    "run_uuid": ru,
                }
            )
        tags.append({"key": "mlflow.runName", "value": f"r{i}", "run_uuid": ru})
    with eng.begin() as c:
        for model, rows in (
            (m.SqlRun, runs),
            (m.SqlParam, params),
            (m.SqlMetric, metrics),
            (m.SqlLatestMetric, metrics),
            (m.SqlTag, tags),
        ):
            for lo in range(0, len(rows), 5000):
                c.execute(sa.insert(model.__table__), rows[lo : lo + 5000])
    eng.dispose()
    return time.time() - t0


def bench_search(url: str, env: dict[str, str], experiment: str, n_runs: int) -> dict[str, float]:
    """search_runs latencies over the bulk experiment: a filtered first page of 1,000 (median
    of 5), the filter's full paged scan and `mlflow.search_runs` of every run (median of 3)."""
    code = f"""
import json, time, statistics, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri({url!r})
c = MlflowClient({url!r})
eid = c.get_experiment_by_name({experiment!r}).experiment_id
F = {SEARCH_FILTER!r}
def timed(fn, n):
    out, lat = None, []
    for _ in range(n):
        t = time.perf_counter(); out = fn(); lat.append(time.perf_counter() - t)
    return out, statistics.median(lat)
def scan():
    got, tok = 0, None
    while True:
        page = c.search_runs([eid], F, max_results=1000, page_token=tok)
        got += len(page)
        tok = page.token
        if not tok:
            return got
first, first_s = timed(lambda: len(c.search_runs([eid], F, max_results=1000)), 5)
scanned, scan_s = timed(scan, 3)
every, all_s = timed(lambda: len(mlflow.search_runs([eid])), 3)
print(json.dumps({{"first": first, "first_s": first_s, "scanned": scanned, "scan_s": scan_s,
                   "all": every, "all_s": all_s}}))
"""
    return _in_subprocess(code, env)


def start_mlflow_server(tmp: Path, backend: str | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` (1 worker) over `backend` (default: a SQLite file in tmp)."""
    port = free_port()
    backend = backend or f"sqlite:///{tmp / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", backend, "--workers", "1"]
        + ["--artifacts-destination", str(tmp / "mlflow-artifacts")],
        stdout=open(tmp / "mlflow.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError((tmp / "mlflow.log").read_text()[-3000:])


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(10)


def _mlflow_figures(
    args: argparse.Namespace, env: dict[str, str], tok: str, tmp: Path, mlflow_db: str | None
) -> None:
    n_runs = 300 if args.quick else args.runs
    n_metrics = 2_000 if args.quick else 10_000
    exp = f"search-{time.time_ns()}"
    menv = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with Server(env, tmp) as srv:
        ours = bench_log_batch(srv.url, dict(menv, MLFLOW_TRACKING_TOKEN=tok), n_metrics)
        ours_setup = bulk_runs_ours(env["MLOPS_JUPYTER_STORE"], exp, n_runs)
        ours.update(bench_search(srv.url, dict(menv, MLFLOW_TRACKING_TOKEN=tok), exp, n_runs))
    proc, murl = start_mlflow_server(tmp, mlflow_db)
    try:
        theirs = bench_log_batch(murl, menv, n_metrics)
        eid = _in_subprocess(
            f"import json, mlflow; print(json.dumps(mlflow.MlflowClient({murl!r})"
            f".create_experiment({exp!r})))",
            menv,
        )
        backend = mlflow_db or f"sqlite:///{tmp / 'mlflow.db'}"
        theirs_setup = bulk_runs_mlflow(backend, str(eid), n_runs)
        theirs.update(bench_search(murl, menv, exp, n_runs))
    finally:
        _stop(proc)
    want = expected_matches(n_runs)
    for side in (ours, theirs):  # both sides must answer the same runs
        assert side["first"] == min(1000, want), (side, want)
        assert side["scanned"] == want and side["all"] == n_runs, (side, want)
    print(
        f"mlflow client log_batch of {n_metrics:,} metrics: ours {ours['log_batch_s'] * 1000:.0f} ms, "
        f"mlflow server {theirs['log_batch_s'] * 1000:.0f} ms "
        f"(throughput ratio ours/mlflow {theirs['log_batch_s'] / ours['log_batch_s']:.2f}x)"
    )
    print(
        f"search setup, {n_runs:,} runs x 2 params + 2 metrics straight into each store: "
        f"ours {ours_setup:.1f} s, mlflow {theirs_setup:.1f} s"
    )
    for key, what in (
        ("first", f"search_runs over {n_runs:,} runs, filter, first page of 1,000 (median of 5)"),
        ("scan", f"search_runs over {n_runs:,} runs, filter, full paged scan (median of 3)"),
        ("all", f"mlflow.search_runs of all {n_runs:,} runs into pandas (median of 3)"),
    ):
        o, t = ours[f"{key}_s"], theirs[f"{key}_s"]
        got = ours["all" if key == "all" else ("first" if key == "first" else "scanned")]
        print(
            f"{what}: {got:,} runs each; ours {o * 1000:.0f} ms, mlflow server {t * 1000:.0f} ms"
            f" (latency ratio mlflow/ours {t / o:.2f}x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--store", help="our store URL (default: a fresh SQLite file)")
    ap.add_argument("--mlflow-store", help="mlflow server's backend URI (default: a SQLite file)")
    ap.add_argument(
        "--postgres",
        action="store_true",
        help="start a throwaway PostgreSQL on 127.0.0.1; each side gets its own database",
    )
    ap.add_argument("--runs", type=int, default=10_000, help="runs for search_runs")
    args = ap.parse_args()
    points = 200_000 if args.quick else 2_000_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    pg = None
    store, mlflow_db = args.store, args.mlflow_store
    if args.postgres:
        from pgserver import PgServer

        pg = PgServer()
        store = store or pg.new_database("ours")
        mlflow_db = mlflow_db or pg.new_database("mlflow")
    if mlflow_db and mlflow_db.startswith("postgresql://"):
        # name the driver installed (psycopg 3): SQLAlchemy before 2.1 reads a plain
        # postgresql:// as psycopg2
        mlflow_db = "postgresql+psycopg://" + mlflow_db.removeprefix("postgresql://")
    store = store or str(tmp / "store" / "store.db")
    try:
        print(
            f"stores: ours {_kind(store)}, mlflow {_kind(mlflow_db or 'sqlite')}; "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        _run(args, store, mlflow_db, tmp, points)
        print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if pg is not None:
            pg.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _kind(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else "SQLite"


def _run(
    args: argparse.Namespace, store: str, mlflow_db: str | None, tmp: Path, points: int
) -> None:
    env = dict(os.environ, MLOPS_JUPYTER_STORE=store, MLOPS_JUPYTER_TELEMETRY="0")
    env["PYTHONPATH"] = str(ROOT)
    os.environ["MLOPS_JUPYTER_STORE"] = store
    from mlops_jupyter.store import open_store, tokens

    tok = tokens.add(open_store(store), "bench", "write")
    with Server(env, tmp) as srv:
        for b64 in (True, False):
            rate = bench_ingest(srv.url, tok, points, keys=10, per_chunk=10_000, b64=b64)
            how = "base64 arrays" if b64 else "JSON number lists"
            print(
                f"remote ingest, one client, {how}, gzip: {rate:,.0f} points/s committed "
                f"({points:,} points, batches of 10 keys x 10,000)"
            )
    with Server(env, tmp, "--workers", "2") as srv:
        c = bench_concurrent(srv.url, tok, 16, 2 if args.quick else 20)
        print(
            f"16 concurrent client processes ({c['requests']} requests of 10,000 points, "
            f"server --workers 2): p50 {c['p50_ms']:.0f} ms, p99 {c['p99_ms']:.0f} ms a request, "
            f"{c['points_s']:,.0f} points/s in all, {c['lost']} lost"
        )
    if not args.no_mlflow:
        _mlflow_figures(args, env, tok, tmp, mlflow_db)


if __name__ == "__main__":
    main()
