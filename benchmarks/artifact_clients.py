"""The object-storage side of bench_artifacts.py: the SeaweedFS S3 server it starts on
127.0.0.1 and the clients it measures on it (ours through the run API and through the raw
artifact contract, boto3, s3fs, obstore, MLflow). Each client is a tuple (name, upload(),
download(dest), clean()), so the throughput rounds treat them alike. Not a benchmark to run
on its own."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
BUCKET = "bench"


# -- the server ----------------------------------------------------------------------------
def start_server():
    """A SeaweedFS S3 server on 127.0.0.1 (tests/s3server.py) with bucket BUCKET; returns
    it. Its endpoint and credentials go into os.environ, where every client reads them."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3server import S3Server

    srv = S3Server(buckets=(BUCKET,))
    os.environ.update(srv.env())
    # MLflow's S3 client reads its endpoint from here
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = srv.endpoint
    return srv


def boto_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def raw_store():
    """An obstore S3Store on the whole bucket (no prefix, no mlops-jupyter in between)."""
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        config={
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "region": os.environ.get("AWS_REGION", "us-east-1"),
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )


def bucket_objects(prefix: str | None = None) -> tuple[int, int]:
    """(objects, bytes) in the bucket (under `prefix`), listed by the server."""
    import obstore as obs

    n = size = 0
    for batch in obs.list(raw_store(), prefix):
        n += len(batch)
        size += sum(int(m["size"]) for m in batch)
    return n, size


# -- the clients ---------------------------------------------------------------------------
# A client is (name, upload(), download(dest) -> the file written (None: dest), clean()).
Client = tuple[str, Callable[[], object], Callable[[Path], object], Callable[[], object]]


def ours_clients(src: Path, work: Path) -> list[Client]:
    import mlops_jupyter as mj
    from mlops_jupyter.artifacts import blob_key
    from mlops_jupyter.tracking.api import current_store

    arts = current_store().artifacts
    state: dict = {}

    def up() -> None:
        # a run logs the file (hash, existence check, multipart upload, row)
        with mj.start_run("throughput", experiment="bench") as r:
            mj.log_artifact(src)
        state["run"] = r

    def down(dest: Path) -> Path:
        # an empty cache: the download and its hash check are measured, not a cache hit;
        # the file handed back is the cached copy itself
        old = os.environ["MLOPS_JUPYTER_CACHE"]
        os.environ["MLOPS_JUPYTER_CACHE"] = tempfile.mkdtemp(dir=work, prefix="cache-")
        try:
            return state["run"].artifact_path(src.name)
        finally:
            os.environ["MLOPS_JUPYTER_CACHE"] = old

    def clean() -> None:
        # the blob goes, so the next round uploads it again (its digest stays remembered:
        # the existence check finds nothing, the file is hashed and sent as in round 1)
        from mlops_jupyter.artifacts.base import sha256_file

        if "digest" not in state:
            state["digest"] = sha256_file(src)[0]
        arts.delete(blob_key(state["digest"]))

    return [
        ("ours (log_artifact)", up, down, clean),
        (
            "ours (put_file/get_file)",
            lambda: arts.put_file("bench/raw", src),
            lambda d: arts.get_file("bench/raw", d),
            lambda: arts.delete("bench/raw"),
        ),
    ]


def boto3_client(src: Path) -> Client:
    c = boto_client()  # default TransferConfig: 8 MiB parts, 10 threads
    return (
        "boto3",
        lambda: c.upload_file(str(src), BUCKET, "boto3/blob"),
        lambda d: c.download_file(BUCKET, "boto3/blob", str(d)),
        lambda: c.delete_object(Bucket=BUCKET, Key="boto3/blob"),
    )


def s3fs_client(src: Path) -> Client:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    return (
        "s3fs",
        lambda: fs.put(str(src), f"{BUCKET}/s3fs/blob"),
        lambda d: fs.get(f"{BUCKET}/s3fs/blob", str(d)),
        lambda: fs.rm(f"{BUCKET}/s3fs/blob"),
    )


def obstore_client(src: Path) -> Client:
    import obstore as obs

    st = raw_store()

    def down(dest: Path) -> None:
        with open(dest, "wb") as f:
            for chunk in obs.get(st, "obstore/blob").stream(min_chunk_size=8 * MIB):
                f.write(chunk)

    return (
        "obstore",
        lambda: obs.put(st, "obstore/blob", src),  # multipart, defaults: 5 MiB parts, 12 at once
        down,
        lambda: obs.delete(st, "obstore/blob"),
    )


@contextlib.contextmanager
def fresh_cache(work: Path):
    """MLOPS_JUPYTER_CACHE pointed at an empty folder for the block (removed after)."""
    old = os.environ.get("MLOPS_JUPYTER_CACHE")
    d = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    os.environ["MLOPS_JUPYTER_CACHE"] = str(d)
    try:
        yield d
    finally:
        if old is None:
            os.environ.pop("MLOPS_JUPYTER_CACHE", None)
        else:
            os.environ["MLOPS_JUPYTER_CACHE"] = old
        shutil.rmtree(d, ignore_errors=True)


def quiet_mlflow() -> None:
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for name in ("mlflow", "alembic", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def mlflow_setup(work: Path) -> str:
    """An MLflow experiment whose artifact root is s3://BUCKET/mlflow (SQLite tracking)."""
    quiet_mlflow()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    name = "bench"
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=f"s3://{BUCKET}/mlflow")
    mlflow.set_experiment(name)
    return mlflow.__version__


def mlflow_client(src: Path, work: Path) -> Client:
    import mlflow

    mlflow_setup(work)
    state: dict = {}

    def up() -> None:
        with mlflow.start_run() as r:
            mlflow.log_artifact(str(src))  # boto3 upload_file under the artifact root
        state["rid"] = r.info.run_id

    def down(dest: Path) -> Path:
        tmp = Path(tempfile.mkdtemp(dir=work))
        got = mlflow.artifacts.download_artifacts(
            run_id=state["rid"], artifact_path=src.name, dst_path=str(tmp)
        )
        return Path(got)

    def clean() -> None:
        # each round is a new run, so a new key: nothing to remove for the next round, but
        # the previous object would hold server disk
        c = boto_client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="mlflow/"):
            for o in page.get("Contents", []):
                c.delete_object(Bucket=BUCKET, Key=o["Key"])

    return ("mlflow", up, down, clean)
