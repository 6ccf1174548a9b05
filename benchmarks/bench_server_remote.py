"""Tracking server benchmark, same machine, one run (loopback HTTP):

- remote ingest from one client: points/s committed through `POST /api/v1/ingest` (gzip,
  one keep-alive connection, batches of many keys), read back and counted;
- the `mlflow` client logging 10k metrics with `log_batch` against our server and against a
  real `mlflow server` on the same kind of store (SQLite files here): throughput ratio;
- `search_runs` over N runs on both: latency ratio.

    python benchmarks/bench_server_remote.py              # full sizes
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


def bench_mlflow(url: str, env: dict[str, str], n_metrics: int, n_runs: int) -> dict[str, float]:
    """log_batch of n_metrics and search_runs over n_runs with the real mlflow client
    (in a subprocess, so it talks to `url` with its own settings)."""
    code = f"""
import json, time, mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
c = MlflowClient({url!r})
eid = c.create_experiment("bench-%d" % time.time_ns())
run = c.create_run(eid)
ms = [Metric("m%d" % (i % 10), float(i), 1764950400000 + i, i // 10) for i in range({n_metrics})]
t = time.perf_counter(); c.log_batch(run.info.run_id, metrics=ms); dt = time.perf_counter() - t
assert len(c.get_metric_history(run.info.run_id, "m0")) == {n_metrics} // 10
eid2 = c.create_experiment("search-%d" % time.time_ns())
for i in range({n_runs}):
    r = c.create_run(eid2)
    c.log_batch(r.info.run_id, metrics=[Metric("loss", i * 0.001, 0, 0)])
lat = []
for _ in range(5):
    t = time.perf_counter()
    got = c.search_runs([eid2], "metrics.loss < 0.5", max_results=100, order_by=["metrics.loss"])
    lat.append(time.perf_counter() - t)
assert len(got) == min(100, {n_runs}), len(got)
print(json.dumps({{"log_batch_s": dt, "search_s": sorted(lat)[2]}}))
"""
    p = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600
    )
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def start_mlflow_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    db = tmp / "mlflow.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", f"sqlite:///{db}", "--workers", "1"]
        + ["--artifacts-destination", str(tmp / "mlflow-artifacts")],
        stdout=open(tmp / "mlflow.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError((tmp / "mlflow.log").read_text()[-3000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--store", help="store URL (default: a fresh SQLite file)")
    args = ap.parse_args()
    points = 400_000 if args.quick else 2_000_000
    n_runs = 200 if args.quick else 2_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    store = args.store or str(tmp / "store" / "store.db")
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
        c = bench_concurrent(srv.url, tok, 16, 5 if args.quick else 20)
        print(
            f"16 concurrent client processes ({c['requests']} requests of 10,000 points, "
            f"server --workers 2): p50 {c['p50_ms']:.0f} ms, p99 {c['p99_ms']:.0f} ms a request, "
            f"{c['points_s']:,.0f} points/s in all, {c['lost']} lost"
        )
    if args.no_mlflow:
        return
    with Server(env, tmp) as srv:
        menv = dict(env, MLFLOW_TRACKING_TOKEN=tok)
        ours = bench_mlflow(srv.url, menv, 10_000, n_runs)
    proc, murl = start_mlflow_server(tmp)
    try:
        theirs = bench_mlflow(murl, dict(os.environ), 10_000, n_runs)
    finally:
        proc.terminate()
        proc.wait(30)
    print(
        f"mlflow client log_batch of 10k metrics: ours {ours['log_batch_s'] * 1000:.0f} ms, "
        f"mlflow server {theirs['log_batch_s'] * 1000:.0f} ms "
        f"(throughput ratio ours/mlflow {theirs['log_batch_s'] / ours['log_batch_s']:.2f}x)"
    )
    print(
        f"search_runs over {n_runs:,} runs (filter + order, 100 results, median of 5): "
        f"ours {ours['search_s'] * 1000:.0f} ms, mlflow server {theirs['search_s'] * 1000:.0f} ms"
        f" (latency ratio mlflow/ours {theirs['search_s'] / ours['search_s']:.2f}x)"
    )


if __name__ == "__main__":
    main()
