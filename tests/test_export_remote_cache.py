"""An exported pipeline's stage cache on a real S3 server (SeaweedFS): two workers in
different folders, each with its own local cache, share `--cache-dir s3://...`; the second
one runs nothing. A damaged manifest or a changed output object on the server makes that
stage run again (with a warning) and repairs the entry; it never yields a wrong value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from export_helpers import kernel_env, make_nb, run_pipeline

from mlops_jupyter.artifacts import open_artifacts
from mlops_jupyter.export import export_notebook, serialize

CELLS = [
    ("import numpy as np\nraw = np.random.rand(64)\nordered = np.sort(raw)", ["stage=load"]),
    # changed in place but equal: the entry points at load's file instead of a copy
    ("ordered.sort()", ["stage=tidy"]),
    (
        "scaled = raw * 2.0\n"
        "model = {'mean': float(scaled.mean()), 'n': len(scaled)}\n"
        "info = {'draw': float(np.random.rand())}",
        ["stage=prep"],
    ),
    (
        "print('R:', round(model['mean'], 9), info['draw'], ordered[0], float(np.random.rand()))",
        ["stage=fit"],
    ),
]
STAGES = ("load", "tidy", "prep", "fit")


def _mirror(cache: Path) -> Path:
    """The local mirror of the (only) remote stage cache under a worker's local cache."""
    found = [p for p in (cache / "pipelines").iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def _results(cache: Path) -> dict[str, tuple[str, dict]]:
    """stage -> (key, {output: version}) of the entries in a worker's mirror."""
    out = {}
    for stage in STAGES:
        entries = [p for p in (_mirror(cache) / stage).iterdir() if not p.name.startswith(".")]
        assert len(entries) == 1, entries
        m = json.loads((entries[0] / "manifest.json").read_text())
        out[stage] = (m["key"], {k: e["version"] for k, e in m["outputs"].items()})
    return out


def _values(cache: Path, stage: str) -> dict:
    folder = next(p for p in (_mirror(cache) / stage).iterdir() if not p.name.startswith("."))
    m = json.loads((folder / "manifest.json").read_text())
    return serialize.load_all({k: (folder, e) for k, e in m["outputs"].items()})


def _worker(monkeypatch, tmp_path: Path, name: str) -> Path:
    """A fresh local cache: the next pipeline run behaves as on another machine."""
    cache = tmp_path / f"cache-{name}"
    monkeypatch.setenv("MLOPS_JUPYTER_CACHE", str(cache))
    return cache


def test_workers_in_two_folders_share_an_s3_stage_cache(s3_url, tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb = make_nb(CELLS, tmp_path / "nb.ipynb")
    pipe_a = export_notebook(nb, tmp_path / "A" / "pipe").path
    pipe_b = export_notebook(nb, tmp_path / "B" / "pipe").path

    cache_a = _worker(monkeypatch, tmp_path, "a")
    first = run_pipeline(pipe_a, "--cache-dir", s3_url)
    assert "4 run, 0 cached" in first.stderr
    printed = [ln for ln in first.stdout.splitlines() if ln.startswith("R:")]
    assert len(printed) == 1
    remote = open_artifacts(s3_url)
    stored = {i.key.split("/")[0] for i in remote.list()}
    assert stored == set(STAGES)
    for stage in STAGES:  # each entry: its files and a manifest listing their sha256
        mkey = next(i.key for i in remote.list(stage) if i.key.endswith("/manifest.json"))
        assert json.loads(b"".join(remote.iter_bytes(mkey)))["files"]

    tidy = json.loads(next((_mirror(cache_a) / "tidy").glob("*/manifest.json")).read_text())
    assert tidy["outputs"]["ordered"]["file"].startswith("../../load/")

    cache_b = _worker(monkeypatch, tmp_path, "b")
    second = run_pipeline(pipe_b, "--cache-dir", s3_url)
    assert "0 run, 4 cached" in second.stderr and " done in " not in second.stderr
    assert not [ln for ln in second.stdout.splitlines() if ln.startswith("R:")]
    assert _results(cache_b) == _results(cache_a)
    np.testing.assert_array_equal(_values(cache_b, "load")["raw"], _values(cache_a, "load")["raw"])
    vb, va = _values(cache_b, "prep"), _values(cache_a, "prep")
    assert vb == va and set(vb) == {"model", "info"}
    # the pipeline folders hold no cache of their own
    assert not (pipe_a / ".cache").exists() and not (pipe_b / ".cache").exists()

    # an Airflow-style task on a third machine: one stage, upstream from the bucket, and the
    # cache named by the environment instead of --cache-dir
    _worker(monkeypatch, tmp_path, "c")
    monkeypatch.setenv("MLOPS_JUPYTER_PIPELINE_CACHE", s3_url)
    task = run_pipeline(pipe_b, "--stage", "fit")
    assert re.search(r"fit\s+cached", task.stderr), task.stderr


def test_a_damaged_remote_entry_is_recomputed_never_used(s3_url, tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb = make_nb(CELLS, tmp_path / "nb.ipynb")
    pipe = export_notebook(nb, tmp_path / "pipe").path
    cache_a = _worker(monkeypatch, tmp_path, "a")
    run_pipeline(pipe, "--cache-dir", s3_url)
    want = _results(cache_a)
    remote = open_artifacts(s3_url)

    # a manifest that is no longer JSON: prep runs again; its outputs are the same, so
    # fit (keyed by prep's output versions) is still a hit
    mkey = next(i.key for i in remote.list("prep") if i.key.endswith("/manifest.json"))
    remote.put_stream(mkey, [b'{"stage": "prep", "outputs": '])
    cache_b = _worker(monkeypatch, tmp_path, "b")
    again = run_pipeline(pipe, "--cache-dir", s3_url)
    assert "cached result of stage 'prep'" in again.stderr and "unusable" in again.stderr
    assert re.search(r"prep\s+done", again.stderr) and "1 run, 3 cached" in again.stderr
    assert _results(cache_b) == want
    json.loads(b"".join(remote.iter_bytes(mkey)))  # repaired on the server

    # an output object whose bytes changed (same size): load runs again
    okey = next(i.key for i in remote.list("load") if i.key.endswith("/raw.npy"))
    data = bytearray(b"".join(remote.iter_bytes(okey)))
    data[-8:] = bytes(8)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(bytes(data))
    remote.put_file(okey, bad)
    cache_c = _worker(monkeypatch, tmp_path, "c")
    third = run_pipeline(pipe, "--cache-dir", s3_url)
    assert "raw.npy does not match its sha256" in third.stderr
    assert re.search(r"load\s+done", third.stderr) and "1 run, 3 cached" in third.stderr
    assert _results(cache_c) == want
    np.testing.assert_array_equal(_values(cache_c, "load")["raw"], _values(cache_a, "load")["raw"])

    # a manifest naming a file outside its entry is refused too
    man = json.loads(b"".join(remote.iter_bytes(mkey)))
    man["files"] = {"../../load/x/raw.npy": "0" * 64}
    remote.put_stream(mkey, [json.dumps(man).encode()])
    _worker(monkeypatch, tmp_path, "d")
    fourth = run_pipeline(pipe, "--cache-dir", s3_url)
    assert "outside the entry" in fourth.stderr and "1 run, 3 cached" in fourth.stderr

    _worker(monkeypatch, tmp_path, "e")
    last = run_pipeline(pipe, "--cache-dir", s3_url)
    assert "0 run, 4 cached" in last.stderr and "unusable" not in last.stderr


def test_a_missing_bucket_is_a_clear_error_without_the_secret(s3_url, tmp_path, monkeypatch):
    import os

    kernel_env(monkeypatch)
    _worker(monkeypatch, tmp_path, "a")
    pipe = export_notebook(make_nb(CELLS, tmp_path / "nb.ipynb"), tmp_path / "pipe").path
    proc = run_pipeline(pipe, "--cache-dir", "s3://no-such-bucket-h3/cache", check=False)
    assert proc.returncode != 0
    assert "no-such-bucket-h3" in proc.stderr
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout
