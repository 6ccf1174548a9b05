"""Tables of the feature store: feature view versions (definition, code, schema, owner),
their offline materializations (a parquet blob + a data version each) and the lineage of
training sets (labels + feature views -> a data version). Migration versions 84..86."""

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
]
