"""Tables of model serving: one row per answered prediction request (model, version,
variant, request id, latency, status, compact outputs) and ground truth sent later through
the feedback route. Migration versions 80..83 and 93."""

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
    (
        81,
        "serving: the desired rollout layout of each served model",
        """
        CREATE TABLE serving_rollouts(
            model TEXT PRIMARY KEY,
            layout TEXT NOT NULL,
            generation INTEGER NOT NULL,
            state TEXT NOT NULL,
            updated_at REAL NOT NULL,
            updated_by TEXT,
            reason TEXT,
            checks TEXT
        );
        """,
    ),
    (
        82,
        "serving: windowed profiles of live inputs, their drift and drift alerts",
        """
        CREATE TABLE serving_profiles(
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            version INTEGER NOT NULL,
            variant TEXT NOT NULL,
            worker TEXT,
            window_start REAL NOT NULL,
            window_end REAL NOT NULL,
            n_rows INTEGER NOT NULL,
            n_sampled INTEGER NOT NULL,
            n_requests INTEGER NOT NULL,
            profile TEXT NOT NULL,
            reference TEXT,
            drifted INTEGER,
            drift_share REAL,
            drift TEXT,
            inputs_blob TEXT,
            created REAL NOT NULL
        );
        CREATE INDEX serving_profiles_by_model ON serving_profiles(model, window_start);
        CREATE TABLE serving_drift_alerts(
            model TEXT NOT NULL,
            version INTEGER NOT NULL,
            variant TEXT NOT NULL,
            window_start REAL NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY(model, version, variant, window_start)
        );
        """,
    ),
    (
        83,
        "serving: rollout layouts that a worker could not load, with the load errors",
        """
        CREATE TABLE serving_rollout_refusals(
            model TEXT NOT NULL,
            generation INTEGER NOT NULL,
            worker TEXT NOT NULL,
            layout TEXT NOT NULL,
            failed TEXT NOT NULL,
            ts REAL NOT NULL,
            PRIMARY KEY(model, generation, worker)
        );
        """,
    ),
    (
        # The Serving view's aggregates (store/serving_stats.py) read the log per model and
        # variant: totals, per-window counts over ts ranges and the answered latencies of the
        # shown windows, all from this index alone (no row lookups). 93, not 84..89:
        # versions are unique across areas and 84..92 are taken.
        93,
        "serving: index of the prediction log by model, variant, version and time",
        """
        CREATE INDEX serving_predictions_by_variant
            ON serving_predictions(model, variant, version, ts, status, latency_ms);
        """,
    ),
]
