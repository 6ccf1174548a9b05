"""Copying runs from one store to another (SQLite <-> PostgreSQL, or two of one kind), for
`mlops-jupyter store copy`.

Runs are matched by uid, so a copy is idempotent and copying A->B then B->A makes no
duplicates. Each run, with its params, tags, metrics, artifacts, events, cells, data links,
drift reports and registered model versions, is written in one transaction of the
destination. Files (artifact blobs, model folders) are copied before that transaction, so a
crash leaves whole runs only, and at worst files no row refers to yet.

Files go from one artifact store to the other through the artifact-store contract (each a
folder or object storage; by default each store's own, see BaseStore.artifacts): a blob the
destination holds already costs one existence check, and copied bytes are checked against
the digest they are stored under."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactStore, blob_key, check_key, open_artifacts
from ..artifacts.base import tree_files
from ..errors import InvalidInputError, StoreError
from .base import BaseStore, Conn
from .metrics import key_ids
from .sql import insert as _insert
from .sql import insert_ignore
from .sql import quote as _q

_DIGEST = re.compile(r"^[0-9a-f]{64}$")  # sha256, as put_blob names blobs


class _Copier:
    """State of one copy: the id maps from SRC rows to DST rows, and the counts."""

    def __init__(
        self,
        src: BaseStore,
        dst: BaseStore,
        src_files: ArtifactStore | None = None,
        dst_files: ArtifactStore | None = None,
    ) -> None:
        self.src, self.dst = src, dst
        self.src_files, self.dst_files = src_files, dst_files
        # one place for both (the same folder or bucket): there is nothing to copy
        self.same_files = src_files is None or (
            dst_files is not None and src_files.location == dst_files.location
        )
        self._cols: dict[str, list[str]] = {}
        self.src_keys: dict[int, str] = dict(src.read("SELECT id, key FROM metric_keys"))
        self.dst_keys: dict[str, int] = {}
        self.experiments: dict[int, tuple[str, float]] = {
            r[0]: (r[1], r[2]) for r in src.read("SELECT id, name, created FROM experiments")
        }
        self.src_uid: dict[int, str] = dict(src.read("SELECT id, uid FROM runs"))
        self.dst_run: dict[str, int] = {}  # uid -> DST row id, filled on demand
        self.counts = {"runs": 0, "skipped": 0, "points": 0, "artifacts": 0, "bytes": 0}

    # -- generic rows ------------------------------------------------------------------------
    def cols(self, table: str, drop: tuple[str, ...] = ()) -> list[str]:
        """Columns of `table` both stores have (a store of an older schema lacks some)."""
        key = f"{table}/{','.join(drop)}"
        if key not in self._cols:
            there = set(self.dst.columns(table))
            self._cols[key] = [c for c in self.src.columns(table) if c in there and c not in drop]
        return self._cols[key]

    def select(
        self, table: str, where: str, args: tuple, drop: tuple[str, ...] = (), order: str = ""
    ) -> tuple[list[str], list[dict[str, Any]]]:
        cols = self.cols(table, drop)
        sql = f"SELECT {', '.join(_q(c) for c in cols)} FROM {table} WHERE {where}"
        rows = self.src.read(sql + (f" ORDER BY {order}" if order else ""), args)
        return cols, [dict(zip(cols, r)) for r in rows]

    def copy_rows(
        self,
        c: Conn,
        table: str,
        where: str,
        args: tuple,
        set_: dict[str, Any],
        drop: tuple[str, ...] = (),
        ignore: bool = False,
    ) -> int:
        """Copy the SRC rows of `table` matching `where` with the columns in `set_` replaced."""
        cols, rows = self.select(table, where, args, drop)
        if not rows:
            return 0
        sql = insert_ignore(table, tuple(cols)) if ignore else _insert(table, cols)
        c.executemany(sql, [tuple({**r, **set_}[k] for k in cols) for r in rows])
        return len(rows)

    # -- lookups in DST ------------------------------------------------------------------------
    def dst_run_id(self, c: Conn, src_id: int | None) -> int | None:
        if src_id is None or src_id not in self.src_uid:
            return None
        uid = self.src_uid[src_id]
        if uid not in self.dst_run:
            row = c.execute("SELECT id FROM runs WHERE uid=?", (uid,)).fetchone()
            if row is None:
                return None
            self.dst_run[uid] = row[0]
        return self.dst_run[uid]

    def experiment_id(self, c: Conn, src_id: int) -> int:
        name, created = self.experiments[src_id]
        c.execute(
            "INSERT INTO experiments(name, created) VALUES(?,?) ON CONFLICT(name) DO NOTHING",
            (name, created),
        )
        return c.execute("SELECT id FROM experiments WHERE name=?", (name,)).fetchone()[0]

    def version_id(self, c: Conn, src_id: int | None) -> int | None:
        """The DST id of SRC data version `src_id` (matched by fingerprint; inserted if new)."""
        if src_id is None:
            return None
        cols, rows = self.select("data_versions", "id=?", (src_id,), drop=("id",))
        if not rows:
            return None
        fp = rows[0]["fingerprint"]
        c.execute(insert_ignore("data_versions", tuple(cols)), [rows[0][k] for k in cols])
        row = c.execute("SELECT id FROM data_versions WHERE fingerprint=?", (fp,)).fetchone()
        if row is None:  # the version id is taken by other content: refuse, do not mix them
            raise StoreError(
                f"{self.dst.location}: data version {rows[0]['vid']} exists there with "
                "another fingerprint; not copied"
            )
        return row[0]

    # -- files -------------------------------------------------------------------------------
    def copy_blob(self, digest: str, size: int) -> None:
        """Copy one content-addressed artifact blob unless DST has it (same size) already."""
        if not _DIGEST.match(digest):
            raise StoreError(f"{self.src.location}: malformed artifact digest {digest!r}")
        if self.same_files:
            return
        src, dst = self.src_files, self.dst_files
        key = blob_key(digest)
        have = dst.head(key)
        if have is not None and have.size == size:
            return
        info = src.head(key)
        if info is None:
            warnings.warn(
                f"mlops-jupyter: artifact blob {digest[:12]} is missing from "
                f"{src.location}; its rows are copied without it",
                RuntimeWarning,
                3,
            )
            return
        if info.size != size:
            raise StoreError(
                f"artifact blob {digest[:12]} has {info.size} bytes where its rows say "
                f"{size}; not copied"
            )
        # a wrong-sized object in DST is a damaged copy: replace it, else put-if-absent
        dst.put_stream(key, _checked(src, key, digest, size), if_absent=have is None)
        self.counts["bytes"] += size

    def copy_model_files(self, path: str) -> None:
        """Copy a model version's files (the tree `path`, e.g. `models/clf/3f2a...-9c1d`)."""
        try:
            check_key(path)
        except InvalidInputError:
            raise StoreError(
                f"model path {path!r} is not a valid stored path; not copied"
            ) from None
        if self.same_files:
            return
        src, dst = self.src_files, self.dst_files
        local = src.local_path(path)
        if local is not None:
            names = (
                {rel: f.stat().st_size for rel, f in tree_files(local)} if local.is_dir() else {}
            )
        else:
            names = {i.key[len(path) + 1 :]: i.size for i in src.list(path)}
        if not names:
            warnings.warn(
                f"mlops-jupyter: model files {path} are missing from {src.location}; "
                "the version is copied without them",
                RuntimeWarning,
                3,
            )
            return
        there = {i.key[len(path) + 1 :]: i.size for i in dst.list(path)}
        todo = sorted(n for n, sz in names.items() if there.get(n) != sz)
        if not todo:
            return  # a folder is named by digest and a random suffix: the same version
        if local is not None and not there:
            dst.put_tree(path, local)  # whole (a local DST renames a complete folder in)
        else:
            # what a copy stopped mid-way left out, file by file
            with tempfile.TemporaryDirectory(prefix="mlops-copy-") as tmp:
                for rel in todo:
                    f = local / rel if local is not None else Path(tmp) / "f"
                    if local is None:
                        src.get_file(f"{path}/{rel}", f)
                    dst.put_file(f"{path}/{rel}", f)
        self.counts["bytes"] += sum(names[n] for n in todo)

    # -- one run -------------------------------------------------------------------------------
    def copy_run(self, sid: int) -> bool:
        """Copy SRC run `sid` into DST in one transaction; False if DST has it already."""
        src = self.src
        _, arts = self.select("artifacts", "run_id=?", (sid,))
        _, media = self.select("media", "run_id=?", (sid,))
        for a in arts + media:
            self.copy_blob(a["digest"], a["size"])
        _, versions = self.select("model_versions", "run_id=?", (sid,), order="id")
        for v in versions:
            self.copy_model_files(v["path"])
        run_cols, run = self.select("runs", "id=?", (sid,), drop=("id",))
        if not run:
            return False  # deleted from SRC meanwhile
        row = run[0]
        with self.dst.write("copy a run") as c:
            row["experiment_id"] = self.experiment_id(c, row["experiment_id"])
            row["parent_id"] = self.dst_run_id(c, row.get("parent_id"))
            if "prev_run_id" in row:
                row["prev_run_id"] = self.dst_run_id(c, row["prev_run_id"])
            got = c.execute(
                _insert("runs", run_cols, " ON CONFLICT(uid) DO NOTHING RETURNING id"),
                [row[k] for k in run_cols],
            ).fetchone()
            if got is None:  # another copy got there first
                return False
            did = got[0]
            self.dst_run[row["uid"]] = did
            at = {"run_id": did}
            for table in ("params", "tags", "artifacts", "media", "run_cells"):
                self.copy_rows(c, table, "run_id=?", (sid,), at)
            self.counts["artifacts"] += len(arts)
            self.copy_rows(c, "run_events", "run_id=?", (sid,), at, drop=("id",))
            self._metrics(c, sid, did)
            c.executemany(
                insert_ignore("cell_sources", ("hash", "source")),
                src.read(
                    "SELECT hash, source FROM cell_sources WHERE hash IN"
                    " (SELECT source_hash FROM cell_executions WHERE run_id=?)",
                    (sid,),
                ),
            )
            self.copy_rows(c, "cell_executions", "run_id=?", (sid,), at, drop=("id",))
            self._data(c, sid, did)
            for v in versions:
                self._model_version(c, v, did)
        return True

    def _metrics(self, c: Conn, sid: int, did: int) -> None:
        cols, summary = self.select("metric_summary", "run_id=?", (sid,))
        if not summary:
            return
        if any(s["key_id"] not in self.src_keys for s in summary):
            # a run still logging in SRC added a key since the copy started
            self.src_keys.update(self.src.read("SELECT id, key FROM metric_keys"))
        names = {s["key_id"]: self.src_keys[s["key_id"]] for s in summary}
        key_ids(c, list(names.values()), self.dst_keys)
        remap = {k: self.dst_keys[name] for k, name in names.items()}
        c.executemany(
            _insert("metric_summary", cols),
            [
                tuple({**s, "run_id": did, "key_id": remap[s["key_id"]]}[k] for k in cols)
                for s in summary
            ],
        )
        self.counts["points"] += sum(s["n"] for s in summary)
        # one key at a time: a long run's chunks need not all be in memory at once
        for key_id, new in remap.items():
            ccols, chunks = self.select(
                "metric_chunks", "run_id=? AND key_id=?", (sid, key_id), order="seq"
            )
            c.executemany(
                _insert("metric_chunks", ccols),
                [tuple({**ch, "run_id": did, "key_id": new}[k] for k in ccols) for ch in chunks],
            )

    def _data(self, c: Conn, sid: int, did: int) -> None:
        cols, links = self.select("run_data", "run_id=?", (sid,))
        if links:
            rows = [
                {**r, "run_id": did, "version_id": self.version_id(c, r["version_id"])}
                for r in links
            ]
            c.executemany(
                insert_ignore("run_data", tuple(cols)),
                [tuple(r[k] for k in cols) for r in rows if r["version_id"] is not None],
            )
        cols, reports = self.select("drift_reports", "run_id=?", (sid,), drop=("id",))
        for r in reports:
            r = {
                **r,
                "run_id": did,
                "ref_version_id": self.version_id(c, r["ref_version_id"]),
                "cur_version_id": self.version_id(c, r["cur_version_id"]),
            }
            c.execute(insert_ignore("drift_reports", tuple(cols)), [r[k] for k in cols])

    def _model_version(self, c: Conn, v: dict[str, Any], did: int) -> None:
        """Copy one model version (the model by name, the next free version number)."""
        src_vid = v["id"]
        name, created, description = self.src.read(
            "SELECT name, created, description FROM models WHERE id=?", (v["model_id"],)
        )[0]
        c.execute(
            "INSERT INTO models(name, created, description) VALUES(?,?,?)"
            " ON CONFLICT(name) DO NOTHING",
            (name, created, description),
        )
        mid = c.execute("SELECT id FROM models WHERE name=?", (name,)).fetchone()[0]
        # the model row's lock (PostgreSQL) numbers versions without a duplicate, as
        # registration does
        c.execute("UPDATE models SET description = description WHERE id=?", (mid,))
        if c.execute(
            "SELECT 1 FROM model_versions WHERE model_id=? AND digest=? AND run_id=?",
            (mid, v["digest"], did),
        ).fetchone():
            return
        number = c.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE model_id=?", (mid,)
        ).fetchone()[0]
        stage = v["stage"]
        if (
            stage == "production"
            and c.execute(
                "SELECT 1 FROM model_versions WHERE model_id=? AND stage='production'", (mid,)
            ).fetchone()
        ):
            stage = "none"  # DST's own production version stays the one served
        cols = self.cols("model_versions", ("id",))
        row = {**v, "model_id": mid, "version": number, "stage": stage, "run_id": did}
        new = c.execute(
            _insert("model_versions", cols, " RETURNING id"), [row[k] for k in cols]
        ).fetchone()[0]
        for alias, updated in self.src.read(
            "SELECT alias, updated FROM model_aliases WHERE version_id=?", (src_vid,)
        ):
            c.execute(
                "INSERT INTO model_aliases(model_id, alias, version_id, updated)"
                " VALUES(?,?,?,?) ON CONFLICT DO NOTHING",
                (mid, alias, new, updated),
            )
        self.copy_rows(
            c,
            "model_audit",
            "version_id=?",
            (src_vid,),
            {"model_id": mid, "version_id": new},
            drop=("id",),
        )


