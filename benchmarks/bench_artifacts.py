"""Artifacts on object storage: mlops-jupyter's artifact store against boto3, MLflow, s3fs
(fsspec) and obstore, all on one SeaweedFS server started here (127.0.0.1), in one run.

    .venv-bench/bin/python benchmarks/bench_artifacts.py            # 1 GiB / 2 GiB, ~10-13 min
    .venv-bench/bin/python benchmarks/bench_artifacts.py --quick    # 64 MiB / 128 MiB smoke run
    .venv-bench/bin/python benchmarks/bench_artifacts.py --size-mb 256 --rss-mb 512 --rounds 5

Figures (issue 13):
1. upload and download throughput of one file of --size-mb MiB, --rounds interleaved
   rounds (median and range): ours through `mj.log_artifact` / `run.artifact_path`
   (content-addressed: hash, existence check, put-if-absent upload; download into the
   read-through cache, verified) and through the raw contract (`put_file` / `get_file`),
   against boto3 `upload_file`/`download_file`, `mlflow.log_artifact` /
   `download_artifacts` (S3 artifact root), s3fs `put`/`get` and obstore `put`/`get`;
2. peak RSS above the process baseline while uploading a --rss-mb MiB file, each client in
   a fresh subprocess (VmHWM after resetting it through /proc/self/clear_refs);
3. re-logging the unchanged file (one existence check, no upload);
4. `register_model` + `load_model` of a 10M-parameter torch model (and MLflow's
   `pytorch.log_model(registered_model_name=...)` + `pytorch.load_model`).

Peers missing from the interpreter are skipped, and said so; ours always runs. MLflow pins
many packages: run the full comparison from its own venv (see benchmarks/README.md). Nothing
here is a test: the numbers depend on the machine. The server and the clients measured
are in artifact_clients.py beside this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from artifact_clients import (  # this folder: the server and the measured clients
    BUCKET,
    MIB,
    ROOT,
    boto3_client,
    boto_client,
    bucket_objects,
    fresh_cache,
    mlflow_client,
    mlflow_setup,
    obstore_client,
    ours_clients,
    s3fs_client,
    start_server,
)

PEERS = ("boto3", "mlflow", "s3fs", "obstore")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def make_file(path: Path, size_mb: int) -> Path:
    """A file of `size_mb` MiB of random bytes (incompressible, unlike zeros)."""
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MIB))
    return path


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (compared in chunks)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 * MIB), fb.read(8 * MIB)
            if x != y:
                return False
            if not x:
                return True


# -- 1. throughput -------------------------------------------------------------------------


def throughput(src: Path, work: Path, peers: list[str], rounds: int) -> dict:
    """{client: {"up": [s...], "down": [s...]}}: `rounds` rounds, each uploading and
    downloading `src` once with every client in turn (interleaved, so a burst of load on a
    shared machine hits all clients alike); every download is compared with the source."""
    size = src.stat().st_size
    clients = ours_clients(src, work)
    if "boto3" in peers:
        clients.append(boto3_client(src))
    if "s3fs" in peers:
        clients.append(s3fs_client(src))
    if "obstore" in peers:
        clients.append(obstore_client(src))
    if "mlflow" in peers:
        clients.append(mlflow_client(src, work))
    out: dict = {name: {"up": [], "down": []} for name, *_ in clients}
    for i in range(rounds):
        for name, up, down, clean in clients:
            dest = work / ("down-" + "".join(c if c.isalnum() else "-" for c in name))
            log(f"  round {i + 1}/{rounds}, {name}: upload ...")
            t_up = timed(up)
            t = time.perf_counter()
            got = down(dest)
            t_down = time.perf_counter() - t
            got = got if isinstance(got, Path) else dest
            if not got.is_file():
                raise RuntimeError(f"{name}: nothing downloaded to {dest}")
            if got.stat().st_size != size or not same_bytes(src, got):
                raise RuntimeError(f"{name}: downloaded bytes differ from the source")
            got.unlink()
            clean()  # the next round uploads again
            out[name]["up"].append(t_up)
            out[name]["down"].append(t_down)
            log(f"    {size / MIB / t_up:,.0f} MiB/s up, {size / MIB / t_down:,.0f} MiB/s down")
    return out


# -- 2. peak RSS (child processes) ---------------------------------------------------------
RSS_MODES = ("ours", "ours-raw", "boto3", "obstore", "s3fs")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(mode: str, path: str) -> None:
    """Child process: get everything ready (imports, client, one request), reset the peak
    RSS, upload `path`, print {"base": bytes, "peak": bytes, "s": seconds} as JSON."""
    src = Path(path)
    if mode in ("ours", "ours-raw"):
        import mlops_jupyter as mj
        from mlops_jupyter.tracking.api import current_store

        arts = current_store().artifacts
        arts.exists("bench/warm")
        if mode == "ours":
            ctx = mj.start_run("rss", experiment="bench")
            ctx.__enter__()

            def upload() -> None:
                mj.log_artifact(src)
        else:

            def upload() -> None:
                arts.put_file("bench/rss", src)
    elif mode == "boto3":
        c = boto_client()
        c.list_objects_v2(Bucket=BUCKET, MaxKeys=1)

        def upload() -> None:
            c.upload_file(str(src), BUCKET, "boto3/rss")
    elif mode == "obstore":
        _, upload, _, _ = obstore_client(src)
    elif mode == "s3fs":
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        fs.ls(BUCKET)

        def upload() -> None:
            fs.put(str(src), f"{BUCKET}/s3fs/rss")
    else:
        raise SystemExit(f"unknown mode {mode}")
    # "5" resets the peak (VmHWM) to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS")
    t = timed(upload)
    peak = _status("VmHWM")
    if mode == "ours":
        ctx.__exit__(None, None, None)
    print(json.dumps({"base": base, "peak": peak, "s": t}))


def peak_rss(src: Path, peers: list[str]) -> dict:
    """{mode: {"base", "peak", "s"}} of one upload of `src` per fresh child process."""
    out = {}
    modes = [m for m in RSS_MODES if m.startswith("ours") or m in peers]
    for mode in modes:
        log(f"  peak RSS, {mode} ...")
        r = subprocess.run(
            [sys.executable, __file__, "--rss-child", mode, str(src)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if r.returncode != 0:
            raise RuntimeError(f"RSS child {mode} failed:\n{r.stderr[-3000:]}")
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


# -- 3. re-logging the unchanged file ------------------------------------------------------
def relog(src: Path, repeats: int) -> dict:
    """Seconds to log the already stored file again in a new run (median of `repeats`),
    with the file's digest remembered and, once, with it forgotten (a fresh cache: the file
    is hashed again, still no upload); objects in the bucket before and after."""
    import mlops_jupyter as mj

    with mj.start_run("relog-first", experiment="bench"):
        mj.log_artifact(src)  # stored (again: the throughput rounds removed it), not timed
    before = bucket_objects()
    times = []
    for i in range(repeats):
        with mj.start_run(f"relog-{i}", experiment="bench"):
            times.append(timed(lambda: mj.log_artifact(src)))
    work = src.parent
    with fresh_cache(work), mj.start_run("relog-cold", experiment="bench"):
        cold = timed(lambda: mj.log_artifact(src))
    after = bucket_objects()
    return {"warm_s": statistics.median(times), "cold_s": cold, "before": before, "after": after}


# -- 4. models -----------------------------------------------------------------------------
def torch_model(params: int):
    """An nn.Sequential MLP with about `params` parameters (3 layers, float32)."""
    import torch

    torch.manual_seed(0)
    # widths w, 2.5w, 2w, 1.25w: params ~ 2.5w^2 + 5w^2 + 2.5w^2 = 10 w^2
    w = max(8, int((params / 10) ** 0.5))
    return torch.nn.Sequential(
        torch.nn.Linear(w, int(2.5 * w)),
        torch.nn.ReLU(),
        torch.nn.Linear(int(2.5 * w), 2 * w),
        torch.nn.ReLU(),
        torch.nn.Linear(2 * w, int(1.25 * w)),
    )


def same_weights(a, b) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def models(params: int, work: Path, with_mlflow: bool) -> dict:
    """register_model + load_model (cold cache, then warm) of a torch model, and MLflow's
    equivalent when installed."""
    import mlops_jupyter as mj

    model = torch_model(params)
    n = sum(p.numel() for p in model.parameters())
    res: dict = {"params": n}
    before = bucket_objects()
    t = time.perf_counter()
    v = mj.register_model("bench-mlp", model)
    res["register_s"] = time.perf_counter() - t
    after = bucket_objects()
    res["objects_added"] = (after[0] - before[0], after[1] - before[1])
    with fresh_cache(work):
        t = time.perf_counter()
        got = mj.load_model("bench-mlp", version=v)
        res["load_cold_s"] = time.perf_counter() - t
        assert same_weights(model, got), "loaded weights differ"
        t = time.perf_counter()
        mj.load_model("bench-mlp", version=v)
        res["load_warm_s"] = time.perf_counter() - t
    log(
        f"  ours: register {res['register_s']:.2f} s, load {res['load_cold_s']:.2f} s cold,"
        f" {res['load_warm_s']:.2f} s cached"
    )
    if with_mlflow:
        import mlflow
        import mlflow.pytorch

        mlflow_setup(work)
        # log_model infers the model's pip requirements by default (a subprocess that
        # imports it); with them given it does not: both are measured
        for label, extra in (("", {}), ("_given_reqs", {"pip_requirements": ["torch"]})):
            with mlflow.start_run():
                t = time.perf_counter()
                mlflow.pytorch.log_model(
                    model,
                    name="model",
                    registered_model_name="bench-mlp",
                    serialization_format="pickle",  # the module itself, as ours stores it
                    **extra,
                )
                res[f"mlflow_register{label}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        got = mlflow.pytorch.load_model("models:/bench-mlp/1")
        res["mlflow_load_s"] = time.perf_counter() - t
        assert same_weights(model, got), "MLflow's loaded weights differ"
        log(
            f"  MLflow: log_model+register {res['mlflow_register_s']:.2f} s"
            f" ({res['mlflow_register_given_reqs_s']:.2f} s with pip_requirements given),"
            f" load {res['mlflow_load_s']:.2f} s"
        )
    return res


# -- report --------------------------------------------------------------------------------
def ratio(x: float | None, y: float | None) -> str:
    if not x or not y:
        return "-"
    r = x / y
    return f"{r:.2f}x"


def report(a, size_mb: int, tp: dict, rss: dict, rl: dict, md: dict, skipped: list[str]) -> None:
    size = size_mb * MIB
    n = len(next(iter(tp.values()))["up"])
    print(
        f"\n1. throughput, one file of {size_mb:,} MiB, median of {n} interleaved round(s)"
        " [slowest-fastest] (same server; ratio = vs boto3)"
    )
    print(f"{'client':26} {'upload MiB/s':>20} {'ratio':>6} {'download MiB/s':>20} {'ratio':>6}")

    def rate(ts: list[float]) -> tuple[float, str]:
        r = sorted(size / MIB / t for t in ts)
        return statistics.median(r), f"{statistics.median(r):,.0f} [{r[0]:,.0f}-{r[-1]:,.0f}]"

    b = tp.get("boto3")
    for name, v in tp.items():
        (up, ups), (down, downs) = rate(v["up"]), rate(v["down"])
        bu = rate(b["up"])[0] if b else None
        bd = rate(b["down"])[0] if b else None
        print(f"{name:26} {ups:>20} {ratio(up, bu):>6} {downs:>20} {ratio(down, bd):>6}")
    print("  target: ours >= boto3's throughput")

    print(
        f"\n2. peak RSS while uploading {a.rss_mb:,} MiB (fresh process each; target ours <= 100 MiB)"
    )
    print(f"{'client':28} {'baseline MiB':>13} {'peak above baseline MiB':>24} {'MiB/s':>8}")
    for mode, v in rss.items():
        above = (v["peak"] - v["base"]) / MIB
        print(f"{mode:28} {v['base'] / MIB:13,.0f} {above:24,.1f} {a.rss_mb / v['s']:8,.0f}")

    print(f"\n3. re-logging the unchanged {size_mb:,} MiB file (target <= 50 ms)")
    print(f"  digest remembered (median of {a.repeats}): {rl['warm_s'] * 1e3:,.1f} ms")
    print(f"  digest forgotten (hashed again, no upload): {rl['cold_s'] * 1e3:,.0f} ms")
    grown = (rl["after"][0] - rl["before"][0], rl["after"][1] - rl["before"][1])
    print(f"  objects added to the bucket: {grown[0]} ({grown[1]:,} bytes)")
    if "mlflow" in tp:
        again = statistics.median(tp["mlflow"]["up"])
        print(f"  MLflow re-log = a full upload again: {again * 1e3:,.0f} ms")

    if not md:
        for sk in skipped:
            print(f"\nnot measured: {sk}")
        return
    print(f"\n4. register_model + load_model, torch MLP of {md['params']:,} parameters")
    print(f"  ours:   register {md['register_s'] * 1e3:,.0f} ms; load {md['load_cold_s'] * 1e3:,.0f} ms"
          f" (cold cache), {md['load_warm_s'] * 1e3:,.0f} ms (cached)")  # fmt: skip
    print(f"  objects added to the bucket by register_model: {md['objects_added'][0]}"
          f" ({md['objects_added'][1]:,} bytes)")  # fmt: skip
    if "mlflow_register_s" in md:
        print(f"  MLflow: pytorch.log_model(registered_model_name=...) {md['mlflow_register_s'] * 1e3:,.0f} ms"
              f" ({md['mlflow_register_given_reqs_s'] * 1e3:,.0f} ms with pip_requirements given);"
              f" pytorch.load_model {md['mlflow_load_s'] * 1e3:,.0f} ms")  # fmt: skip
        both = md["register_s"] + md["load_cold_s"]
        print(f"  register + cold load: ours {both * 1e3:,.0f} ms, MLflow"
              f" {(md['mlflow_register_s'] + md['mlflow_load_s']) * 1e3:,.0f} ms"
              f" ({ratio(md['mlflow_register_s'] + md['mlflow_load_s'], both)} ours faster)")  # fmt: skip
    for s in skipped:
        print(f"\nnot measured: {s}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--size-mb", type=int, help="throughput/re-log file size (MiB; 1024)")
    ap.add_argument("--rss-mb", type=int, help="peak-RSS upload size (MiB; 2048)")
    ap.add_argument("--params", type=int, help="model parameters (10,000,000)")
    ap.add_argument("--repeats", type=int, default=5, help="re-log repeats")
    ap.add_argument("--rounds", type=int, help="throughput rounds per client (3; quick: 1)")
    ap.add_argument("--no-peers", action="store_true", help="measure mlops-jupyter only")
    ap.add_argument("--rss-child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(*a.rss_child)
        return 0
    a.size_mb = a.size_mb or (64 if a.quick else 1024)
    a.rss_mb = a.rss_mb or (128 if a.quick else 2048)
    a.params = a.params or (1_000_000 if a.quick else 10_000_000)
    a.rounds = a.rounds or (1 if a.quick else 3)
    sys.path.insert(0, str(ROOT))

    skipped = []
    peers = [] if a.no_peers else [p for p in PEERS if have(p)]
    if not a.no_peers:
        skipped += [f"{p} (not installed in {sys.prefix})" for p in PEERS if p not in peers]
        if "mlflow" in peers and not have("boto3"):  # MLflow's S3 artifact store is boto3
            peers.remove("mlflow")
            skipped.append(f"mlflow (not installed with boto3, its S3 client, in {sys.prefix})")
    with_torch = have("torch")
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        work = Path(tmp)
        free = shutil.disk_usage(work).free / MIB
        # source file, a download, the cache, and the server's copies of every upload (its
        # volumes keep deleted bytes until compacted)
        need = a.size_mb * (3 + 7 * a.rounds) + a.rss_mb * 7
        if free < need:
            raise SystemExit(f"{free:,.0f} MiB free in {work}, this run needs about {need:,}")
        # the caller's own store and cloud settings stay out of it
        for k in [k for k in os.environ if k.startswith(("MLOPS_JUPYTER_", "AWS_", "MLFLOW_"))]:
            del os.environ[k]
        os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
        (work / "store").mkdir()
        os.environ["MLOPS_JUPYTER_STORE"] = str(work / "store")
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = f"s3://{BUCKET}/ours"
        os.environ["MLOPS_JUPYTER_CACHE"] = str(work / "cache")
        data = work / "data"  # outside the store folder, as a user's files are
        data.mkdir()
        srv = start_server()
        try:
            t0 = time.perf_counter()
            src = make_file(data / f"model-{a.size_mb}m.bin", a.size_mb)
            log(f"1. throughput, {a.size_mb} MiB ...")
            tp = throughput(src, work, peers, a.rounds)
            log("3. re-logging the unchanged file ...")
            rl = relog(src, a.repeats)
            src.unlink()
            big = make_file(data / f"big-{a.rss_mb}m.bin", a.rss_mb)
            log(f"2. peak RSS while uploading {a.rss_mb} MiB ...")
            rss = peak_rss(big, peers)
            big.unlink()
            md: dict = {}
            if with_torch:
                log("4. register_model + load_model ...")
                md = models(a.params, work, "mlflow" in peers)
            else:
                skipped.append(f"4. models (torch not installed in {sys.prefix})")
            log(f"done in {time.perf_counter() - t0:.0f} s")
        finally:
            srv.close()
    report(a, a.size_mb, tp, rss, rl, md, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
