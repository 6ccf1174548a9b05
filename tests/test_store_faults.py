"""Store faults on real SQLite files: disk full, a failing COMMIT, damaged pages and a
store this process may only read. Every SQLite error must leave as a StoreError that names
the store and keeps the cause, and no transaction may stay open afterwards."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import MalformedStoreError, ReadOnlyStoreError, StoreError
from mlops_jupyter.store import runs as rstore
from mlops_jupyter.store.sqlite import SqliteStore as Store

ROOT = Path(__file__).resolve().parent.parent


def _store_with_runs(path: Path, n: int = 30) -> list[int]:
    st = Store(path)
    rids = []
    for i in range(n):
        rid, _, _ = rstore.create_run(st, f"run {i}", "faults", params={"i": i, "pad": "x" * 200})
        rstore.finish_run(st, rid, "finished")
        rids.append(rid)
    st.close()  # the last connection checkpoints the WAL into the file
    return rids


def test_disk_full_reports_the_real_error_and_recovers(tmp_path):
    st = Store(tmp_path / "full.db")
    rid, _, _ = rstore.create_run(st, "r", "e")
    c = st.conn()
    # a real SQLITE_FULL: the database may not grow past its current size
    c.execute(f"PRAGMA max_page_count={c.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreError) as exc:
        for _ in range(200):
            rstore.add_event(st, rid, "note", "x" * 3000)
    msg = str(exc.value)
    assert "full" in msg and str(st.path) in msg, msg
    assert "cannot rollback" not in msg
    assert isinstance(exc.value.__cause__, sqlite3.Error)
    assert not c.in_transaction
    c.execute("PRAGMA max_page_count=1073741823")  # space freed: writing works again
    rstore.add_event(st, rid, "note", "after")
    assert st.read("SELECT count(*) FROM run_events WHERE message='after'") == [(1,)]


def test_failed_commit_leaves_no_open_transaction(tmp_path):
    st = Store(tmp_path / "commit.db")
    c = st.conn()
    c.execute("PRAGMA foreign_keys=ON")
    # a deferred foreign key violation makes the COMMIT itself fail
    with pytest.raises(StoreError, match="FOREIGN KEY") as exc:
        with st.write("add a run") as w:
            w.execute("PRAGMA defer_foreign_keys=ON")
            w.execute(
                "INSERT INTO runs(uid, experiment_id, status, start_time)"
                " VALUES('orphan', 999, 'running', 0)"
            )
    assert "cannot add a run" in str(exc.value) and str(st.path) in str(exc.value)
    assert isinstance(exc.value.__cause__, sqlite3.IntegrityError)
    assert not c.in_transaction
    c.execute("PRAGMA foreign_keys=OFF")
    rstore.create_run(st, "next", "e")  # the next write is not stuck in the failed one
    assert st.read("SELECT count(*) FROM runs WHERE uid='orphan'") == [(0,)]


def test_sql_errors_in_reads_are_store_errors(tmp_path):
    st = Store(tmp_path / "read.db")
    with pytest.raises(StoreError, match="no such table") as exc:
        st.read("SELECT * FROM nowhere")
    assert isinstance(exc.value.__cause__, sqlite3.OperationalError)


def _corrupt_table(path: Path, table: str) -> None:
    c = sqlite3.connect(path)
    (root,) = c.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    size = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xa5" * size)


def test_malformed_store_is_reported_and_never_written_again(tmp_path):
    store_path = tmp_path / "bad" / "store.db"
    _store_with_runs(store_path)
    _corrupt_table(store_path, "runs")
    before = store_path.read_bytes()
    mj.set_store(store_path)
    with pytest.raises(MalformedStoreError) as exc:
        mj.runs()
    msg = str(exc.value)
    assert str(store_path) in msg and "malformed" in msg and ".recover" in msg
    assert isinstance(exc.value.__cause__, sqlite3.DatabaseError)
    assert isinstance(exc.value, StoreError)
    # later writes are refused up front, even ones that touch other (intact) tables
    with pytest.raises(MalformedStoreError, match="writes are refused"):
        mj.start_run("more")
    st = mj.set_store(store_path)
    with pytest.raises(MalformedStoreError, match="found malformed earlier"):
        rstore.add_event(st, 1, "note", "x")
    st.close()
    assert store_path.read_bytes() == before


# ------------------------------------------------------------------------- read-only


_READER = """
import json, sys
import mlops_jupyter as mj
from mlops_jupyter.errors import ReadOnlyStoreError
dead = mj.get_run("dead")
out = {"runs": sorted(mj.runs()["status"].to_list()), "show": dead["status"]}
out["ended"] = dead["end_time"] is not None
try:
    mj.start_run("new")
except ReadOnlyStoreError as e:
    out["write"] = str(e)
print(json.dumps(out))
"""


def _drop_file_capabilities() -> None:
    # root ignores file modes through these capabilities; without them it is held to
    # the modes like any user (prctl PR_CAPBSET_DROP; the exec then loses them)
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_read_only(store: Path, script: str) -> dict:
    """Run `script` in a process that can read but not write `store` and its folder.

    As root, the folder and files are given to `nobody` (mode 755/644) and the process
    runs without the capabilities that let root ignore file modes; otherwise they are
    made read-only with chmod."""
    paths = [store.parent, *store.parent.iterdir()]
    env = dict(os.environ, MLOPS_JUPYTER_STORE=str(store), MLOPS_JUPYTER_TELEMETRY="0")
    env["PYTHONPATH"] = str(ROOT)
    preexec = None
    if os.geteuid() == 0:
        for p in paths:
            os.chown(p, 65534, 65534)
            p.chmod(0o755 if p.is_dir() else 0o644)
        preexec = _drop_file_capabilities
    else:
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=store.parent,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=preexec,
        )
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot run a process without write access here: {e}")
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("left_open", [False, True], ids=["closed-cleanly", "wal-left-behind"])
def test_read_only_store_with_a_dead_running_run_can_be_read(tmp_path, left_open):
    store = tmp_path / "ro" / "store.db"
    rids = _store_with_runs(store, 3)
    st = Store(store)
    rid, _, _ = rstore.create_run(st, "dead", "faults")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    with st.write() as c:  # the run's process is gone: reading would mark it crashed
        c.execute("UPDATE runs SET pid=? WHERE id=?", (int(dead.stdout), rid))
    if not left_open:
        st.close()  # no -wal/-shm files left: SQLite cannot open them in a read-only folder
    before = store.read_bytes()
    got = _run_read_only(store, _READER)
    # reconciled in memory: the dead run reads as crashed, yet nothing is written
    assert got["runs"] == ["crashed"] + ["finished"] * len(rids)
    assert got["show"] == "crashed" and got["ended"]
    assert "read-only" in got["write"] and str(store) in got["write"]
    assert store.read_bytes() == before
    st.close()


def test_read_only_error_names_the_store(tmp_path):
    st = Store(tmp_path / "ro.db")
    st.read_only = True  # as found by os.access or a SQLITE_READONLY error
    with pytest.raises(ReadOnlyStoreError, match="cannot record an event") as exc:
        with st.write("record an event"):
            pass
    assert str(st.path) in str(exc.value)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 512 KiB file system (tmpfs); needs root and mount, else the test skips."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    ok = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    )
    if ok.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {ok.stderr.decode(errors='replace')}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_file_system_is_a_store_error_and_writing_resumes(tiny_disk):
    st = Store(tiny_disk / "store.db")
    rid, _, _ = rstore.create_run(st, "r", "e")
    filler = tiny_disk / "filler"
    with open(filler, "wb") as f:  # leave only a little room
        free = shutil.disk_usage(tiny_disk).free
        f.write(b"\0" * max(0, free - 64 * 1024))
    with pytest.raises(StoreError) as exc:
        for _ in range(500):
            rstore.add_event(st, rid, "note", os.urandom(2000).hex())
    msg = str(exc.value)
    assert "full" in msg and str(st.path) in msg and "cannot rollback" not in msg, msg
    assert isinstance(exc.value.__cause__, sqlite3.Error)
    assert not st.conn().in_transaction
    filler.unlink()  # space freed: the same Store writes again
    rstore.add_event(st, rid, "note", "after")
    assert st.read("SELECT count(*) FROM run_events WHERE message='after'") == [(1,)]
    st.close()


@pytest.mark.parametrize("ref", ["\udcff", 2**64])
def test_reads_with_arguments_sqlite_cannot_bind_are_invalid_input(ref):
    from mlops_jupyter.errors import InvalidInputError

    mj.start_run("one").end()
    with pytest.raises(InvalidInputError, match="query argument"):
        mj.set_store(None).read("SELECT id FROM runs WHERE uid=?", (ref,))


def test_read_only_store_of_an_older_version_says_it_needs_an_upgrade(tmp_path):
    store = tmp_path / "old" / "store.db"
    _store_with_runs(store, 1)
    c = sqlite3.connect(store)
    c.execute(
        "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)"
    )
    c.commit()
    c.close()
    script = (
        "import json, mlops_jupyter as mj\n"
        "from mlops_jupyter.errors import ReadOnlyStoreError\n"
        "try:\n    mj.runs(); print(json.dumps({'error': None}))\n"
        "except ReadOnlyStoreError as e:\n    print(json.dumps({'error': str(e)}))\n"
    )
    got = _run_read_only(store, script)
    assert got["error"] and "read-only" in got["error"] and "older" in got["error"]