def _checked(src: ArtifactStore, key: str, digest: str, size: int) -> Iterator[bytes]:
    """The bytes of `key` in `src`, refused (the upload they feed aborted) at the end when
    they do not hash to `digest` or do not add up to `size`."""
    h = hashlib.sha256()
    got = 0
    for chunk in src.iter_bytes(key):
        h.update(chunk)
        got += len(chunk)
        yield chunk
    if got != size:
        raise StoreError(
            f"artifact blob {digest[:12]} has {got} bytes where its rows say {size}; not copied"
        )
    if h.hexdigest() != digest:
        raise StoreError(
            f"artifact blob {digest[:12]} in {src.location} does not match its digest; not copied"
        )


def _files(store: BaseStore, where: ArtifactStore | str | os.PathLike | None) -> ArtifactStore:
    if where is None:
        return store.artifacts
    if isinstance(where, ArtifactStore):
        return where
    return open_artifacts(where)


def _order(src: BaseStore, experiment: str | None) -> list[tuple[int, str]]:
    """(id, uid) of the SRC runs to consider, every parent (and previous attempt) before the
    runs that refer to it. With `experiment`, the runs of that experiment and the runs they
    refer to."""
    rows = src.read(
        "SELECT r.id, r.uid, r.parent_id, r.prev_run_id, e.name FROM runs r"
        " JOIN experiments e ON e.id = r.experiment_id ORDER BY r.id"
    )
    by_id = {r[0]: r for r in rows}
    wanted = [r for r in rows if experiment is None or r[4] == experiment]
    out: list[tuple[int, str]] = []
    seen: set[int] = set()

    def visit(rid: int) -> None:
        stack = [rid]  # iterative: a long chain of attempts must not hit the recursion limit
        while stack:
            top = stack[-1]
            if top in seen:
                stack.pop()
                continue
            refs = [x for x in by_id[top][2:4] if x in by_id and x not in seen and x != top]
            refs = [x for x in refs if x not in stack]  # a cycle (corrupt store): break it
            if refs:
                stack.extend(refs)
                continue
            seen.add(top)
            out.append((top, by_id[top][1]))
            stack.pop()

    for r in wanted:
        visit(r[0])
    return out


