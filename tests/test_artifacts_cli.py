"""`mlops-jupyter artifacts ls|get|where|gc` on a local folder and on a real S3 server
(SeaweedFS): listing from the store rows, verified downloads, the location without
secrets, and gc finding only what no row references (dry run first, grace period,
checkpoints left alone, a reference added since the scan honoured)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import mlops_jupyter as mj
from mlops_jupyter import registry
from mlops_jupyter.cli import main
from mlops_jupyter.tracking.api import current_store


@pytest.fixture(params=["local", "s3"])
def where(request, monkeypatch, tmp_path) -> str:
    """The artifact location of this test: the store's own folder, or an S3 prefix."""
    if request.param == "s3":
        url = request.getfixturevalue("s3_url")
        monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", url)
        return url
    if os.environ.get("MLOPS_JUPYTER_ARTIFACTS"):  # the PostgreSQL suite's shared folder
        return os.environ["MLOPS_JUPYTER_ARTIFACTS"]
    return "local"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _logged(tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    src = tmp_path / "src"
    (src / "folder" / "sub").mkdir(parents=True)
    files = {
        "weights.bin": os.urandom(300_000),
        "folder/a.txt": b"alpha\n",
        "folder/sub/b.csv": b"x,y\n1,2\n",
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    with mj.start_run("arts") as run:
        run.log_artifact(src / "weights.bin")
        run.log_artifact(src / "folder")
    return run.id, files


def test_ls_get_where(where, tmp_path, capsys, monkeypatch):
    rid, files = _logged(tmp_path)
    code, out, _ = cli(capsys, "artifacts", "ls", rid)
    assert code == 0
    for name in files:
        assert name in out
    assert "293.0 KiB" in out
    code, out, _ = cli(capsys, "artifacts", "ls", rid, "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(files) and all(len(r["digest"]) == 64 for r in rows.values())
    assert rows["weights.bin"]["size"] == 300_000

    dest = tmp_path / "out" / "w.bin"
    dest.parent.mkdir()
    code, out, _ = cli(capsys, "artifacts", "get", rid, "weights.bin", "-o", str(dest))
    assert code == 0 and "verified" in out
    assert dest.read_bytes() == files["weights.bin"]
    # an existing file is never overwritten without --force
    dest.write_bytes(b"mine")
    code, _, err = cli(capsys, "artifacts", "get", rid, "weights.bin", "-o", str(dest))
    assert code == 2 and "--force" in err and dest.read_bytes() == b"mine"
    code, _, _ = cli(capsys, "artifacts", "get", rid, "weights.bin", "-o", str(dest), "--force")
    assert code == 0 and dest.read_bytes() == files["weights.bin"]
    # a logged folder comes back as a folder; the default output is ./NAME
    monkeypatch.chdir(tmp_path / "out")
    code, out, _ = cli(capsys, "artifacts", "get", rid, "folder")
    assert code == 0 and "2 files" in out
    assert (tmp_path / "out" / "folder" / "sub" / "b.csv").read_bytes() == files["folder/sub/b.csv"]
    code, _, err = cli(capsys, "artifacts", "get", rid, "nope.txt")
    assert code == 2 and "no artifact 'nope.txt'" in err and "weights.bin" in err

    code, out, _ = cli(capsys, "artifacts", "where", "--json")
    shown = json.loads(out)
    assert code == 0
    if where.startswith("s3://"):
        assert shown["location"] == where and shown["kind"] == "s3"
        assert shown["from"] == "MLOPS_JUPYTER_ARTIFACTS"
    else:
        assert shown["kind"] == "local"
    code, out, _ = cli(capsys, "artifacts", "where")
    assert code == 0 and (os.environ.get("AWS_SECRET_ACCESS_KEY") or "\0") not in out


def test_get_refuses_a_blob_whose_bytes_changed(where, tmp_path, capsys):
    rid, files = _logged(tmp_path)
    st = current_store()
    digest = next(r for r in mj.get_run(rid)["artifacts"] if r["name"] == "folder/a.txt")["digest"]
    # same size, other bytes, written straight to the stored object
    from mlops_jupyter.artifacts.base import blob_key

    bad = tmp_path / "bad"
    bad.write_bytes(b"ALPHA\n")
    st.artifacts.put_file(blob_key(digest), bad)
    dest = tmp_path / "a.txt"
    code, _, err = cli(capsys, "artifacts", "get", rid, "folder/a.txt", "-o", str(dest))
    assert code == 2 and "does not match" in err
    assert not dest.exists()


def _seed_garbage(tmp_path: Path) -> dict[str, str]:
    """A referenced artifact and model, an orphan blob and model folder, a checkpoint."""
    st = current_store()
    a = st.artifacts
    with mj.start_run("keep") as run:
        kept = tmp_path / "kept.txt"
        kept.write_bytes(b"referenced\n")
        run.log_artifact(kept)
    orphan = tmp_path / "orphan.bin"
    orphan.write_bytes(os.urandom(5000))
    digest, _ = a.put_blob(orphan)  # stored, but no row names it
    version = mj.register_model("clf", {"w": [1, 2, 3]})
    path = registry.model_version("clf", version)["path"]
    if not list(a.list(path)):  # a registry that writes beside the store: copy it over
        a.put_tree(path, st.root / path)
    junk = tmp_path / "junk"
    (junk / "x").mkdir(parents=True)
    (junk / "x" / "weights.safetensors").write_bytes(b"w" * 700)
    (junk / "meta.json").write_text("{}")
    a.put_tree("models/clf/0123456789abcdef-c0ffee", junk)
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"checkpoint")
    a.put_file("checkpoints/somerun/epoch-1.pt", ck)
    return {"orphan": digest, "model": path, "run": run.id}


def test_gc_dry_run_grace_and_delete(where, tmp_path, capsys):
    seeded = _seed_garbage(tmp_path)
    a = current_store().artifacts
    from mlops_jupyter.artifacts.base import blob_key

    # default grace period (24 h): everything just written is kept
    code, out, _ = cli(capsys, "artifacts", "gc")
    assert code == 0 and "would remove 0 unreferenced" in out and "kept (younger than 24 h)" in out
    code, out, _ = cli(capsys, "artifacts", "gc", "--older-than", "0", "--json")
    found = json.loads(out)
    keys = {(o["kind"], o["key"]) for o in found["orphans"]}
    assert keys == {
        ("blob", blob_key(seeded["orphan"])),
        ("model", "models/clf/0123456789abcdef-c0ffee"),
    }
    assert found["bytes"] == 5000 + 700 + 2
    code, out, _ = cli(capsys, "artifacts", "gc", "--older-than", "0")
    assert "dry run: would remove 2 unreferenced item(s), 5.6 KiB" in out
    assert a.exists(blob_key(seeded["orphan"]))  # a dry run removes nothing

    code, out, _ = cli(capsys, "artifacts", "gc", "--older-than", "0", "--delete")
    assert code == 0 and "removed 2 unreferenced item(s)" in out
    assert not a.exists(blob_key(seeded["orphan"]))
    assert not list(a.list("models/clf/0123456789abcdef-c0ffee"))
    assert list(a.list(seeded["model"]))  # the registered version stays
    assert a.exists("checkpoints/somerun/epoch-1.pt")  # checkpoints are never gc's
    assert mj.load_model("clf") == {"w": [1, 2, 3]}
    dest = tmp_path / "kept.out"
    assert main(["artifacts", "get", seeded["run"], "kept.txt", "-o", str(dest)]) == 0
    assert dest.read_bytes() == b"referenced\n"
    code, out, _ = cli(capsys, "artifacts", "gc", "--older-than", "0")
    assert "would remove 0 unreferenced" in out


def test_gc_keeps_a_blob_referenced_after_the_scan(where, tmp_path):
    from mlops_jupyter.artifacts.base import blob_key
    from mlops_jupyter.artifacts.gc import find_orphans, remove

    st = current_store()
    f = tmp_path / "late.txt"
    f.write_bytes(b"logged again later\n")
    digest, _ = st.artifacts.put_blob(f)
    report = find_orphans(st, st.artifacts, grace_s=0)
    assert [o.key for o in report.orphans] == [blob_key(digest)]
    with mj.start_run("late") as run:  # same content: put_blob finds it, writes the row
        run.log_artifact(f)
    assert remove(st, st.artifacts, report) == (0, 0)
    assert st.artifacts.exists(blob_key(digest))


@pytest.mark.parametrize("bad", ["-1", "soon", "inf", "nan"])
def test_gc_rejects_a_bad_grace_period(bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(["artifacts", "gc", "--older-than", bad])
    assert e.value.code == 2
    assert "--older-than" in capsys.readouterr().err


def test_gc_help_names_what_it_leaves_alone(capsys):
    with pytest.raises(SystemExit):
        main(["artifacts", "gc", "--help"])
    out = capsys.readouterr().out
    assert "checkpoints/" in out and "dry run" in out and "--older-than" in out


KILLED_UPLOAD = """
import os, sys, time
from pathlib import Path
from mlops_jupyter.artifacts import open_artifacts

def chunks():
    for _ in range(3):  # past one part: a multipart upload
        yield os.urandom(4 << 20)
    Path(sys.argv[2]).write_text("uploading")
    time.sleep(600)
    yield b""

open_artifacts(sys.argv[1]).put_stream("artifacts/00/" + "0" * 62, chunks())
"""


def test_gc_finds_and_aborts_an_upload_killed_midway(s3_url, tmp_path, capsys, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    flag = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPLOAD, s3_url, str(flag)], env=env, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None and time.monotonic() < deadline, "upload never started"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    monkeypatch.setenv("MLOPS_JUPYTER_ARTIFACTS", s3_url)
    code, out, _ = cli(capsys, "artifacts", "gc", "--older-than", "0", "--json")
    found = json.loads(out)["orphans"]
    assert [(o["kind"], o["key"]) for o in found] == [("upload", "artifacts/00/" + "0" * 62)]
    code, out, _ = cli(capsys, "artifacts", "gc", "--older-than", "0", "--delete")
    assert code == 0 and "removed 1 unreferenced item(s)" in out
    assert current_store().artifacts.incomplete_uploads() == []
    assert not current_store().artifacts.exists("artifacts/00/" + "0" * 62)
