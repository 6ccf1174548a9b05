"""REST API of the server extension against a real `jupyter lab` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser_helpers import running_lab
from sidebar_helpers import ODD_NAME, XSS_NAME, populate

pytest.importorskip("jupyter_server")

API = "mlops/api/v1/"


@pytest.fixture(scope="module")
def srv(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("srv")
    root = tmp / "root"
    root.mkdir()
    (root / "work").mkdir()
    nb = root / "work" / "train.ipynb"
    store = tmp / "store.db"
    saved = os.environ.get("MLOPS_JUPYTER_ARTIFACTS")
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        # the same API over a team store: the lab server reads the PostgreSQL database
        store = request.getfixturevalue("pg_server").new_database("srv")
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = str(tmp / "artifacts")
    try:
        ids = populate(store, notebook=nb)
        with running_lab(root, store, ids=ids) as server:
            yield server
    finally:
        if saved is None:
            os.environ.pop("MLOPS_JUPYTER_ARTIFACTS", None)
        else:
            os.environ["MLOPS_JUPYTER_ARTIFACTS"] = saved


def get(srv, path: str):
    status, body = srv.api(API + path)
    return status, body


def test_health(srv):
    status, body = get(srv, "health")
    assert status == 200
    assert body["ok"] is True and body["runs"] == 30 + 5
    if os.environ.get("MLOPS_TEST_BACKEND") == "postgresql":
        from pgserver import PASSWORD

        assert body["store"].startswith("postgresql://") and PASSWORD not in json.dumps(body)
    else:
        assert body["store"].endswith("store.db")


@pytest.mark.parametrize(
    "path",
    [
        "health",
        "experiments",
        "runs",
        "runs/long",
        "runs/long/metrics/loss",
        "compare?ids=long",
        "telemetry",
        "alerts",
        "drift",
        "metric-keys",
        "runs/long/data",
        "columns",
        "table",
        "groups?by=params.opt",
        "export.csv",
    ],
)
def test_every_route_needs_credentials(srv, path):
    try:
        with urllib.request.urlopen(srv.url + API + path, timeout=10) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    assert code == 403
    # a wrong token is refused too
    req = urllib.request.Request(srv.url + API + path, headers={"Authorization": "token nope"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 403


def test_experiments(srv):
    status, body = get(srv, "experiments")
    assert status == 200
    by = {e["name"]: e for e in body}
    assert by["exp-a"]["runs"] == 30
    assert by["exp-b"]["runs"] == 5 and by["exp-b"]["running"] == 1


def test_runs_pagination_covers_everything_once(srv):
    seen = []
    offset = 0
    while True:
        status, page = get(srv, f"runs?limit=7&offset={offset}")
        assert status == 200
        assert page["total"] == 35 and page["limit"] == 7 and page["offset"] == offset
        if not page["runs"]:
            break
        assert len(page["runs"]) <= 7
        seen += [r["id"] for r in page["runs"]]
        offset += 7
    assert len(seen) == 35 == len(set(seen))
    # newest first by default
    _, page = get(srv, "runs?limit=100")
    starts = [r["start_time"] for r in page["runs"]]
    assert starts == sorted(starts, reverse=True)


def test_runs_content_and_key_metric(srv):
    _, page = get(srv, "runs?experiment=exp-a&limit=1&sort=name&order=asc")
    r = page["runs"][0]
    assert page["metric"] == "loss" and page["total"] == 30
    assert r["name"] == "a-00" and r["experiment"] == "exp-a" and r["status"] == "finished"
    assert r["metric"]["last"] == pytest.approx(1 / 50)
    assert r["metric"]["max"] == pytest.approx(1.0)
    assert r["duration_s"] >= 0 and r["attempt"] == 1


def test_runs_filters(srv):
    _, p = get(srv, "runs?status=running")
    assert [r["name"] for r in p["runs"]] == ["live-run"]
    _, p = get(srv, "runs?status=failed")
    assert [r["name"] for r in p["runs"]] == ["broken"]
    _, p = get(srv, "runs?q=a-1")
    assert p["total"] == 10
    _, p = get(srv, "runs?experiment=exp-a&where=params.lr%3E%3D0.25")
    assert p["total"] == 6
    _, p = get(srv, "runs?experiment=exp-a&where=params.opt%3Dadam&where=params.lr%3C%3D0.1")
    assert sorted(r["name"] for r in p["runs"]) == ["a-01", "a-03", "a-05", "a-07", "a-09"]
    _, p = get(srv, "runs?where=metrics.loss.max%3E2")
    assert [r["name"] for r in p["runs"]] == ["long"]
    _, p = get(srv, "runs?experiment=exp-a&sort=metric&order=asc&limit=3")
    vals = [r["metric"]["last"] for r in p["runs"]]
    assert vals == sorted(vals) and p["runs"][0]["name"] == "a-00"


def test_xss_name_is_returned_as_plain_data(srv):
    _, p = get(srv, "runs?q=onerror")
    assert [r["name"] for r in p["runs"]] == [XSS_NAME]


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("runs?limit=abc", "limit"),
        ("runs?limit=0", "limit"),
        ("runs?limit=100000", "limit"),
        ("runs?offset=-1", "offset"),
        ("runs?sort=bogus", "sort"),
        ("runs?order=sideways", "order"),
        ("runs?status=sleeping", "status"),
        ("runs?where=lr>1", "filter"),
        ("runs?where=metrics.loss<abc", "number"),
        ("runs/long/metrics/loss?max_points=1", "max_points"),
        ("runs/long/metrics/loss?max_points=x", "max_points"),
        ("compare", "ids"),
        ("alerts?since=yesterday", "since"),
        ("runs?where=metrics.loss~0.5", "~ (contains) applies to params and tags"),
        ("runs?offset=" + "9" * 24, "offset"),
        ("runs?limit=" + "9" * 24, "limit"),
        ("alerts?limit=" + "9" * 24, "limit"),
        ("drift?limit=" + "9" * 30, "limit"),
        ("runs?" + "&".join(["where=params.lr%3E0"] * 1000), "at most 50 conditions"),
    ],
)
def test_bad_parameters_get_clear_400_json(srv, path, fragment):
    status, body = get(srv, path)
    assert status == 400, body
    assert body["status"] == 400 and fragment in body["error"]


def test_deepest_offset_and_many_conditions_still_answer(srv):
    status, body = get(srv, f"runs?offset={2**63 - 1}")
    assert status == 200 and body["runs"] == [] and body["total"] == 35
    status, body = get(srv, "runs?experiment=exp-a&" + "&".join(["where=params.lr%3E0"] * 50))
    assert status == 200 and body["total"] == 30


def test_like_wildcards_match_themselves(srv):
    # nothing stored has an underscore; only one run name has a percent sign
    assert get(srv, "runs?q=_")[1]["total"] == 0
    _, p = get(srv, "runs?q=%25")
    assert [r["name"] for r in p["runs"]] == [ODD_NAME]
    assert get(srv, "runs?where=params.opt~_")[1]["total"] == 0
    assert get(srv, "runs?where=params.opt~%25")[1]["total"] == 0
    assert get(srv, "runs?where=params.opt~ada")[1]["total"] == 15


def test_errors_raised_by_tornado_are_json_too(srv):
    for req in (
        urllib.request.Request(srv.url + API + "runs"),  # no credentials: 403
        urllib.request.Request(  # a verb the API does not have: 405
            srv.url + API + "runs", method="DELETE", headers={"Authorization": f"token {srv.token}"}
        ),
    ):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        body = json.loads(exc.value.read())
        assert body["status"] == exc.value.code in (403, 405) and body["error"], body


def test_unknown_run_and_route_are_404_json(srv):
    status, body = get(srv, "runs/nosuchrun")
    assert status == 404 and "nosuchrun" in body["error"]
    status, body = get(srv, "compare?ids=long,nosuchrun")
    assert status == 404
    status, body = get(srv, "nothing/here")
    assert status == 404 and "no such route" in body["error"]


def test_series_is_decimated_within_bounds(srv):
    status, s = get(srv, "runs/long/metrics/loss?max_points=500")
    assert status == 200
    assert s["n"] == 100_000 and s["decimated"] is True
    assert 2 <= len(s["step"]) <= 500 and len(s["value"]) == len(s["step"])
    assert s["step"] == sorted(s["step"]) and s["step"][0] == 0 and s["step"][-1] == 99_999
    # min/max preserving: the single spike and the extremes survive
    assert max(s["value"]) == pytest.approx(5.0 + __import__("math").sin(77_777 / 500.0))
    assert min(s["value"]) == pytest.approx(-1.0, abs=1e-4)
    status, s = get(srv, "runs/long/metrics/loss")  # default bound
    assert len(s["step"]) <= 2000
    status, s = get(srv, "runs/a-00/metrics/loss?max_points=2000")
    assert s["decimated"] is False and s["step"] == list(range(50))


def test_series_nan_becomes_null_and_unknown_key_is_empty(srv):
    ids = srv.extra["ids"]
    status, s = get(srv, f"runs/{ids['xss']}/metrics/loss")
    assert status == 200 and s["value"] == [None, 0.3]
    status, s = get(srv, "runs/long/metrics/no_such_key")
    assert status == 200 and s["n"] == 0 and s["step"] == []


def test_compare(srv):
    status, c = get(srv, "compare?ids=a-00,a-01&max_points=20")
    assert status == 200
    assert [r["name"] for r in c["runs"]] == ["a-00", "a-01"]
    assert set(c["params_differ"]) == {"lr", "opt"} and "depth" in c["param_keys"]
    assert set(c["curves"]) == {"acc", "loss"}
    assert [len(x["step"]) <= 20 for x in c["curves"]["loss"]] == [True, True]
    assert c["runs"][0]["metrics"]["loss"]["min"] == pytest.approx(1 / 50)


def test_run_detail(srv):
    ids = srv.extra["ids"]
    status, d = get(srv, f"runs/{ids['running']}")
    assert status == 200
    assert d["name"] == "live-run" and d["status"] == "running"
    assert d["notebook_relpath"] == "work/train.ipynb"
    assert [a["message"] for a in d["alerts"]] == ["loss is NaN"]
    assert isinstance(d["cells"], list) and isinstance(d["data_versions"], list)
    assert {m["key"] for m in d["metrics"]} >= {"sys/cpu/percent", "loss"}


def test_telemetry_and_alerts(srv):
    status, tel = get(srv, "telemetry")
    assert status == 200
    assert [t["name"] for t in tel] == ["live-run"]
    t = tel[0]
    assert t["samples"]["sys/cpu/percent"]["value"] == 42.0
    assert t["samples"]["sys/gpu0/temp_c"]["value"] == 81.0
    assert t["throttling"] is True and t["thermal"][0]["message"] == "GPU0 thermal throttling"
    status, al = get(srv, "alerts")
    assert status == 200
    mine = [a for a in al if a["message"] == "loss is NaN"]
    assert mine and mine[0]["run_name"] == "live-run" and mine[0]["level"] == "error"
    times = [a["start_time"] for a in al]
    assert times == sorted(times, reverse=True)
    status, al = get(srv, "alerts?run=live-run")
    assert status == 200 and {a["run_name"] for a in al} == {"live-run"}


def test_data_routes_answer_lists(srv):
    for path in ("drift", "drift?run=long", "runs/long/data", "metric-keys"):
        status, body = get(srv, path)
        assert status == 200 and isinstance(body, list), (path, body)
    _, keys = get(srv, "metric-keys")
    assert keys[:2] == ["loss", "acc"] or set(keys) >= {"loss", "acc"}


def test_extension_points_and_install():
    from mlops_jupyter import server

    assert server._jupyter_server_extension_points() == [{"module": "mlops_jupyter.server"}]
    (entry,) = server._jupyter_labextension_paths()
    assert entry["dest"] == "mlops-jupyter-labextension"
    cfg = Path(__file__).parent.parent / "jupyter-config" / "server-config" / "mlops_jupyter.json"
    assert json.loads(cfg.read_text())["ServerApp"]["jpserver_extensions"] == {
        "mlops_jupyter.server": True
    }
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    if "mlops-jupyter-labextension" not in text:
        pytest.skip("package not installed with its lab extension (pip install .)")
    line = next(ln for ln in text.splitlines() if "mlops-jupyter-labextension" in ln)
    assert "enabled" in line and "OK" in line


def test_names_and_keys_with_reserved_characters_round_trip(srv):
    from urllib.parse import quote

    status, d = get(srv, f"runs/{quote(ODD_NAME, safe='')}")
    assert status == 200 and d["name"] == ODD_NAME
    key = quote("val/loss 50%", safe="")
    status, s = get(srv, f"runs/{quote(ODD_NAME, safe='')}/metrics/{key}")
    assert status == 200 and s["key"] == "val/loss 50%" and s["value"] == [0.25]
    status, s = get(srv, f"runs/{d['id']}/metrics/val/loss%2050%25")  # a raw '/' in the key
    assert status == 200 and s["value"] == [0.25]


def test_dashboard_table_groups_and_csv(srv):
    status, t = get(
        srv,
        "table?experiment=exp-a&columns=params.lr,metrics.loss&sort=params.lr"
        "&order=asc&limit=5&where=params.opt%3Dadam",
    )
    assert status == 200 and t["total"] == 15 and len(t["rows"]) == 5
    lr = t["fields"].index("params.lr")
    assert [r[lr] for r in t["rows"]] == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert t["fields"][-1] == "metrics.loss.last"
    status, cols = get(srv, "columns?experiment=exp-a")
    assert cols["params"] == ["depth", "lr", "opt"] and "loss" in cols["metrics"]
    status, g = get(srv, "groups?experiment=exp-a&by=params.opt&metrics=metrics.acc")
    assert {x["value"]: x["n"] for x in g} == {"adam": 15, "sgd": 15}
    status, raw = srv.api(
        API + "export.csv?experiment=exp-a&columns=params.opt&sort=name&order=asc"
    )
    assert status == 200
    lines = raw.strip().splitlines()
    assert lines[0].endswith(",params.opt") and len(lines) == 31
    assert lines[1].split(",")[1] == "a-00" and lines[1].endswith(",sgd")
    # the XSS-named run's name comes back as data
    _, t = get(srv, "table?experiment=exp-b&limit=100")
    assert XSS_NAME in [r[1] for r in t["rows"]]
    for bad, word in [
        ("table?columns=weights.x", "column"),
        ("table?limit=0", "limit"),
        ("table?sort=params.lr&order=up", "order"),
        ("groups?by=metrics.loss", "param or tag"),
        ("groups", "by"),
        ("export.csv?where=params.lr>>1", "bad filter"),
        ("runs/long/metrics/loss?since_step=x", "since_step"),
    ]:
        status, body = get(srv, bad)
        assert status == 400 and word in body["error"], (bad, body)


def test_since_step_over_http(srv):
    status, s = get(srv, "runs/a-00/metrics/loss?since_step=45")
    assert status == 200 and s["step"] == [46, 47, 48, 49]
    assert s["n"] == 50 and s["last_step"] == 49
    status, c = get(srv, "compare?ids=a-00,a-01&keys=loss,acc&since_step=48")
    assert [cv["step"] for cv in c["curves"]["loss"]] == [[49], [49]]
    assert [cv["step"] for cv in c["curves"]["acc"]] == [[49], [49]]
