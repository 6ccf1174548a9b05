"""The background sender of a remote client: the tracking writer's queue (log calls append
to it exactly as with a local store) drained into gzip-compressed POST /api/v1/ingest
requests, spooled to a local file while the server cannot be reached.

Chunk sequence numbers: the server applies each (run, key, seq) once. A second process
logging to the same run, or a resumed run, must not reuse seqs another process already
sent (its points would be skipped as duplicates), so each process numbers the chunks of a
series from a random 42-bit base shifted into the high bits (base << 20, counter in the low
20 bits; a new random base after 2**20 chunks). Two processes collide with a probability
of about 2**-42 per series. The seq is only an idempotency name: points are ordered by
their steps, not by seq."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import warnings
from typing import Any

import numpy as np

from .. import config
from ..tracking.buffer import Group
from ..tracking.writer import IDLE_EXIT_S, WRITE_BATCH, Writer, _writers, _writers_lock
from .client import Client, ServerRefused, ServerUnavailable
from .spool import SpoolFile, leftovers, spool_root

MAX_CHUNKS = 5_000  # per request (the server takes 10,000)
# points per request and per chunk: about 2.2 MB and 0.5 MB of JSON (base64 arrays), far
# under the server's default 16 MiB body limit; a smaller limit (413) splits the request
MAX_POINTS = 65_536
CHUNK_POINTS = 16_384
SEQ_BITS = 20
BACKOFF_MAX_S = 5.0
BEAT_S = 60.0


def _new_base() -> int:
    import secrets

    return secrets.randbits(42) << SEQ_BITS


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode()


def _segments(steps: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, automatic) runs of a series' steps (-1 = next automatic step)."""
    auto = steps < 0
    if auto.all() or not auto.any():
        return [(0, len(steps), bool(auto[0]) if len(steps) else True)]
    cuts = np.flatnonzero(np.diff(auto.astype(np.int8))) + 1
    bounds = [0, *cuts.tolist(), len(steps)]
    return [(a, b, bool(auto[a])) for a, b in zip(bounds, bounds[1:])]


def _halves(body: bytes) -> list[bytes]:
    """A request body split in two by its chunks (for a server with a smaller body limit);
    [] when it holds one chunk or less. The chunks keep their seqs."""
    runs = json.loads(gzip.decompress(body))["runs"]
    flat = [(i, c) for i, r in enumerate(runs) for c in r.get("chunks", [])]
    if len(flat) < 2:
        return []
    mid = len(flat) // 2
    out = []
    for part, extra in ((flat[:mid], False), (flat[mid:], True)):
        rs: dict[int, dict] = {}
        for i, c in part:
            rs.setdefault(i, {"id": runs[i]["id"], "chunks": []})["chunks"].append(c)
        if extra:  # params/tags/ends travel with the second half (after the points)
            for i, r in enumerate(runs):
                meta = {k: v for k, v in r.items() if k != "chunks"}
                rs.setdefault(i, {"chunks": []}).update(meta)
        out.append(RemoteWriter._encode([rs[i] for i in sorted(rs)]))
    return out


