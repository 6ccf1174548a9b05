"""One contract suite for every artifact store (mlops_jupyter/artifacts/base.py): a local
folder, object storage on a real S3-compatible server (SeaweedFS on 127.0.0.1, started by
the session's `s3_server` fixture) and Azure Blob on Azurite (Microsoft's local server,
`az_server`). Every test runs on all three."""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_jupyter.artifacts import LocalArtifactStore, open_artifacts
from mlops_jupyter.errors import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    InvalidInputError,
)

MB = 1 << 20


@pytest.fixture(params=["local", "s3", "az"])
def store(request, tmp_path, monkeypatch):
    """An empty artifact store of each kind, with its own read-through cache."""
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(tmp_path / "cache"))
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    url = request.getfixturevalue(f"{request.param}_url")
    # 5 MB parts (the S3 minimum) so a 20-30 MB object really goes multipart
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS_PART_MB", "5")
    return open_artifacts(url)


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _keys(store, prefix: str = "") -> list[str]:
    return sorted(i.key for i in store.list(prefix))


def _data(n: int, seed: int = 0) -> bytes:
    """`n` pseudo-random bytes (incompressible, cheap to make)."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def test_put_get_head_list_delete(store, tmp_path):
    src = _file(tmp_path / "src.txt", b"hello artifacts")
    assert store.put_file("runs/r1/a.txt", src) is True
    assert store.put_stream("runs/r1/sub/b.bin", iter([b"ab", b"", b"cd"])) is True
    assert store.put_stream("other/c", [b"x"]) is True

    info = store.head("runs/r1/a.txt")
    assert info is not None and info.key == "runs/r1/a.txt" and info.size == 15
    assert info.modified > 0
    assert store.exists("runs/r1/sub/b.bin") and not store.exists("runs/r1/nope")
    assert store.head("runs/r1") is None  # a "folder" is not an object

    assert _keys(store, "runs/r1") == ["runs/r1/a.txt", "runs/r1/sub/b.bin"]
    assert _keys(store, "runs") == ["runs/r1/a.txt", "runs/r1/sub/b.bin"]
    assert _keys(store, "run") == []  # prefixes are whole segments
    assert _keys(store) == ["other/c", "runs/r1/a.txt", "runs/r1/sub/b.bin"]
    assert [i.size for i in store.list("runs/r1/sub")] == [4]
    store.put_stream("dots/.hidden-looking", [b"."])  # a dot file is an object like any other
    assert _keys(store, "dots") == ["dots/.hidden-looking"]
    store.delete("dots/.hidden-looking")

    dest = tmp_path / "out" / "b.bin"
    dest.parent.mkdir()
    assert store.get_file("runs/r1/sub/b.bin", dest) == 4
    assert dest.read_bytes() == b"abcd"
    assert b"".join(store.iter_bytes("runs/r1/a.txt")) == b"hello artifacts"
    assert os.listdir(dest.parent) == ["b.bin"]  # no temp file left

    store.delete("runs/r1/a.txt")
    store.delete("runs/r1/a.txt")  # already gone: fine
    assert store.head("runs/r1/a.txt") is None
    assert _keys(store, "runs") == ["runs/r1/sub/b.bin"]


def test_missing_keys(store, tmp_path):
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "d"
    with pytest.raises(ArtifactNotFoundError, match="nope"):
        store.get_file("x/nope", dest)
    assert os.listdir(tmp_path / "out") == []  # no temp file left either
    with pytest.raises(ArtifactNotFoundError):
        b"".join(store.iter_bytes("x/nope"))
    assert store.head("x/nope") is None
    assert _keys(store, "x") == []


def test_overwrite_and_put_if_absent(store, tmp_path):
    a = _file(tmp_path / "a", b"first")
    b = _file(tmp_path / "b", b"second version")
    assert store.put_file("k/obj", a, if_absent=True) is True
    assert store.put_file("k/obj", b, if_absent=True) is False  # left as it was
    assert b"".join(store.iter_bytes("k/obj")) == b"first"
    assert store.put_stream("k/obj", [b"third"], if_absent=True) is False
    assert b"".join(store.iter_bytes("k/obj")) == b"first"
    assert store.put_file("k/obj", b) is True  # a plain put replaces
    assert b"".join(store.iter_bytes("k/obj")) == b"second version"
    assert store.head("k/obj").size == 14


class _Broken(Exception):
    pass


def test_failed_put_leaves_the_old_object(store):
    """Atomic puts: a writer that fails mid-way leaves the previous object whole."""
    store.put_stream("k/atomic", [b"old content"])

    def broken():
        yield _data(3 * MB)
        yield _data(4 * MB, 1)  # past the 5 MB part size: a multipart upload on S3
        raise _Broken("source went away")

    with pytest.raises(_Broken, match="source went away"):  # the caller's error, as raised
        store.put_stream("k/atomic", broken())
    assert b"".join(store.iter_bytes("k/atomic")) == b"old content"
    with pytest.raises(_Broken, match="source went away"):
        store.put_stream("k/new", broken())
    assert store.head("k/new") is None and _keys(store, "k") == ["k/atomic"]


def test_concurrent_reader_sees_whole_objects(store, tmp_path):
    old, new = _data(6 * MB, 1), _data(7 * MB, 2)
    store.put_stream("k/swap", [old])
    src = _file(tmp_path / "new", new)
    seen: set[int] = set()
    done = threading.Event()

    def reader():
        while not done.is_set():
            got = b"".join(store.iter_bytes("k/swap"))
            assert got in (old, new)
            seen.add(len(got))

    t = threading.Thread(target=reader)
    t.start()
    try:
        store.put_file("k/swap", src)
    finally:
        done.set()
        t.join()
    assert b"".join(store.iter_bytes("k/swap")) == new


HOSTILE = ["../x", "/abs", "a//b", "a/./b", "a/../../b", "a\0b", "a\\b", "", ".", "..", "a/", 7]


@pytest.mark.parametrize("key", HOSTILE, ids=repr)
def test_hostile_keys_are_refused(store, tmp_path, key):
    src = _file(tmp_path / "f", b"x")
    calls = [
        lambda: store.put_file(key, src),
        lambda: store.put_stream(key, [b"x"]),
        lambda: store.get_file(key, tmp_path / "out"),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.presign(key),
        lambda: store.iter_bytes(key),
        lambda: store.put_tree(key, tmp_path),
        lambda: store.get_tree(key, tmp_path / "t"),
        lambda: store.delete_tree(key),
    ]
    if key != "":
        calls.append(lambda: list(store.list(key)))
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    assert _keys(store) == []
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x").exists()


def test_presign(store, tmp_path):
    store.put_stream("p/file.bin", [b"signed bytes"])
    url = store.presign("p/file.bin", expires_s=60)
    if isinstance(store, LocalArtifactStore):
        assert url is None
        return
    assert url and url.startswith("http://127.0.0.1:")
    for secret in ("AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_ACCOUNT_KEY"):
        assert os.environ.get(secret, "never") not in url
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"signed bytes"
    with pytest.raises(InvalidInputError):
        store.presign("p/file.bin", expires_s=0)


def test_blobs(store, tmp_path):
    data = b"model weights " * 1000
    src = _file(tmp_path / "w.bin", data)
    digest, size = store.put_blob(src)
    assert digest == hashlib.sha256(data).hexdigest() and size == len(data)
    assert store.put_blob(src) == (digest, size)  # same content: same blob
    copy = _file(tmp_path / "copy.bin", data)
    assert store.put_blob(copy) == (digest, size)
    assert len(_keys(store)) == 1

    assert store.blob_file(digest).read_bytes() == data
    dest = tmp_path / "got.bin"
    assert store.get_blob(digest, dest) == size and dest.read_bytes() == data

    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(ArtifactNotFoundError):
        store.blob_file(missing)
    with pytest.raises(InvalidInputError):
        store.blob_file("not-a-digest")


def test_trees(store, tmp_path):
    folder = tmp_path / "model"
    _file(folder / "config.json", b"{}")
    _file(folder / "weights" / "part-0.bin", _data(1000))
    _file(folder / "weights" / "part-1.bin", _data(10, 3))
    names = store.put_tree("models/clf/v1", folder)
    assert names == ["config.json", "weights/part-0.bin", "weights/part-1.bin"]

    out = tmp_path / "out"
    assert store.get_tree("models/clf/v1", out) == names
    for n in names:
        assert (out / n).read_bytes() == (folder / n).read_bytes()

    local = store.tree_local("models/clf/v1")
    assert (local / "weights" / "part-0.bin").read_bytes() == _data(1000)
    # stored objects changed: the local copy follows
    _file(folder / "config.json", b'{"changed": true}')
    store.put_tree("models/clf/v1", folder)
    local = store.tree_local("models/clf/v1")
    assert (local / "config.json").read_bytes() == b'{"changed": true}'

    assert store.delete_tree("models/clf/v1") == 3
    assert _keys(store, "models") == []
    with pytest.raises(ArtifactNotFoundError):
        store.get_tree("models/clf/v1", tmp_path / "again")
    with pytest.raises(ArtifactNotFoundError):
        store.tree_local("models/clf/v1")


def test_multipart_sized_object(store, tmp_path):
    data = _data(23 * MB, 5)
    src = _file(tmp_path / "big.bin", data)
    assert store.put_file("big/model.bin", src) is True
    assert store.head("big/model.bin").size == len(data)
    assert store.put_file("big/model.bin", src, if_absent=True) is False

    dest = tmp_path / "big.out"
    assert store.get_file("big/model.bin", dest) == len(data)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    chunks = list(store.iter_bytes("big/model.bin"))
    assert b"".join(chunks) == data

    parts = [data[i : i + MB] for i in range(0, len(data), MB)]
    assert store.put_stream("big/streamed.bin", iter(parts)) is True
    assert store.head("big/streamed.bin").size == len(data)
    digest, size = store.put_blob(src)
    assert size == len(data) and store.blob_file(digest).read_bytes() == data
    if not isinstance(store, LocalArtifactStore):
        assert store.part_size == 5 * MB
        assert _markers(store) == []  # every multipart upload cleaned its marker up


def _markers(store) -> list[str]:
    import obstore

    from mlops_jupyter.artifacts.objectstore import MARKERS

    return [m["path"] for b in obstore.list(store._client(), MARKERS) for m in b]


def test_read_through_cache_limit(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE_MB", "1")
    blobs = []
    for i in range(3):
        data = _data(600 * 1024, 10 + i)
        blobs.append((store.put_blob(_file(tmp_path / f"b{i}", data))[0], data))
    for digest, data in blobs:
        assert store.blob_file(digest).read_bytes() == data
    cached = [p for p in Path(os.environ["MLOPS_JUPYTER_CACHE"]).rglob("*") if p.is_file()]
    cached = [p for p in cached if p.parent.parent.name == "blobs"]
    if isinstance(store, LocalArtifactStore):
        assert cached == []  # a local store hands out its own files
        return
    # 3 x 600 KB under a 1 MB limit: only the most recently used blob stays
    assert [p.parent.name + p.name for p in cached] == [blobs[-1][0]]
    assert store.blob_file(blobs[0][0]).read_bytes() == blobs[0][1]  # fetched again


def test_relogging_unchanged_file_uploads_nothing(store, tmp_path, monkeypatch):
    data = _data(2 * MB, 7)
    src = _file(tmp_path / "w.bin", data)
    digest, _ = store.put_blob(src)
    before = store.head(next(iter(_keys(store))))

    uploads: list[str] = []
    for name in ("put_file", "put_stream", "_put_blob_new"):
        real = getattr(store, name)

        def counting(*a, _real=real, _name=name, **k):
            uploads.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(store, name, counting)
    assert store.put_blob(src)[0] == digest  # remembered digest: one existence check
    assert uploads == []
    # the same bytes in another file: hashed again, found stored, nothing sent
    other = _file(tmp_path / "again.bin", data)
    assert store.put_blob(other)[0] == digest
    assert "put_file" not in uploads and "put_stream" not in uploads
    after = store.head(before.key)
    assert after.modified == before.modified and after.size == before.size


def test_location_holds_no_secret(store):
    assert "Secret" not in store.location and "Secret" not in repr(store)
    if not isinstance(store, LocalArtifactStore):
        assert store.location.startswith(f"{store.kind}://mlops-test/t-")
        assert os.environ.get("AZURE_STORAGE_ACCOUNT_KEY", "never") not in repr(store)


_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
_key = st.lists(_segment, min_size=1, max_size=4).map("/".join)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=_key, content=st.binary(max_size=3000), raw=st.text(max_size=20))
def test_fuzz_keys_and_contents(store, key, content, raw):
    key = "fuzz/" + key
    try:
        store.put_stream(key, [content])
    except InvalidInputError:
        return  # refused up front (too long...), and nothing written
    assert b"".join(store.iter_bytes(key)) == content
    assert store.head(key).size == len(content)
    assert key in _keys(store, "fuzz")
    store.delete(key)
    assert store.head(key) is None
    # any text at all: a safe key or a clear refusal, never an error of another kind
    try:
        store.head(raw)
    except InvalidInputError:
        pass
    except ArtifactStoreError as e:  # pragma: no cover - would be a contract bug
        pytest.fail(f"{raw!r}: {e}")
