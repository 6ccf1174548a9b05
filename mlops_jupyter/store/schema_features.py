"""Tables of the feature store: feature view versions (definition, code, schema, owner),
their offline materializations (a parquet blob + a data version each) and the lineage of
training sets (labels + feature views -> a data version). Migrations 84 and 85, and
92: the request key that makes a remote client's online-materialization log entry safe to
send again."""

from __future__ import annotations

MIGRATIONS = [
    (
        84,
        "features: feature views, offline materializations, training-set lineage",
        """
        CREATE TABLE feature_views(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            entities TEXT NOT NULL,
            ts_column TEXT NOT NULL,
            ttl_s REAL,
            schema TEXT NOT NULL,
            def_hash TEXT NOT NULL,
            code_hash TEXT,
            code TEXT,
            description TEXT,
            owner TEXT,
            created REAL NOT NULL,
            UNIQUE(name, version)
        );
        CREATE INDEX feature_views_by_def ON feature_views(name, def_hash);
        CREATE TABLE feature_materializations(
            id INTEGER PRIMARY KEY,
            view_id INTEGER NOT NULL,
            data_version_id INTEGER NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            n_rows INTEGER NOT NULL,
            oldest REAL,
            newest REAL,
            created REAL NOT NULL
        );
        CREATE INDEX feature_materializations_by_view ON feature_materializations(view_id, id);
        CREATE TABLE training_set_sources(
            version_id INTEGER NOT NULL,
            role TEXT NOT NULL,
            source_id INTEGER NOT NULL,
            view_id INTEGER NOT NULL,
            features TEXT,
            created REAL NOT NULL,
            PRIMARY KEY(version_id, role, view_id, source_id)
        ) WITHOUT ROWID;
        CREATE INDEX training_set_sources_by_view ON training_set_sources(view_id)
        """,
    ),
    (
        85,
        "features: the online store (latest values per entity) and its materializations",
        """
        CREATE TABLE feature_online(
            view TEXT NOT NULL,
            version INTEGER NOT NULL,
            entity TEXT NOT NULL,
            ts REAL NOT NULL,
            vals TEXT NOT NULL,
            written REAL NOT NULL,
            PRIMARY KEY(view, version, entity)
        );
        CREATE TABLE feature_online_materializations(
            id INTEGER PRIMARY KEY,
            view_id INTEGER NOT NULL,
            backend TEXT NOT NULL,
            range_start REAL,
            range_end REAL NOT NULL,
            n_rows INTEGER NOT NULL,
            created REAL NOT NULL
        );
        CREATE INDEX feature_online_materializations_by_view
            ON feature_online_materializations(view_id, backend, id)
        """,
    ),
    (
        92,
        "features: request keys of online materialization log entries",
        """
        ALTER TABLE feature_online_materializations ADD COLUMN request_key TEXT;
        CREATE UNIQUE INDEX feature_online_materializations_by_key
            ON feature_online_materializations(view_id, request_key)
        """,
    ),
]
