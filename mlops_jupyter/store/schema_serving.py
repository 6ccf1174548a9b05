"""Tables of model serving: one row per answered prediction request (model, version,
variant, request id, latency, status, compact outputs) and ground truth sent later through
the feedback route. Migration versions 80..89."""

from __future__ import annotations

MIGRATIONS = [
    (
        80,
        "serving: prediction log and feedback",
        """
        CREATE TABLE serving_predictions(
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL,
            model TEXT NOT NULL,
            version INTEGER,
            variant TEXT,
            ts REAL NOT NULL,
            latency_ms REAL,
            status INTEGER NOT NULL,
            error TEXT,
            n_rows INTEGER,
            batch_size INTEGER,
            outputs TEXT,
            worker TEXT
        );
        CREATE INDEX serving_predictions_by_request ON serving_predictions(request_id);
        CREATE INDEX serving_predictions_by_model ON serving_predictions(model, ts);
        CREATE TABLE serving_feedback(
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL,
            value TEXT NOT NULL,
            value_num REAL,
            ts REAL NOT NULL
        );
        CREATE INDEX serving_feedback_by_request ON serving_feedback(request_id);
        """,
    ),
]
