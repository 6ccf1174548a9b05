"""Tables of the data area: data versions (fingerprint + column profile), their links to
runs (inputs/outputs) and stored drift reports. Migration versions 20..29."""

from __future__ import annotations

MIGRATIONS = [
    (
        20,
        "data: versions, run inputs/outputs, drift reports",
        """
        CREATE TABLE data_versions(
            id INTEGER PRIMARY KEY,
            vid TEXT NOT NULL UNIQUE,
            fingerprint TEXT NOT NULL UNIQUE,
            name TEXT,
            kind TEXT NOT NULL,
            source TEXT,
            n_rows INTEGER,
            n_cols INTEGER,
            size_bytes INTEGER,
            schema TEXT,
            profile TEXT,
            created REAL NOT NULL
        );
        CREATE INDEX data_versions_by_name ON data_versions(name, created);
        CREATE TABLE run_data(
            run_id INTEGER NOT NULL,
            version_id INTEGER NOT NULL,
            role TEXT NOT NULL,
            name TEXT,
            source TEXT,
            created REAL NOT NULL,
            PRIMARY KEY(run_id, version_id, role)
        ) WITHOUT ROWID;
        CREATE INDEX run_data_by_version ON run_data(version_id, role);
        CREATE INDEX run_data_by_name ON run_data(name);
        CREATE TABLE drift_reports(
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            run_id INTEGER,
            ref_version_id INTEGER,
            cur_version_id INTEGER,
            created REAL NOT NULL,
            n_columns INTEGER NOT NULL,
            n_drifted INTEGER NOT NULL,
            drift_share REAL NOT NULL,
            dataset_drift INTEGER NOT NULL,
            mode TEXT NOT NULL,
            result TEXT NOT NULL
        );
        CREATE INDEX drift_reports_by_run ON drift_reports(run_id, created);
        CREATE INDEX drift_reports_by_version ON drift_reports(cur_version_id, created)
        """,
    ),
]