class RemoteWriter(Writer):
    """Writer of one tracking server: same queue, HTTP instead of SQL."""

    def __init__(self, store: Any) -> None:
        self.client = Client(store.url)
        self._uids: dict[int, str] = {}
        self._next_rid = 1
        self._pkv: dict[int, dict[str, dict[str, Any]]] = {}
        self._seq: dict[tuple[int, str], list[int]] = {}
        self._root = spool_root(store.url)
        self._spool: SpoolFile | None = None
        self._orphans = True  # leftover spools of dead processes not replayed yet
        self._retry_at = 0.0
        self._backoff = 0.2
        self._refused_warned = False
        self._auth_warned = False
        self._auth_refused = False  # the last kept request was refused for its token
        self._pkv_lock = threading.Lock()
        self._last_beat = time.monotonic()
        self.max_points = MAX_POINTS  # per request; halved after each 413
        super().__init__(store)

    # -- runs and their params/tags ------------------------------------------------------
    def register(self, uid: str) -> int:
        """A local id for run `uid` (what log calls put in the queue)."""
        with self._pkv_lock:
            rid = self._next_rid
            self._next_rid += 1
            self._uids[rid] = uid
        return rid

    def add_kv(self, rid: int, table: str, items: dict[str, Any]) -> None:
        """Params, tags or other fields of the run's ingest entry (notebook capture records),
        merged and sent with the next request (before its points)."""
        with self._pkv_lock:
            self._pkv.setdefault(rid, {}).setdefault(table, {}).update(items)
        self._ensure_thread()  # the thread may have gone idle (a cell recorded after the end)
        self._wake.set()

    def spool_path(self) -> str | None:
        return str(self._spool.path) if self._spool is not None else None

    # -- the loop ----------------------------------------------------------------------
    def _busy(self) -> bool:
        return bool(
            self._runs
            or len(self.q)
            or self._closing
            or self._ends
            or self._pkv
            or self._orphans
            or (self._spool is not None and self._spool.pending())
        )

    def _loop(self) -> None:
        idle = 0.0
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._busy():
                idle += self.interval
                if idle >= IDLE_EXIT_S:
                    with self._thread_lock:
                        if not self._busy():
                            self._thread = None
                            return
                continue
            idle = 0.0
            try:
                self.flush()
            except Exception as e:  # never let the thread die: warn once, keep the points
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"mlops-jupyter: could not send metrics yet ({e}); they are kept "
                        "and retried",
                        RuntimeWarning,
                        stacklevel=1,
                    )

    def set_kv_later(self, rid: int, table: str, items: dict) -> None:
        """Params or tags (already checked), sent with the next request."""
        self.add_kv(rid, table, items)

    def end_run(self, rid: int, status: str, wait: bool = True) -> None:
        """Send a run's last points and its end (spooled when the server is away);
        `wait=False` leaves that to the background thread."""
        self._ends[rid] = (status, time.time())
        if not wait:
            self._ensure_thread()
            self._wake.set()
            return
        self.flush()

    # -- building and delivering requests ----------------------------------------------
    def _chunks(self, groups: list[Group]) -> dict[int, list[tuple[dict, int]]]:
        """Chunk objects (with their point counts) of each run, seqs assigned."""
        out: dict[int, list[tuple[dict, int]]] = {}
        for rid, key, steps, ts, vals in groups:
            for a0, b0, auto in _segments(np.asarray(steps)):
                step = min(CHUNK_POINTS, self.max_points)
                for a in range(a0, b0, step):
                    b = min(b0, a + step)
                    s = self._seq.get((rid, key))
                    if s is None or s[1] >= 1 << SEQ_BITS:
                        s = self._seq[(rid, key)] = [_new_base(), 0]
                    c = {
                        "key": key,
                        "seq": s[0] + s[1],
                        "values_b64": _b64(vals[a:b], "<f8"),
                        "timestamps_b64": _b64(ts[a:b], "<f8"),
                    }
                    s[1] += 1
                    if not auto:
                        c["steps_b64"] = _b64(steps[a:b], "<i8")
                    out.setdefault(rid, []).append((c, b - a))
        return out

    def _bodies(self, groups: list[Group], last: bool) -> list[bytes]:
        """Request bodies (gzip JSON) for these points, queued params/tags and, when `last`,
        queued run ends; each body within MAX_CHUNKS chunks and `max_points` points."""
        chunks = self._chunks(groups)
        with self._pkv_lock:
            kv, self._pkv = self._pkv, {}
        ends: dict[int, tuple[str, float]] = {}
        if last:
            ends, self._ends = dict(self._ends), {}
        bodies: list[bytes] = []
        runs: list[dict] = []
        n_chunks = n_points = 0
        for rid in dict.fromkeys([*kv, *chunks, *ends]):
            uid = self._uids.get(rid)
            if uid is None:
                continue
            r: dict[str, Any] = {"id": uid, "chunks": [], **kv.get(rid, {})}
            runs.append(r)
            for c, n in chunks.get(rid, []):
                if n_chunks >= MAX_CHUNKS or (n_points and n_points + n > self.max_points):
                    bodies.append(self._encode(runs))
                    r = {"id": uid, "chunks": []}
                    runs, n_chunks, n_points = [r], 0, 0
                r["chunks"].append(c)
                n_chunks += 1
                n_points += n
            if rid in ends:
                r["status"], r["end_time"] = ends[rid]
        if runs:
            bodies.append(self._encode(runs))
        return bodies

    @staticmethod
    def _encode(runs: list[dict]) -> bytes:
        return gzip.compress(json.dumps({"runs": runs}).encode(), 1)

    def flush(self) -> int:
        """Send everything queued so far (in the calling thread); return points handed over.
        Points the server cannot take now are spooled to a local file, not raised."""
        self.q.compact()
        with self._lock:
            todo = len(self.q.blocks)
            n = 0
            while True:
                batch = self.q.take(WRITE_BATCH) if todo > 0 else []
                last = todo - len(batch) <= 0
                for body in self._bodies([g for _, gs in batch for g in gs], last):
                    self._deliver(body)
                self.q.done([b for b, _ in batch])
                n += sum(b.n for b, _ in batch)
                todo -= len(batch)
                if todo <= 0:
                    break
            self._closing.clear()
            self._replay()
            self._beat(n > 0)
            return n

    def _beat(self, sent: bool) -> None:
        # the server marks a run crashed when nothing reached it for MLOPS_JUPYTER_STALE_AFTER
        # (300 s): a run that is quiet (a long epoch) says it is alive every BEAT_S
        now = time.monotonic()
        if sent or not self._runs:
            self._last_beat = now
            return
        if now - self._last_beat < BEAT_S or self.backlog():
            return
        self._last_beat = now
        for rid in list(self._runs):
            uid = self._uids.get(rid)
            if uid is None:
                continue
            try:
                self.client.request("POST", f"/api/v1/runs/{uid}/params", {"params": {}})
            except (ServerRefused, ServerUnavailable):
                return  # the next points or beat will tell

    def _send(self, body: bytes) -> None:
        self.client.request("POST", "/api/v1/ingest", raw_gzip=body)

    def _send_all(self, body: bytes) -> None:
        """Send a body; one the server finds too large (413) is sent in halves. A retry of
        the whole body later is harmless: the halves' chunks keep their seqs."""
        try:
            self._send(body)
        except ServerRefused as e:
            halves = _halves(body) if e.status == 413 else []
            if not halves:
                raise
            # the server takes smaller bodies than ours: make the next ones smaller
            self.max_points = max(1024, self.max_points // 2)
            for half in halves:
                self._send_all(half)

    def _kept(self, e: Exception) -> bool:
        """Whether a failed request is kept for later (server away, token refused)."""
        self._auth_refused = False
        if isinstance(e, ServerUnavailable):
            self._offline(e)
            return True
        if isinstance(e, ServerRefused) and e.status in (401, 403):
            self._auth_refused = True
            if not self._auth_warned:
                self._auth_warned = True
                self._warn(
                    f"mlops-jupyter: {e} (MLOPS_JUPYTER_TOKEN refused); metrics are kept in "
                    "a spool file and sent once a valid token is used"
                )
            return True
        return False

    def _refused(self, e: Exception) -> None:
        # bad input the local checks let through: retrying cannot help
        if not self._refused_warned:
            self._refused_warned = True
            self._warn(f"mlops-jupyter: dropped a batch of metrics the server refused: {e}")

    def _deliver(self, body: bytes) -> None:
        if self._spool is not None and self._spool.pending():
            self._spool.append(body)  # keep the order: behind what is waiting
            return
        try:
            self._send_all(body)
        except ServerRefused as e:
            if not self._kept(e):
                self._refused(e)
                return
            self._to_spool(body)
        except ServerUnavailable as e:
            self._kept(e)
            self._to_spool(body)

    def _to_spool(self, body: bytes) -> None:
        if self._spool is None:
            self._spool = SpoolFile.create(self._root)
        self._spool.append(body)
        self._retry_at = time.monotonic() + self._backoff

    def _replay_file(self, f: SpoolFile) -> bool:
        """Send a spool file's records in order; False when the server is still away."""
        for pos, body in f.records():
            try:
                self._send_all(body)
            except (ServerRefused, ServerUnavailable) as e:
                if self._kept(e):
                    return False
                self._refused(e)
            f.read_pos = pos
        return True

    def _replay(self) -> None:
        now = time.monotonic()
        pending = self._spool is not None and self._spool.pending()
        if not (pending or self._orphans) or now < self._retry_at:
            return
        ok = True
        if self._orphans:
            for path in leftovers(self._root, self._spool.path if self._spool else None):
                f = SpoolFile.adopt(path)
                if f is None:
                    continue
                if self._replay_file(f):
                    f.remove()
                else:
                    f.close()
                    ok = False
                    break
            self._orphans = not ok
        if ok and pending:
            assert self._spool is not None
            ok = self._replay_file(self._spool)
            if ok:
                self._spool.reset()
        if ok:
            self._backoff = 0.2
            if self._offline_warned:
                self._offline_warned = False
                self._warn(
                    "mlops-jupyter: the tracking server is reachable again; kept points sent"
                )
        else:
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
            self._retry_at = now + self._backoff

    def backlog(self) -> bool:
        """Whether requests wait in this process's spool file."""
        return self._spool is not None and self._spool.pending()

    def deliver_now(self) -> bool:
        """Send what is queued and replay this process's spool now, whatever the retry
        backoff says; whether nothing is left waiting (False: the server is still away).
        Run events call it first, so they reach the server after what was logged before."""
        self._retry_at = 0.0
        self.flush()
        return not self.backlog()

    def close(self) -> None:
        """At exit: send what is left, retrying an absent server for up to
        MLOPS_JUPYTER_EXIT_WAIT seconds; then leave the spool file for the next process."""
        self._stop = True
        self._wake.set()
        deadline = time.monotonic() + config.exit_wait()
        try:
            self.flush()
            # other processes' leftovers are not waited for, nor a token the server refuses
            while self.backlog() and not self._auth_refused and time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, self._retry_at - time.monotonic())) or 0.05)
                with self._lock:
                    self._replay()
        finally:
            self.q.close()
            self.client.close()
            if self._spool is not None:
                if self._spool.pending():
                    self._warn(
                        f"mlops-jupyter: the tracking server {self.client.shown} could not be "
                        f"reached; unsent metrics are kept in {self._spool.path} and sent by "
                        "the next process that logs to it"
                    )
                    self._spool.close()
                else:
                    self._spool.remove()


def remote_writer(store: Any) -> RemoteWriter:
    """The process-wide writer of a tracking server (started on first use)."""
    w = _writers.get(store.key)
    if w is None:
        with _writers_lock:
            w = _writers.get(store.key)
            if w is None:
                w = _writers[store.key] = RemoteWriter(store)
    assert isinstance(w, RemoteWriter)
    return w