def copy_runs(
    src: BaseStore,
    dst: BaseStore,
    *,
    experiment: str | None = None,
    progress: bool = True,
    src_artifacts: ArtifactStore | str | os.PathLike | None = None,
    dst_artifacts: ArtifactStore | str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Copy every run of `src` (of `experiment` only, if given) whose uid `dst` does not
    have, with everything recorded about it. Returns counts: runs copied, skipped (already
    there), metric points, artifact rows, bytes of files copied, seconds taken.

    `src_artifacts`/`dst_artifacts`: where each store's files are (a folder or an s3://,
    gs://, az:// URL), when not the store's default (MLOPS_JUPYTER_ARTIFACTS if set, else
    the store's own folder): e.g. a SQLite store's own folder into a team store on S3."""
    from ..progress import progress as bar

    if src.key == dst.key:
        raise InvalidInputError(f"source and destination are the same store ({src.location})")
    if experiment is not None and not src.read(
        "SELECT 1 FROM experiments WHERE name=?", (experiment,)
    ):
        raise InvalidInputError(f"{src.location} has no experiment {experiment!r}")
    src_files = dst_files = None
    if src.read("SELECT 1 FROM artifacts UNION ALL SELECT 1 FROM model_versions LIMIT 1"):
        # files to copy: a PostgreSQL store without its artifacts place (unset
        # MLOPS_JUPYTER_ARTIFACTS) fails here, before any run is copied
        src_files, dst_files = _files(src, src_artifacts), _files(dst, dst_artifacts)
    t0 = time.perf_counter()
    job = _Copier(src, dst, src_files, dst_files)
    have = {r[0] for r in dst.read("SELECT uid FROM runs")}
    todo = _order(src, experiment)
    with bar(total=len(todo), desc="copy runs", unit="run", quiet=not progress) as b:
        for sid, uid in todo:
            if uid in have or not job.copy_run(sid):
                job.counts["skipped"] += 1
            else:
                job.counts["runs"] += 1
            b.update()
    return {**job.counts, "seconds": round(time.perf_counter() - t0, 3)}
