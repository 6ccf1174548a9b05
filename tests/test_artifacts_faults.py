"""Object storage when things go wrong, on a real S3-compatible server (SeaweedFS on
127.0.0.1): the server stopped mid-upload, a process SIGKILLed mid-upload, wrong
credentials, a missing bucket, an unreachable endpoint, an object changed on the server.
Every error is an ArtifactStoreError that names the store and never holds the secret."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from mlops_jupyter.artifacts import forget, open_artifacts
from mlops_jupyter.artifacts.base import blob_key
from mlops_jupyter.errors import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStoreError,
)

MB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def _secret_free(err: BaseException) -> str:
    """The error's message and the messages of its causes, checked for secrets."""
    from s3server import SECRET_KEY

    text = ""
    todo: list[BaseException | None] = [err]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text += f"{e}\n{e!r}\n"
        todo += [e.__cause__, e.__context__]
    assert SECRET_KEY not in text
    assert "wrong-Secret" not in text
    return str(err)


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    """A server of this test's own, which it may stop, kill and restart."""
    from s3server import S3Server

    server = S3Server()
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS_RETRY_S", "2")
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS_PART_MB", "5")
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "cache"))
    yield server
    forget()
    server.close()


def test_server_stopped_mid_upload(own_server):
    store = open_artifacts(own_server.url(f"p-{uuid.uuid4().hex[:8]}"))
    store.put_stream("before", [b"x"])
    sent = 0

    def chunks():
        nonlocal sent
        for i in range(12):
            if i == 3:
                own_server.stop()  # mid-upload: parts already sent, more to come
            sent += MB * 2
            yield os.urandom(2 * MB)

    t0 = time.monotonic()
    with pytest.raises(ArtifactStoreError) as ei:
        store.put_stream("artifacts/big.bin", chunks())
    elapsed = time.monotonic() - t0
    msg = _secret_free(ei.value)
    # a server on its way down may still answer (a 500) before it stops listening; either
    # way the retries end in an error that names the location and the key
    assert f"cannot reach endpoint {own_server.endpoint}" in msg or "Internal Server Error" in msg
    assert "artifacts/big.bin" in msg and store.location in msg
    assert elapsed < 30, elapsed  # bounded retries, then a clear error

    own_server.start()
    assert store.head("artifacts/big.bin") is None
    assert [i.key for i in store.list()] == ["before"]


