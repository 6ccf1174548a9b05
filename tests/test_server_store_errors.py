"""A real `jupyter lab` over a damaged store: every route answers a JSON error that names
the store and the cause, never tornado's HTML 500 page."""

from __future__ import annotations

import pytest
from browser_helpers import running_lab
from test_store_faults import _corrupt_table, _store_with_runs

pytest.importorskip("jupyter_server")

API = "mlops/api/v1/"


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("damaged")
    store = tmp / "store" / "store.db"
    _store_with_runs(store, 40)
    _corrupt_table(store, "runs")
    with running_lab(tmp / "root", store) as server:
        yield server


@pytest.mark.parametrize("path", ["runs", "experiments", "runs/run%200", "compare?ids=run%201"])
def test_damaged_store_answers_json_500_with_the_cause(damaged, path):
    before = damaged.extra["store"].read_bytes()
    status, body = damaged.api(API + path)
    assert status == 500, body
    assert isinstance(body, dict), body  # JSON, not an HTML error page
    assert body["status"] == 500
    assert "malformed" in body["error"] and str(damaged.extra["store"]) in body["error"]
    assert damaged.extra["store"].read_bytes() == before
