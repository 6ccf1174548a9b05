"""Model serving figures: `mlops-jupyter serve` against `mlflow models serve` of the same
torch MLP, on this machine, 127.0.0.1.

    python benchmarks/bench_serving.py [--workers 2] [--seconds 5] [--requests 20000]
                                       [--rounds 3] [--no-mlflow]

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
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            await reader.readexactly(n)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3, help="turns of the batching figure")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()

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
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        url, path, clients, seconds, requests, width = sys.argv[2:8]
        res = asyncio.run(_load(url, path, int(clients), float(seconds), int(requests), int(width)))
        print(json.dumps(res))
    else:
        main()