def test_process_killed_mid_upload(own_server, tmp_path):
    url = own_server.url(f"p-{uuid.uuid4().hex[:8]}")
    ready = tmp_path / "ready"
    child = textwrap.dedent(
        f"""
        import os, sys, time
        from mlops_jupyter.artifacts import open_artifacts
        store = open_artifacts({url!r})
        def chunks():
            for i in range(6):
                yield os.urandom(2 << 20)
            open({str(ready)!r}, "w").close()
            time.sleep(600)  # killed here, parts sent, never completed
            yield b""
        store.put_stream("models/m/weights.bin", chunks())
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the uploading child died early"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # let the in-flight parts land
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    store = open_artifacts(url)
    assert store.head("models/m/weights.bin") is None
    assert list(store.list()) == []
    found = store.incomplete_uploads()
    assert [(u["key"], u["pid"]) for u in found] == [("models/m/weights.bin", proc.pid)]
    store.abort_upload(found[0]["key"], found[0]["id"])
    assert store.incomplete_uploads() == []


def test_upload_in_progress_is_not_incomplete(own_server):
    store = open_artifacts(own_server.url(f"p-{uuid.uuid4().hex[:8]}"))
    seen = []

    def chunks():
        for i in range(3):
            if i == 2:
                seen.append(store.incomplete_uploads())
            yield os.urandom(3 * MB)

    store.put_stream("k", chunks())
    assert seen == [[]]  # this live process's upload is not reported
    assert store.incomplete_uploads() == []


def test_wrong_credentials(s3_url, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-Secret-4242")
    store = open_artifacts(s3_url)
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for call in (
        lambda: store.put_file("a/f", src),
        lambda: store.head("a/f"),
        lambda: list(store.list()),
        lambda: store.get_file("a/f", tmp_path / "out"),
    ):
        with pytest.raises(ArtifactStoreError) as ei:
            call()
        msg = _secret_free(ei.value)
        assert "access denied to s3://mlops-test/" in msg
        assert "AWS_ACCESS_KEY_ID" in msg
    assert not (tmp_path / "out").exists()


def test_wrong_access_key(s3_url, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(ArtifactStoreError, match="access denied") as ei:
        open_artifacts(s3_url).put_stream("a", [b"x"])
    _secret_free(ei.value)


def test_missing_bucket(s3_url, tmp_path):
    store = open_artifacts("s3://no-such-bucket-4711/prefix")
    for call in (
        lambda: store.head("a/f"),
        lambda: store.exists("a/f"),
        lambda: list(store.list("a")),
        lambda: store.get_file("a/f", tmp_path / "out"),
        lambda: store.iter_bytes("a/f"),
    ):
        with pytest.raises(ArtifactStoreError) as ei:
            call()
        assert not isinstance(ei.value, ArtifactNotFoundError)
        msg = _secret_free(ei.value)
        assert "bucket 'no-such-bucket-4711' does not exist" in msg


def test_unreachable_endpoint(s3_url, monkeypatch):
    from s3server import free_ports

    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    store = open_artifacts(s3_url)
    t0 = time.monotonic()
    with pytest.raises(ArtifactStoreError) as ei:
        store.head("a/f")
    assert time.monotonic() - t0 < 15
    msg = _secret_free(ei.value)
    assert f"cannot reach endpoint {endpoint}" in msg and "'a/f'" in msg


def test_credentials_in_url_are_refused(s3_url):
    from mlops_jupyter.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as ei:
        open_artifacts("s3://key:wrong-Secret-1@mlops-test/p")
    assert "wrong-Secret" not in str(ei.value)


def test_corrupted_object_is_refused(s3_url, tmp_path):
    store = open_artifacts(s3_url)
    data = b"the real weights " * 5000
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    digest, _ = store.put_blob(src)
    # the bytes change on the server (a bad disk, a hand edit): same key, other content
    evil = tmp_path / "evil.bin"
    evil.write_bytes(data[:-1] + b"X")
    store.put_file(blob_key(digest), evil)

    with pytest.raises(ArtifactIntegrityError, match=digest[:12]):
        store.blob_file(digest)
    with pytest.raises(ArtifactIntegrityError):
        store.get_blob(digest, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    cache = tmp_path / "mlops-cache"
    kept = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert not any(
        hashlib.sha256(p.read_bytes()).hexdigest() != digest
        for p in kept
        if p.parent.parent.name == "blobs"
    ), kept
    assert not any(p.parent.parent.name == "blobs" for p in kept)

    # put right again, the blob is served
    store.put_file(blob_key(digest), src)
    assert store.blob_file(digest).read_bytes() == data


@pytest.mark.parametrize("size", [1000, 12 * MB], ids=["single-put", "multipart"])
def test_file_changed_while_stored(s3_url, tmp_path, monkeypatch, size):
    """The upload hashes what it sends: a file that changed after it was hashed is refused
    before the upload completes, and nothing is stored under either digest."""
    from mlops_jupyter.artifacts import objectstore

    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS_PART_MB", "5")
    store = open_artifacts(s3_url)
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(size))
    stale = hashlib.sha256(b"what the file held when it was hashed").hexdigest()
    # the file is hashed, then changes before its bytes go out
    monkeypatch.setattr(objectstore, "sha256_file", lambda p: (stale, size))
    with pytest.raises(ArtifactIntegrityError, match="changed while it was being stored"):
        store.put_blob(src)
    assert list(store.list()) == []


def test_azure_missing_container_and_wrong_key(az_url, monkeypatch):
    store = open_artifacts("az://no-such-container/p")
    with pytest.raises(ArtifactStoreError, match="container 'no-such-container' does not exist"):
        store.head("a")
    with pytest.raises(ArtifactStoreError, match="container 'no-such-container' does not exist"):
        store.put_stream("a", [b"x"])
    forget()
    wrong = "d3JvbmctU2VjcmV0LWF6dXJlLWtleS0xMjM0NTY3ODkwMTIzNDU2Nzg5MA=="  # "wrong-Secret-..."
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", wrong)
    with pytest.raises(ArtifactStoreError) as ei:
        open_artifacts(az_url).put_stream("a", [b"x"])
    msg = _secret_free(ei.value)
    assert wrong not in msg and "access denied to az://mlops-test/" in msg
    assert "AZURE_STORAGE_ACCOUNT_KEY" in msg


def _child_head(url: str, q) -> None:
    from mlops_jupyter.artifacts import open_artifacts as reopen

    try:
        q.put(("ok", reopen(url).exists("a")))
    except ArtifactStoreError as e:
        q.put(("error", str(e)))


def test_forked_child_gets_a_clear_error(s3_url):
    """obstore is not fork-safe: a child forked after the parent used object storage gets a
    clear error instead of hanging; a spawned child works."""
    import multiprocessing as mp

    open_artifacts(s3_url).put_stream("a", [b"x"])
    for method, expect in (("fork", "error"), ("spawn", "ok")):
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=_child_head, args=(s3_url, q))
        p.start()
        got = q.get(timeout=60)
        p.join(30)
        assert got[0] == expect, got
        if expect == "error":
            assert "fork" in got[1] and "spawn" in got[1]
        else:
            assert got[1] is True
