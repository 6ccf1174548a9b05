"""SQL of the rich-media index (table `media`, see schema_media.py)."""

from __future__ import annotations

from .db import Store

# (run_id, key, step, kind, mime, artifact name, created)
MediaRow = tuple[int, str, int, str, str, str, float]


def add_media(store: Store, rows: list[MediaRow]) -> int:
    """Index artifacts already stored for the run as media; the digest and size are taken
    from the artifact row, so the index can never name a blob the run did not store.
    Logging a key at a step again replaces the earlier row. Returns the rows written."""
    if not rows:
        return 0
    n = 0
    with store.write("record media") as c:
        for rid, key, step, kind, mime, name, created in rows:
            cur = c.execute(
                "INSERT INTO media(run_id, key, step, kind, mime, name, digest, size,"
                " created) SELECT ?,?,?,?,?,?, digest, size, ? FROM artifacts"
                " WHERE run_id=? AND name=? ON CONFLICT(run_id, key, step) DO UPDATE SET"
                " kind=excluded.kind, mime=excluded.mime, name=excluded.name,"
                " digest=excluded.digest, size=excluded.size, created=excluded.created",
                (rid, key, step, kind, mime, name, created, rid, name),
            )
            n += cur.rowcount
    return n


def list_media(store: Store, rid: int, key: str | None = None) -> list[tuple]:
    """Rows (key, step, kind, mime, digest, size, created) of run `rid`, by key then step."""
    sql = "SELECT key, step, kind, mime, digest, size, created FROM media WHERE run_id=?"
    args: tuple = (rid,)
    if key is not None:
        sql += " AND key=?"
        args = (rid, key)
    return store.read(sql + " ORDER BY key, step", args, what="list media")


def find_media(store: Store, rid: int, key: str, step: int | None) -> tuple | None:
    """(step, kind, mime, digest) of `key` at `step` (None: the latest step), or None."""
    if step is None:
        rows = store.read(
            "SELECT step, kind, mime, digest FROM media WHERE run_id=? AND key=?"
            " ORDER BY step DESC LIMIT 1",
            (rid, key),
            what="read media",
        )
    else:
        rows = store.read(
            "SELECT step, kind, mime, digest FROM media WHERE run_id=? AND key=? AND step=?",
            (rid, key, step),
            what="read media",
        )
    return rows[0] if rows else None


def media_by_digest(store: Store, rid: int, digest: str) -> tuple | None:
    """(kind, mime) of a blob when run `rid` logged it, else None (no other run's blobs)."""
    rows = store.read(
        "SELECT kind, mime FROM media WHERE run_id=? AND digest=? LIMIT 1",
        (rid, digest),
        what="read media",
    )
    return rows[0] if rows else None


def next_step(store: Store, rid: int, key: str) -> int:
    """One past the highest step stored for `key` (0 when none)."""
    rows = store.read(
        "SELECT max(step) FROM media WHERE run_id=? AND key=?", (rid, key), what="read media"
    )
    return 0 if rows[0][0] is None else rows[0][0] + 1
