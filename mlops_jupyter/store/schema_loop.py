"""Tables of the closed loop: validation-gate verdicts and per-model policies
(migrations 87..89), and the request keys that make a remote client's gate verdict and
resume safe to send again (91)."""

from __future__ import annotations

MIGRATIONS = [
    (
        87,
        "closed loop: gate reports and model policies",
        """
        CREATE TABLE gate_reports(
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            version_id INTEGER NOT NULL REFERENCES model_versions(id),
            baseline_version INTEGER,
            data_id TEXT,
            passed INTEGER NOT NULL,
            report TEXT NOT NULL,
            ts REAL NOT NULL,
            created_by TEXT
        );
        CREATE INDEX gate_reports_by_version ON gate_reports(version_id, id);
        CREATE TABLE model_policies(
            model_id INTEGER PRIMARY KEY REFERENCES models(id),
            policy TEXT NOT NULL,
            updated REAL NOT NULL,
            created_by TEXT
        );
        """,
    ),
    (
        88,
        "closed loop: user-written model card fields",
        """
        CREATE TABLE model_card_fields(
            model_id INTEGER PRIMARY KEY REFERENCES models(id),
            fields TEXT NOT NULL,
            updated REAL NOT NULL,
            created_by TEXT
        );
        """,
    ),
    (
        89,
        "closed loop: signals handled by the watcher, approvals",
        """
        CREATE TABLE loop_signals(
            rule TEXT NOT NULL,
            signal TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            owner TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            PRIMARY KEY(rule, signal)
        );
        CREATE TABLE loop_approvals(
            model_id INTEGER NOT NULL REFERENCES models(id),
            version_id INTEGER NOT NULL REFERENCES model_versions(id),
            decision TEXT NOT NULL,
            reason TEXT,
            ts REAL NOT NULL,
            created_by TEXT,
            PRIMARY KEY(model_id, version_id)
        );
        """,
    ),
    (
        91,
        "closed loop: request keys of gate verdicts and of a signal's resume or take-back",
        """
        ALTER TABLE gate_reports ADD COLUMN request_key TEXT;
        CREATE UNIQUE INDEX gate_reports_by_key ON gate_reports(version_id, request_key);
        ALTER TABLE loop_signals ADD COLUMN owner_key TEXT
        """,
    ),
]
