"""Model serving figures: `mlops-jupyter serve` against `mlflow models serve` of the same
torch MLP, on this machine, 127.0.0.1.

    python benchmarks/bench_serving.py [--workers 2] [--seconds 5] [--requests 20000]
                                       [--rounds 3] [--no-mlflow]
    python benchmarks/bench_serving.py --rate 50%,80% [--arrivals poisson|constant]
                                       [--open-seconds 15] [--rounds 5]

Prints:
  - p50/p99 latency and requests/s at 1 and 16 concurrent clients, ours and MLflow's
    (the model logged with mlflow.pytorch to a local file store, served with
    `mlflow models serve --env-manager local`; one instance per request, JSON "inputs");
  - micro-batching gain: requests/s at 64 concurrent clients with --max-batch 64 against
    --max-batch 1, for that MLP and a heavier one (512-2048-2048-10), both servers up at
    once and measured in turns (--rounds; the median ratio);
  - the cost of logging and routing per request: measured in-process (request id, route
    match, log row into the background logger's queue) and the background writer's cost
    per row.
Ours and MLflow's servers are up at once and measured in turns, --rounds times (medians
are printed at the end): the load of a shared machine drifts between measurements.
The load comes from a separate process (asyncio, one keep-alive connection per client,
closed loop), bounded by --requests and --seconds per measurement.

With --rate, only latency at equal throughput (open loop): the load process sends requests
on a fixed schedule (Poisson or constant arrivals) whatever the answers do, from a pool of
keep-alive connections that grows up to --max-conns (a request that had to wait for a free
one is counted), and measures each latency from the request's scheduled send time, so a
slow answer cannot hold back the requests after it (no coordinated omission). Rates in %
are of MLflow's closed-loop capacity at 16 clients, measured first in the same run. Both
servers at each rate, in turns (the order alternating), --rounds times; printed: p50/p90/
p99/max, the answered rate, errors, and the p99 ratio ours/MLflow per rate (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IN, HIDDEN, OUT = 32, 128, 10
WIDE = 512  # the heavier MLP of the batching figure: 512-2048-2048-10


# -- load generator (runs in its own process: `bench_serving.py --loadgen ...`) ------------
async def _client(host, port, path, body, deadline, budget, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    req = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            t0 = time.perf_counter()
            head = await _exchange((reader, writer), req)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
                continue
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def _load(
    url: str, path: str, clients: int, seconds: float, requests: int, width: int = IN
) -> dict:
    host, port = url.split("//")[1].split(":")
    x = np.random.default_rng(0).normal(size=(1, width)).round(6).tolist()
    body = json.dumps({"inputs": x}).encode()
    # warm-up: every connection once, a short while
    warm = [requests // 10 + clients]
    await asyncio.gather(
        *[
            _client(host, int(port), path, body, time.perf_counter() + 1.0, warm, [], [])
            for _ in range(clients)
        ]
    )
    lat: list[float] = []
    errors: list[str] = []
    budget = [requests]
    t0 = time.perf_counter()
    await asyncio.gather(
        *[
            _client(host, int(port), path, body, t0 + seconds, budget, lat, errors)
            for _ in range(clients)
        ]
    )
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def load(url: str, path: str, clients: int, seconds: float, requests: int, width: int = IN) -> dict:
    """Run the load generator in a separate process; its figures."""
    cmd = [sys.executable, __file__, "--loadgen", url, path, str(clients)]
    cmd += [str(seconds), str(requests), str(width)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout)


# -- open-loop load generator (`bench_serving.py --loadgen-open ...`) ----------------------
class _Pool:
    """Keep-alive connections handed out first in, first out (each one is reused every
    few tens of ms, well within a server's keep-alive timeout); a new one is opened when
    none is free, up to `limit`, after which a request waits for one (and is counted)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: deque = deque()
        self.opened = 0
        self.waited = 0
        self.free = asyncio.Condition()

    async def open(self) -> tuple:
        self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.opened -= 1
            raise

    async def get(self) -> tuple:
        if self.idle:
            return self.idle.popleft()
        if self.opened < self.limit:
            return await self.open()
        self.waited += 1
        async with self.free:
            # a connection comes back, or a broken one frees its slot
            await self.free.wait_for(lambda: bool(self.idle) or self.opened < self.limit)
        if self.idle:
            return self.idle.popleft()
        return await self.open()

    async def put(self, conn: tuple | None) -> None:
        if conn is None:  # broken: its slot is free for a new one
            self.opened -= 1
        else:
            self.idle.append(conn)
        async with self.free:
            self.free.notify()


async def _exchange(conn: tuple, req: bytes) -> bytes:
    reader, writer = conn
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    await reader.readexactly(n)
    return head


async def _open_loop(
    url: str, path: str, rate: float, seconds: float, arrivals: str, width: int, limit: int
) -> dict:
    """Send requests at `rate` per second on a fixed schedule (constant or Poisson
    arrivals), whatever the answers do; each latency runs from the request's scheduled
    send time, so a slow answer cannot hold back the requests after it (no coordinated
    omission). 1 s of warm-up at the same rate is not counted."""
    host, port = url.split("//")[1].split(":")
    x = np.random.default_rng(0).normal(size=(1, width)).round(6).tolist()
    body = json.dumps({"inputs": x}).encode()
    req = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    pool = _Pool(host, int(port), limit)
    pool.idle.extend(await asyncio.gather(*[pool.open() for _ in range(min(32, limit))]))
    warm = 1.0
    n = int((warm + seconds) * rate)
    rng = np.random.default_rng(1)
    if arrivals == "poisson":
        offsets = np.cumsum(rng.exponential(1 / rate, n))
    else:
        offsets = np.arange(n) / rate
    lat: list[float] = []
    lag: list[float] = []
    errors: list[str] = []
    retries = [0]
    done_at = [0.0]

    async def one(t_sched: float, counted: bool) -> None:
        lag_s = time.perf_counter() - t_sched
        for attempt in range(2):
            conn = None
            try:
                conn = await pool.get()
                head = await _exchange(conn, req)
            except (OSError, asyncio.IncompleteReadError) as e:
                # a keep-alive connection the server closed: once more on a fresh one
                if conn is not None:
                    conn[1].close()
                    await pool.put(None)
                if attempt == 0:
                    retries[0] += 1
                    continue
                if counted:
                    errors.append(type(e).__name__)
                return
            await pool.put(conn)
            break
        t = time.perf_counter()
        if not counted:
            return
        done_at[0] = max(done_at[0], t)
        if not head.startswith(b"HTTP/1.1 200"):
            errors.append(head.split(b"\r\n")[0].decode())
            return
        lat.append(t - t_sched)
        lag.append(lag_s)

    t0 = time.perf_counter() + 0.05
    tasks = []
    for off in offsets:
        t_sched = t0 + off
        delay = t_sched - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(t_sched, off >= warm)))
    t_end = t0 + offsets[-1]
    # the schedule is over: answers still out get a bounded while, then count as errors
    _, pending = await asyncio.wait(tasks, timeout=max(10.0, seconds))
    for t in pending:
        t.cancel()
    sent = int(np.sum(offsets >= warm))
    a = np.array(lat) * 1000 if lat else np.array([float("nan")])
    span = max(done_at[0], t_end) - (t0 + warm)
    for reader_writer in pool.idle:
        reader_writer[1].close()
    return {
        "rate": rate,
        "sent": sent,
        "requests": len(lat),
        "errors": len(errors) + len(pending),
        "rps": len(lat) / span if span > 0 else 0.0,
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(np.max(a)),
        "lag_p99_ms": float(np.percentile(np.array(lag or [0.0]) * 1000, 99)),
        "connections": pool.opened,
        "waited": pool.waited,
        "retries": retries[0],
    }


