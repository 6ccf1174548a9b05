"""REST routes of logged media against a real `jupyter lab` subprocess."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from browser_helpers import running_lab

import mlops_jupyter as mj
from mlops_jupyter.media.encode import decode_png

pytest.importorskip("jupyter_server")
API = "mlops/api/v1/"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media-srv")
    store = tmp / "store.db"
    mj.set_store(store)
    img = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    with mj.start_run("pics") as run:
        for step in range(3):
            mj.log_image("samples", img + step, step=step)
        mj.log_text("notes", "hello ✓", step=7)
    with mj.start_run("other") as other:
        mj.log_text("secret", "not yours", step=0)
    mj.flush_media()
    mj.set_store(None)
    with running_lab(tmp / "root", store, run=run.id, other=other.id, img=img) as server:
        yield server


def raw(srv, path: str) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(srv.url + path, headers={"Authorization": f"token {srv.token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_list_and_fetch_every_item(srv):
    status, body = srv.api(API + f"runs/{srv.extra['run']}/media")
    assert status == 200
    items = body["media"]
    assert [(m["key"], m["step"], m["kind"]) for m in items] == [
        ("notes", 7, "text"),
        ("samples", 0, "image"),
        ("samples", 1, "image"),
        ("samples", 2, "image"),
    ]
    for m in items:
        assert set(m) >= {"key", "step", "kind", "mime", "url"}
        code, headers, data = raw(srv, m["url"].lstrip("/"))
        assert code == 200
        assert headers["Content-Type"] == m["mime"]
        if m["kind"] == "image":
            np.testing.assert_array_equal(decode_png(data), srv.extra["img"] + m["step"])
        else:
            assert data.decode() == "hello ✓"
    status, body = srv.api(API + f"runs/{srv.extra['run']}/media?key=notes")
    assert [m["key"] for m in body["media"]] == ["notes"]


def test_only_that_runs_digests_and_json_errors(srv):
    _, body = srv.api(API + f"runs/{srv.extra['other']}/media")
    foreign = body["media"][0]["url"].rsplit("/", 1)[1]
    # another run's blob through this run's URL: 404, JSON
    status, err = srv.api(API + f"runs/{srv.extra['run']}/media/{foreign}")
    assert status == 404 and err["status"] == 404 and "no media" in err["error"]
    for bad in ("..%2F..%2Fstore.db", "abc", "Z" * 64):
        status, err = srv.api(API + f"runs/{srv.extra['run']}/media/{bad}")
        assert status in (400, 404) and isinstance(err, dict) and "error" in err
    status, err = srv.api(API + "runs/nope/media")
    assert status == 404 and "error" in err


@pytest.mark.parametrize("path", ["media", "media/" + "0" * 64])
def test_media_routes_need_credentials(srv, path):
    url = srv.url + API + f"runs/{srv.extra['run']}/{path}"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 403
