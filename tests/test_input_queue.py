"""The writer's queue is compact and bounded: past MLOPS_JUPYTER_MAX_QUEUE points it spills
to a spool file (one warning) instead of growing, blocking or dropping, and the spooled
points are written, in order, once the store accepts writes again (locked, full)."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
import warnings

import pytest

import mlops_jupyter as mj
from mlops_jupyter.tracking.writer import writer_for

BOUND = 1000


@pytest.fixture
def small_queue(monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_MAX_QUEUE", str(BOUND))
    monkeypatch.setenv("MLOPS_JUPYTER_FLUSH_INTERVAL", "0.05")


def _held_in_memory(w) -> int:
    return len(w.q.stage) + w.q.mem_points


def test_locked_store_spills_past_the_bound_and_writes_everything_later(
    small_queue, store_path, monkeypatch
):
    n = 30_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mj.start_run() as run:
            w = writer_for(run.store)
            mj.log_metric("x", -1.0, step=0)
            mj.flush()
            other = sqlite3.connect(store_path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # another process holds the store
            peak = 0
            t0 = time.perf_counter()
            for i in range(1, n + 1):
                mj.log(step=i, x=float(i), y=float(-i))
                peak = max(peak, _held_in_memory(w))
            elapsed = time.perf_counter() - t0
            time.sleep(0.3)  # the writer is stuck on the lock meanwhile
            assert w.pending() == 2 * n
            assert w.q.spooled_points > 0
            other.execute("COMMIT")
            other.close()
    # bounded: a stage of tuples plus the bound and one more stage of packed points
    assert peak <= BOUND + 2 * w.q.stage_max
    assert elapsed < 5.0  # nothing blocked on the lock (busy timeout is 5 s, retries 120 s)
    spills = [w for w in caught if "spool" in str(w.message)]
    assert len(spills) == 1, [str(x.message) for x in caught]
    m = mj.metrics(run.id, "x")
    assert m["step"].to_list() == list(range(n + 1))
    assert m["value"].to_list() == [-1.0] + [float(i) for i in range(1, n + 1)]
    assert mj.metrics(run.id, "y")["value"].to_list() == [float(-i) for i in range(1, n + 1)]
    assert w.pending() == 0 and w.q.spooled_points == 0
    assert w.q.spool.f is None  # the spool file is closed (and gone) once written


def test_a_stuck_writer_leaves_packing_to_the_packer_not_the_loop(store_path, monkeypatch):
    """While the writer waits on a locked store, the logging thread never packs the stage
    itself (packing a full stage takes ~0.1 s on a loaded machine): the packer does."""
    from mlops_jupyter.tracking import buffer

    packed_by: list[str] = []
    real = buffer.Queue._pack_slice

    def pack_slice(self, k):
        if self.stage:
            packed_by.append(threading.current_thread().name)
        return real(self, k)

    monkeypatch.setattr(buffer.Queue, "_pack_slice", pack_slice)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mj.start_run() as run:
            w = writer_for(run.store)
            mj.log_metric("x", 0.0, step=0)
            mj.flush()
            packed_by.clear()
            other = sqlite3.connect(store_path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            n = 4 * w.q.stage_max
            for i in range(1, n + 1):
                mj.log_metric("x", float(i), step=i)
                if i % 2000 == 0:
                    time.sleep(0.002)  # a training loop does some work between logs
            in_loop = packed_by.count(threading.main_thread().name)
            other.execute("COMMIT")
            other.close()
    assert "mlops-packer" in packed_by
    assert in_loop == 0, packed_by
    assert mj.metrics(run.id, "x")["step"].to_list() == list(range(n + 1))


def test_full_disk_keeps_points_in_the_spool_until_space_returns(small_queue, monkeypatch):
    """SQLite's max_page_count makes the store 'full' (SQLITE_FULL) for the connections
    that write to it; the writer must keep (spool) the points and write them later."""
    monkeypatch.setenv("MLOPS_JUPYTER_HEARTBEAT", "0.05")  # the writer thread writes at once
    with mj.start_run() as run:
        w = writer_for(run.store)
        mj.log_metric("auto", 0.0)
        mj.flush()
        deadline = time.monotonic() + 10
        while len(run.store._all) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # wait for the writer thread's own connection
        conns = list(run.store._all)
        assert len(conns) >= 2
        for c in conns:
            c.execute("PRAGMA max_page_count=1")  # clamps to the current size: no growth
        for i in range(1, 20_001):
            mj.log_metric("auto", float(i))  # automatic steps across the spool boundary
        with pytest.raises(Exception, match="full|rollback"):
            mj.flush()
        assert w.pending() == 20_000 and w.q.spooled_points > 0
        assert _held_in_memory(w) <= BOUND + 2 * w.q.stage_max
        for c in conns:
            c.execute("PRAGMA max_page_count=1073741823")
        mj.flush()
        assert w.pending() == 0
        mj.log_metric("auto", 20_001.0)
    m = mj.metrics(run.id, "auto")
    assert m["step"].to_list() == list(range(20_002))
    assert m["value"].to_list() == [float(i) for i in range(20_002)]


def test_logging_threads_and_a_small_bound_lose_nothing(small_queue):
    with mj.start_run() as run:

        def work(k):
            for i in range(5000):
                mj.log_metric(f"t{k}", float(i), step=i)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    m = mj.metrics(run.id)
    assert m.height == 15_000
    for k in range(3):
        assert mj.metrics(run.id, f"t{k}")["step"].to_list() == list(range(5000))


def test_queue_holds_typed_arrays_not_tuples(small_queue):
    """Past the soft limit the points are packed: 24 bytes a point in numpy arrays."""
    with mj.start_run() as run:
        w = writer_for(run.store)
        with w._lock:  # keep the writer from draining while we look
            for i in range(3 * BOUND):
                mj.log_metric("k", float(i))
            assert len(w.q.stage) <= w.q.stage_max
            blocks = list(w.q.blocks)
            assert blocks
            for b in blocks:
                for _rid, key, steps, ts, vals in b.groups or w.q.spool.get(b):
                    assert key == "k"
                    assert steps.dtype.itemsize + ts.dtype.itemsize + vals.dtype.itemsize == 24
    assert mj.metrics(run.id, "k")["value"].to_list() == [float(i) for i in range(3 * BOUND)]


def test_a_series_that_fails_to_write_is_dropped_without_duplicating_the_others(monkeypatch):
    """If writing one series raises something other than a store error, that series is
    dropped (one warning) and the others of the same flush are written exactly once."""
    from mlops_jupyter.store import metrics as mstore

    real = mstore.append_chunk

    def picky(c, run_id, key_id, seq, steps, ts, values):
        if values[0] == 666.0:  # stands in for a point the encoder cannot handle
            raise ValueError("cannot encode this point")
        return real(c, run_id, key_id, seq, steps, ts, values)

    monkeypatch.setattr(mstore, "append_chunk", picky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mj.start_run() as run:
            w = writer_for(run.store)
            with w._lock:  # one flush holds all three series
                mj.log(a=1.0, bad=666.0, c=3.0)
                mj.log(a=2.0, bad=666.0, c=4.0)
            mj.flush()
            mj.log(a=5.0, bad=7.0, c=6.0)
    assert sum("dropped" in str(x.message) for x in caught) == 1
    assert w.dropped == 2
    m = mj.metrics(run.id).sort("key", "step")
    assert m.select("key", "step", "value").rows() == [
        ("a", 0, 1.0),
        ("a", 1, 2.0),
        ("a", 2, 5.0),
        ("bad", 0, 7.0),
        ("c", 0, 3.0),
        ("c", 1, 4.0),
        ("c", 2, 6.0),
    ]


def test_unusable_spool_folder_keeps_points_in_memory(
    small_queue, store_path, tmp_path, monkeypatch
):
    """Last resort: when the spool file cannot be created either, points stay in memory
    (one warning) rather than being dropped."""
    monkeypatch.setenv("MLOPS_JUPYTER_SPOOL_DIR", str(tmp_path / "missing" / "folder"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mj.start_run() as run:
            w = writer_for(run.store)
            mj.flush()
            other = sqlite3.connect(store_path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            for i in range(5000):
                mj.log_metric("x", float(i))
            w.q.compact()
            assert w.q.spooled_points == 0 and w.pending() == 5000
            other.execute("COMMIT")
            other.close()
    assert sum("cannot spill" in str(x.message) for x in caught) == 1
    assert mj.metrics(run.id, "x")["value"].to_list() == [float(i) for i in range(5000)]


class _StalledDisk:
    """A real spool file whose writes hang until `release` is set (or `STALL_S` pass):
    a disk that stalls under the spill."""

    STALL_S = 5.0

    def __init__(self, f) -> None:
        self.f = f
        self.entered = threading.Event()
        self.release = threading.Event()
        self.timed_out = False

    def write(self, data) -> int:
        self.entered.set()
        if not self.release.wait(self.STALL_S):
            self.timed_out = True
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_log_calls_go_on_while_a_spill_hangs_on_the_disk(store_path, tmp_path, monkeypatch):
    """The packer (or the writer) stuck inside a spill's file write holds nothing a log
    call needs: with the stage full, the loop packs a slice itself and goes on; every
    point is written, in order, once the disk and the store are back."""
    monkeypatch.setenv("MLOPS_JUPYTER_MAX_QUEUE", "200000")
    disk = _StalledDisk(tempfile.TemporaryFile(dir=tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mj.start_run() as run:
            w = writer_for(run.store)
            q = w.q
            mj.log_metric("x", 0.0, step=0)
            mj.flush()
            other = sqlite3.connect(store_path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # the store is away: points pile up
            q.spool.f = disk
            i = 0
            try:
                # past the bound: a spill starts and hangs in its first write
                while i < q.max_points + q.max_points // 8:
                    i += 1
                    mj.log_metric("x", float(i), step=i)
                assert disk.entered.wait(10), "no spill started"
                # then more than a whole stage while it hangs (short of the memory bound)
                worst = 0.0
                for _ in range(q.stage_max + q.soft):
                    i += 1
                    t0 = time.perf_counter()
                    mj.log_metric("x", float(i), step=i)
                    worst = max(worst, time.perf_counter() - t0)
                still_stalled = not disk.release.is_set() and not disk.timed_out
            finally:
                disk.release.set()
                other.execute("COMMIT")
                other.close()
    # a call that waited for the stalled write would take seconds
    assert worst < 1.0, f"a log call took {worst:.2f} s while the spill hung"
    assert still_stalled  # ... and every call above returned while it hung
    assert q.spilled and not disk.timed_out
    m = mj.metrics(run.id, "x")
    assert m["step"].to_list() == list(range(i + 1))
    assert m["value"].to_list() == [float(k) for k in range(i + 1)]
