"""Rich-media index: one row per (run, key, step) naming the artifact (and its
content-addressed blob) that holds the encoded image, figure, table, text or audio."""

from __future__ import annotations

MIGRATIONS = [
    (
        60,
        "media: index of images, figures, tables, text and audio per run, key and step",
        """
        CREATE TABLE media(
            run_id INTEGER NOT NULL REFERENCES runs(id),
            key TEXT NOT NULL,
            step INTEGER NOT NULL,
            kind TEXT NOT NULL,
            mime TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY(run_id, key, step)
        ) WITHOUT ROWID;
        CREATE INDEX media_by_digest ON media(run_id, digest);
        """,
    ),
]