def load_open(
    url: str, path: str, rate: float, seconds: float, arrivals: str, width: int = IN,
    limit: int = 512,
) -> dict:  # fmt: skip
    """Run the open-loop load generator in a separate process; its figures."""
    cmd = [sys.executable, __file__, "--loadgen-open", url, path, str(rate), str(seconds)]
    cmd += [arrivals, str(width), str(limit)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout)


# -- servers -------------------------------------------------------------------------------
def _model(width: int = IN, hidden: int = HIDDEN, layers: int = 1):
    import torch

    torch.manual_seed(0)
    mods = [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
    for _ in range(layers - 1):
        mods += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    return torch.nn.Sequential(*mods, torch.nn.Linear(hidden, OUT)).eval()


def _wait_http(url: str, path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    from mlops_jupyter.serving.client import request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        try:
            if request(url + path, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up in {timeout} s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(tmp: Path, model, workers: int) -> tuple[subprocess.Popen, str]:
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    # MLflow 3 refuses its plain-folder tracking store: runs in SQLite, files in a folder
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("bench", (tmp / "mlflow-artifacts").as_uri())
    )
    x = np.zeros((1, IN), np.float32)
    import torch

    with torch.inference_mode():
        y = model(torch.from_numpy(x)).numpy()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            model, name="model", signature=infer_signature(x, y), input_example=x
        )
    port = _free_port()
    # it starts `uvicorn` by name: the venv's bin must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", info.model_uri]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", str(workers), "--env-manager", "local"]
    log = open(tmp / "mlflow-serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url, "/ping", proc)
    return proc, url


# -- in-process costs ----------------------------------------------------------------------
def logging_routing_cost(store_path: Path) -> dict:
    """µs per request of what our server adds around the model: the request id, matching
    the route, building the log row and queueing it (on the request's path), and the
    background writer's cost per row (off it)."""
    import uuid

    from starlette.routing import Match

    from mlops_jupyter.serving.app import PredictionLog, make_app
    from mlops_jupyter.store import open_store

    store = open_store(store_path)
    app = make_app("mlp", 1, store, log=False)
    scope = {"type": "http", "path": "/predict", "method": "POST", "root_path": ""}
    plog = PredictionLog(store, interval=3600)  # flushed by hand below
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        rid = uuid.uuid4().hex
        for route in app.router.routes:
            if route.matches(scope)[0] is Match.FULL:
                break
        t = time.perf_counter()
        plog.add(
            (rid, "mlp", 1, "v1", time.time(), (time.perf_counter() - t) * 1000, 200, None, 1, 8,
             "[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]]", "host:1")
        )  # fmt: skip
    path_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    plog.flush()
    write_us = (time.perf_counter() - t0) / n * 1e6
    plog.close()
    return {"on_path_us": path_us, "writer_us_per_row": write_us}


def _valid_rate(r: str) -> bool:
    try:
        return float(r.removesuffix("%")) > 0
    except ValueError:
        return False


def open_loop_figure(args, rates: list[str], targets: list[tuple], measure) -> None:
    """Latency at equal throughput: both servers at the same fixed request rates (open
    loop), in turns, --rounds times; medians and the p99 ratio ours/MLflow per rate."""
    if any(r.endswith("%") for r in rates):
        caps = []
        for _ in range(2):
            for label, url, path in targets:
                r = measure(f"{label} (closed loop)", url, path, 16)
                if label.startswith("mlflow"):
                    caps.append(r["rps"])
        cap = float(np.median(caps))
        print(f"  MLflow's closed-loop capacity at 16 clients: {cap:.0f} req/s (median of 2)")
        rates_rps = [cap * float(r[:-1]) / 100 if r.endswith("%") else float(r) for r in rates]
    else:
        rates_rps = [float(r) for r in rates]
    print(
        f"open loop, {args.arrivals} arrivals, {args.open_seconds:g} s per measurement after "
        f"1 s warm-up; latency from the scheduled send time",
        flush=True,
    )
    res: dict[tuple[float, str], list[dict]] = {}
    for rnd in range(args.rounds):
        for rate in rates_rps:
            # the order alternates between rounds: neither server always follows the other
            for label, url, path in targets[:: 1 if rnd % 2 == 0 else -1]:
                load1 = os.getloadavg()[0]
                r = load_open(url, path, rate, args.open_seconds, args.arrivals,
                              limit=args.max_conns)  # fmt: skip
                res.setdefault((rate, label), []).append(r)
                print(
                    f"  round {rnd + 1} {label:<20} {rate:6.0f}/s sent, {r['rps']:6.0f}/s "
                    f"answered  p50 {r['p50_ms']:6.2f}  p90 {r['p90_ms']:6.2f}  p99 "
                    f"{r['p99_ms']:7.2f}  max {r['max_ms']:7.2f} ms  errors {r['errors']}  "
                    f"conns {r['connections']} (waited {r['waited']})  send lag p99 "
                    f"{r['lag_p99_ms']:.2f} ms  load {load1:.1f}",
                    flush=True,
                )
    print(f"medians of {args.rounds} rounds:")
    print("| rate req/s | server | answered req/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for rate in rates_rps:
        p99 = {}
        for label, _, _ in targets:
            rs = res[(rate, label)]
            m = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
            p99[label] = [r["p99_ms"] for r in rs]
            print(
                f"| {rate:.0f} | {label} | {m['rps']:.0f} | {m['p50_ms']:.2f} | "
                f"{m['p90_ms']:.2f} | {m['p99_ms']:.2f} | {m['max_ms']:.1f} | "
                f"{sum(r['errors'] for r in rs)} |"
            )
        if len(p99) == 2:
            ours, theirs = p99["mlops-jupyter serve"], p99["mlflow models serve"]
            per = [a / b for a, b in zip(ours, theirs)]
            ratio = np.median(ours) / np.median(theirs)
            print(
                f"  {rate:.0f} req/s: p99 ours/MLflow {ratio:.2f} (medians; per round "
                f"{', '.join(f'{x:.2f}' for x in per)}); target <= 0.5 "
                f"{'met' if ratio <= 0.5 else 'not met'}"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3, help="turns of the batching figure")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument(
        "--rate",
        help="open-loop figure only: requests/s, comma-separated; N%% is N %% of MLflow's "
        "closed-loop capacity at 16 clients, measured first in the same run",
    )
    ap.add_argument("--arrivals", choices=("constant", "poisson"), default="poisson")
    ap.add_argument("--open-seconds", type=float, default=15, help="per open-loop measurement")
    ap.add_argument("--max-conns", type=int, default=512, help="open-loop connection limit")
    args = ap.parse_args()
    if args.rate is not None:
        rates = [r.strip() for r in args.rate.split(",") if r.strip()]
        bad = [r for r in rates if not _valid_rate(r)]
        if bad or not rates:
            ap.error(f"--rate: positive numbers or percentages, got {args.rate!r}")
        if args.no_mlflow and any(r.endswith("%") for r in rates):
            ap.error("--rate N% needs MLflow's capacity: drop --no-mlflow or give requests/s")

    import mlops_jupyter as mj

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    store = tmp / "store.db"
    mj.set_store(store)
    model = _model()
    mj.register_model("mlp", model, signature={"x": {"shape": [IN], "dtype": "float32"}})
    print(f"torch MLP {IN}-{HIDDEN}-{OUT}, {args.workers} workers each, one instance per request")
    print(f"machine: {os.cpu_count()} CPUs; load generator in its own process on the same one")
    rows = []

    def measure(label: str, url: str, path: str, clients: int, width: int = IN) -> dict:
        r = load(url, path, clients, args.seconds, args.requests, width)
        rows.append((label, r))
        print(
            f"  {label:<38} c={clients:<3} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} requests, {r['errors']} errors)",
            flush=True,
        )
        return r

    # ours and MLflow's up at once, measured in turns (the machine's load drifts)
    srv = mj.serve("mlp", workers=args.workers, max_batch=64, max_wait_ms=5)
    mlflow_proc = None
    try:
        targets = [("mlops-jupyter serve", srv.url, "/predict")]
        if not args.no_mlflow:
            mlflow_proc, mlflow_url = start_mlflow(tmp, model, args.workers)
            targets.append(("mlflow models serve", mlflow_url, "/invocations"))
        if args.rate is not None:
            open_loop_figure(args, rates, targets, measure)
            return
        for _ in range(args.rounds):
            for c in (1, 16):
                for label, url, path in targets:
                    measure(label, url, path, c)
    finally:
        srv.stop()
        if mlflow_proc is not None:
            mlflow_proc.terminate()
            try:
                mlflow_proc.wait(20)
            except subprocess.TimeoutExpired:
                mlflow_proc.kill()
    # micro-batching: both servers up at once, measured in turns (the machine's load drifts)
    wide = _model(WIDE, 2048, 2)
    mj.register_model("mlp-wide", wide, signature={"x": {"shape": [WIDE], "dtype": "float32"}})
    for name, width in (("mlp", IN), ("mlp-wide", WIDE)):
        on = mj.serve(name, workers=args.workers, max_batch=64, max_wait_ms=5)
        off = mj.serve(name, workers=args.workers, max_batch=1)
        gains = []
        try:
            for _ in range(args.rounds):
                a = measure(f"{name} --max-batch 64", on.url, "/predict", 64, width)
                b = measure(f"{name} --max-batch 1", off.url, "/predict", 64, width)
                gains.append(a["rps"] / b["rps"])
        finally:
            on.stop()
            off.stop()
        print(
            f"  micro-batching gain at 64 clients, {name}: x{np.median(gains):.2f} req/s "
            f"(median of {len(gains)} rounds: {', '.join(f'{g:.2f}' for g in gains)})"
        )
    cost = logging_routing_cost(store)
    print(
        f"  logging+routing on the request path: {cost['on_path_us']:.1f} µs/request; "
        f"background writer: {cost['writer_us_per_row']:.1f} µs/row (off the path)"
    )
    for c in (1, 16):
        med = {}
        for label in ("mlops-jupyter serve", "mlflow models serve"):
            rs = [r for lb, r in rows if lb == label and r["clients"] == c]
            if rs:
                med[label] = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
                m = med[label]
                print(
                    f"  median of {len(rs)}: {label:<22} c={c:<3} {m['rps']:8.0f} req/s  "
                    f"p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms"
                )
        if len(med) == 2:
            a, b = med["mlops-jupyter serve"], med["mlflow models serve"]
            print(
                f"  c={c}: p99 ours/MLflow {a['p99_ms'] / b['p99_ms']:.2f}, "
                f"req/s ours/MLflow {a['rps'] / b['rps']:.2f}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen-open":
        url, path, rate, seconds, arrivals, width, limit = sys.argv[2:9]
        res = asyncio.run(
            _open_loop(url, path, float(rate), float(seconds), arrivals, int(width), int(limit))
        )
        print(json.dumps(res))
    elif len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        url, path, clients, seconds, requests, width = sys.argv[2:8]
        res = asyncio.run(_load(url, path, int(clients), float(seconds), int(requests), int(width)))
        print(json.dumps(res))
    else:
        main()
