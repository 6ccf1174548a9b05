"""The artifact download route against a real `jupyter lab` subprocess, with the artifacts
in the store's folder and on a real S3 server (SeaweedFS): streamed bytes with their
length, an attachment name and a Content-Type a browser never runs; a presigned redirect
on object storage; 404 JSON for unknown runs and names; 403 without credentials; bytes
changed on the server are never delivered whole."""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from browser_helpers import running_lab

import mlops_jupyter as mj
from mlops_jupyter.artifacts import forget
from mlops_jupyter.artifacts.base import blob_key

pytest.importorskip("jupyter_server")
API = "mlops/api/v1/"
BIG = 20 * 1024 * 1024 + 123  # three read chunks


@contextmanager
def _env(values: dict[str, str]):
    """The artifact settings of the server, in this process too (to log and to corrupt)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        forget()
        try:
            yield
        finally:
            forget()


@pytest.fixture(scope="module", params=["local", "s3"])
def srv(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"art-srv-{request.param}")
    store = tmp / "mlops" / "store.db"
    env: dict[str, str] = {"MLOPS_JUPYTER_CACHE": str(tmp / "cache")}
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        env.update(s3.env())
        env["MLOPS_JUPYTER_ARTIFACTS"] = s3.url(f"srv-{uuid.uuid4().hex[:10]}")
        env["MLOPS_JUPYTER_ARTIFACTS_RETRY_S"] = "3"
    src = tmp / "src"
    (src / "plots").mkdir(parents=True)
    files = {
        "model.bin": os.urandom(BIG),
        "report.html": b"<script>alert(1)</script>",
        "table.csv": b"a,b\n1,2\n",
        "plots/\u00fcber chart.txt": "gr\u00fc\u00dfe\n".encode(),
        "victim.bin": os.urandom(9 * 1024 * 1024),
        "resized.bin": os.urandom(1000),
        "small.bin": os.urandom(1000),
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    with _env(env):
        mj.set_store(store)
        with mj.start_run("arts") as run:
            for rel in files:
                if not rel.startswith("plots/"):
                    run.log_artifact(src / rel)
            run.log_artifact(src / "plots")
        with mj.start_run("other") as other:
            pass
        mj.set_store(None)
    with running_lab(tmp / "root", store, env=env, run=run.id, other=other.id) as server:
        server.extra.update(kind=request.param, env=env, files=files)
        yield server


def _url(srv, run: str, name: str, query: str = "") -> str:
    name = "/".join(quote(p, safe="") for p in name.split("/"))
    return f"{srv.url}{API}runs/{quote(run, safe='')}/artifacts/{name}{query}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(srv, url: str, auth: bool = True) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"token {srv.token}"} if auth else {}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_each_artifact_streams_with_its_headers(srv):
    files = srv.extra["files"]
    expected_type = {
        "model.bin": "application/octet-stream",
        "report.html": "application/octet-stream",  # never rendered as a page
        "table.csv": "text/csv",
        "plots/\u00fcber chart.txt": "text/plain",
    }
    for name, ctype in expected_type.items():
        code, headers, body = fetch(srv, _url(srv, srv.extra["run"], name))
        assert code == 200, (name, body[:200])
        assert body == files[name]
        assert int(headers["Content-Length"]) == len(files[name])
        assert headers["Content-Type"].split(";")[0] == ctype
        assert headers["X-Content-Type-Options"] == "nosniff"
        base = name.rsplit("/", 1)[-1]
        disp = headers["Content-Disposition"]
        assert disp.startswith("attachment;") and f"filename*=UTF-8''{quote(base, safe='')}" in disp


def test_unknown_run_or_name_is_a_json_404(srv):
    import json

    for run, name in [
        (srv.extra["run"], "nope.bin"),
        ("no-such-run", "model.bin"),
        (srv.extra["other"], "model.bin"),
        (srv.extra["run"], "plots"),
    ]:
        code, headers, body = fetch(srv, _url(srv, run, name))
        assert code == 404, (run, name)
        assert headers["Content-Type"].startswith("application/json")
        err = json.loads(body)
        assert err["status"] == 404 and err["error"]


def test_the_route_needs_credentials(srv):
    code, _, _ = fetch(srv, _url(srv, srv.extra["run"], "table.csv"), auth=False)
    assert code == 403


def test_redirect_to_a_presigned_url(srv):
    data = srv.extra["files"]["table.csv"]
    code, headers, body = fetch(srv, _url(srv, srv.extra["run"], "table.csv", "?redirect=1"))
    if srv.extra["kind"] == "local":
        assert code == 200 and body == data  # a folder cannot presign: streamed instead
        return
    assert code == 302
    where = headers["Location"]
    assert urlsplit(where).netloc == urlsplit(srv.extra["env"]["AWS_ENDPOINT_URL"]).netloc
    assert srv.extra["env"]["AWS_SECRET_ACCESS_KEY"] not in where
    with urllib.request.urlopen(where, timeout=30) as r:  # no credentials: the URL is enough
        assert r.read() == data


def _overwrite(srv, name: str, data: bytes, tmp: Path) -> None:
    """Replace the stored bytes of artifact `name` (as a damaged disk or a hand edit would)."""
    from mlops_jupyter.tracking import api

    digest = mj.get_run(srv.extra["run"])
    digest = next(a["digest"] for a in digest["artifacts"] if a["name"] == name)
    f = tmp / "bad"
    f.write_bytes(data)
    api.current_store().artifacts.put_file(blob_key(digest), f)


def test_changed_bytes_are_never_delivered_whole(srv, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(srv.extra["store"]))
    mj.set_store(None)
    with _env(srv.extra["env"]):
        if srv.extra["kind"] == "local":  # the store's own folder
            monkeypatch.delenv("MLOPS_JUPYTER_ARTIFACTS", raising=False)
        victim = bytearray(srv.extra["files"]["victim.bin"])
        victim[-1] ^= 0xFF  # same size, last byte changed: found only at the very end
        _overwrite(srv, "victim.bin", bytes(victim), tmp_path)
        _overwrite(srv, "resized.bin", b"short", tmp_path)
        _overwrite(srv, "small.bin", bytes(1000), tmp_path)
        mj.set_store(None)
    url = _url(srv, srv.extra["run"], "victim.bin")
    req = urllib.request.Request(url, headers={"Authorization": f"token {srv.token}"})
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            r.read()
    code, _, body = fetch(srv, _url(srv, srv.extra["run"], "resized.bin"))
    assert code == 500 and b"refusing it" in body
    code, _, body = fetch(srv, _url(srv, srv.extra["run"], "small.bin"))  # one chunk: nothing sent
    assert code == 500 and b"does not match its digest" in body
    # the server still answers after a cut connection
    code, _, body = fetch(srv, _url(srv, srv.extra["run"], "table.csv"))
    assert code == 200 and body == srv.extra["files"]["table.csv"]


def test_a_browser_session_cookie_is_enough(srv):
    """The sidebar's plain download link carries no token header: the login cookie that
    opening JupyterLab set authenticates it, as for any other page of the server."""
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{srv.url}lab?token={srv.token}", timeout=60) as r:
        assert r.status == 200
    assert len(jar) > 0
    with opener.open(_url(srv, srv.extra["run"], "table.csv"), timeout=60) as r:
        assert r.read() == srv.extra["files"]["table.csv"]
