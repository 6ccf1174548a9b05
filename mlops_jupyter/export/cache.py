"""The stage cache of an exported pipeline: a stage's key is sha256(code of its module +
the params it reads + the versions (content hashes) of its inputs + the random state it
starts from); its outputs live under `<cache>/<stage>/<key>/` with a manifest.json.

`<cache>` is `<pipeline>/.cache/`, `--cache-dir`, or MLOPS_JUPYTER_PIPELINE_CACHE: a folder,
or object storage (`s3://bucket/prefix`, `gs://`, `az://`) so workers on different machines
share one cache. With object storage a stage's folder is uploaded as the tree
`<stage>/<key>` of that artifact store (its manifest last, listing every file's sha256) and
a hit downloads it into a local mirror after checking every file against the manifest: a
damaged or half-written entry is a miss (the stage runs again), never a wrong value."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactNotFoundError

if TYPE_CHECKING:
    from ..artifacts import ArtifactStore
    from .runtime import Stage

KEEP_VERSIONS = 5  # cached results kept per stage (older keys are pruned)
ENV = "MLOPS_JUPYTER_PIPELINE_CACHE"
MANIFEST = "manifest.json"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _code(path: Path) -> bytes:
    """The code of a module for hashing: its syntax tree, so comments, formatting and the
    module docstring (cell numbers) can change without invalidating the cache."""
    src = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return src.encode()
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        tree.body = body[1:]
    return ast.dump(tree, include_attributes=False).encode()


def code_hash(pkgdir: Path, stage: Stage) -> str:
    """Hash of the stage module and of the stage modules it imports helpers from."""
    h = hashlib.sha256()
    for mod in [stage.name, *sorted(stage.uses)]:
        h.update(mod.encode() + b"\0" + _code(pkgdir / "stages" / f"{mod}.py") + b"\0")
    return h.hexdigest()


def stage_key(
    code: str, params: dict[str, Any], inputs: dict[str, str], rng: str | None = None
) -> str:
    """Cache key of one stage execution: its code, params, input versions and the global
    random state it starts from (the state the previous stage left)."""
    blob = json.dumps(
        {"code": code, "params": params, "inputs": inputs, "rng": rng},
        sort_keys=True,
        default=str,
    )
    return _sha(blob.encode())[:32]


def manifest(folder: Path) -> dict | None:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if all((folder / e["file"]).is_file() for e in m.get("outputs", {}).values()):
        return m
    return None


def prune(stage_dir: Path, keep: str) -> None:
    dirs = [d for d in stage_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[KEEP_VERSIONS:]:
        if d.name != keep:
            shutil.rmtree(d, ignore_errors=True)


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


class StageCache:
    """Where a pipeline's stage outputs are cached. `root` is always a local folder laid out
    as `<stage>/<key>/` (the cache itself, or the local mirror of a remote one); `remote`
    is the artifact store of an object-storage cache, else None."""

    def __init__(self, where: str | os.PathLike | None, pkgdir: Path) -> None:
        from ..artifacts import is_remote

        loc = where if where else os.environ.get(ENV) or pkgdir / ".cache"
        self.remote: ArtifactStore | None = None
        if is_remote(loc):
            from ..artifacts import open_artifacts
            from ..config import cache_dir

            self.remote = open_artifacts(str(loc))
            self.location = self.remote.location
            ident = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            self.root = cache_dir() / "pipelines" / ident
        else:
            self.root = Path(loc).expanduser()
            self.location = str(self.root)

    def folder(self, stage: str, key: str) -> Path:
        """The local folder of one stage execution's outputs."""
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> dict | None:
        """The manifest of a cached execution, its files ready in `folder(stage, key)`; None
        on a miss. A remote entry is downloaded and checked first."""
        folder = self.folder(stage, key)
        m = manifest(folder)
        if m is not None or self.remote is None:
            return m
        from . import serialize

        tmp = serialize.atomic_dir(folder)
        try:
            try:
                self.remote.get_tree(f"{stage}/{key}", tmp)
            except ArtifactNotFoundError:
                return None
            problem = _check_download(tmp, folder, self.root, stage, key)
            if problem is not None:
                sys.stderr.write(
                    f"warning: the cached result of stage {stage!r} in {self.location} is "
                    f"unusable ({problem}); running the stage again\n"
                )
                return None
            serialize.commit_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return manifest(folder)

    def publish(self, stage: str, key: str, tmp: Path) -> None:
        """Store a finished execution's folder `tmp` (holding its manifest.json) remotely;
        nothing to do for a local cache. The manifest gets every file's sha256 and is
        uploaded last, so a reader never takes a half-uploaded entry for a whole one."""
        if self.remote is None:
            return
        from ..artifacts.base import tree_files

        mpath = tmp / MANIFEST
        m = json.loads(mpath.read_text())
        files = {rel: _file_sha(f) for rel, f in tree_files(tmp) if rel != MANIFEST}
        m["files"] = files
        data = json.dumps(m, indent=1, default=str)
        mpath.unlink()
        prefix = f"{stage}/{key}"
        try:
            if files:
                self.remote.put_tree(prefix, tmp)
            self.remote.put_stream(f"{prefix}/{MANIFEST}", [data.encode()])
        finally:
            mpath.write_text(data)

    def prune(self, stage: str, keep: str) -> None:
        """Drop old local results of `stage` (a remote cache keeps its objects: other workers
        may still use them; expire them with the bucket's lifecycle rules)."""
        prune(self.root / stage, keep)


def _check_download(tmp: Path, final: Path, root: Path, stage: str, key: str) -> str | None:
    """Why a downloaded entry cannot be used, or None when every file matches."""
    try:
        m = json.loads((tmp / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest: an upload still in progress or interrupted"
    except (OSError, ValueError) as e:
        return f"its manifest cannot be read: {e}"
    if not isinstance(m, dict) or m.get("stage") != stage or m.get("key") != key:
        return "its manifest names another stage or key"
    files = m.get("files")
    if not isinstance(files, dict) or not isinstance(m.get("outputs"), dict):
        return "its manifest has no file list"
    for rel, digest in files.items():
        if not isinstance(rel, str) or ".." in rel.split("/") or rel.startswith("/"):
            return f"its manifest names a file outside the entry: {rel!r}"
        f = tmp / rel
        if not f.is_file():
            return f"{rel} is missing"
        if _file_sha(f) != digest:
            return f"{rel} does not match its sha256"
    entries = [e for e in m["outputs"].values() if isinstance(e, dict)]
    if m.get("rng"):
        entries.append(m["rng"])
    base = root.resolve()
    for e in entries:
        rel = e.get("file")
        if not isinstance(rel, str):
            return "an output has no file"
        if rel in files:
            continue
        # an unchanged input shared with an upstream stage: that stage's local copy
        shared = (final / rel).resolve()
        if base not in shared.parents or not shared.is_file():
            return f"{rel} is neither in the entry nor a cached upstream output"
        if e.get("key") is None and _file_sha(shared) != e.get("version"):
            return f"{rel} does not match its version"
    return None
