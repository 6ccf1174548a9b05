"""The stage cache of an exported pipeline: a stage's key is sha256(code of its module +
the params it reads + the versions (content hashes) of its inputs + the random state it
starts from); its outputs live under `<pipeline>/.cache/<stage>/<key>/`."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Stage

KEEP_VERSIONS = 5  # cached results kept per stage (older keys are pruned)


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
