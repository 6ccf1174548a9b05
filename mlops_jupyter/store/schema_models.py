"""Tables of the model registry: models, their versions, aliases and the audit log."""

from __future__ import annotations

MIGRATIONS = [
    (
        40,
        "model registry: models, versions with stages, aliases, audit log",
        """
        CREATE TABLE models(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created REAL NOT NULL,
            description TEXT
        );
        CREATE TABLE model_versions(
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            version INTEGER NOT NULL,
            stage TEXT NOT NULL DEFAULT 'none',
            flavor TEXT NOT NULL,
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            run_id INTEGER REFERENCES runs(id),
            metrics TEXT,
            meta TEXT,
            created REAL NOT NULL,
            created_by TEXT,
            UNIQUE(model_id, version)
        );
        CREATE INDEX model_versions_by_stage ON model_versions(model_id, stage);
        CREATE TABLE model_aliases(
            model_id INTEGER NOT NULL REFERENCES models(id),
            alias TEXT NOT NULL,
            version_id INTEGER NOT NULL REFERENCES model_versions(id),
            updated REAL NOT NULL,
            PRIMARY KEY(model_id, alias)
        ) WITHOUT ROWID;
        CREATE TABLE model_audit(
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            version_id INTEGER REFERENCES model_versions(id),
            ts REAL NOT NULL,
            action TEXT NOT NULL,
            from_stage TEXT,
            to_stage TEXT,
            alias TEXT,
            reason TEXT,
            user TEXT
        );
        CREATE INDEX model_audit_by_model ON model_audit(model_id, ts);
        """,
    ),
]
