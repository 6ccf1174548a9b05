"""Where a model version's files live: written into a fresh folder and stored under
`models/<name>/<digest16>-<random>` in the store's artifact store (renamed into place on a
local one, uploaded from a temporary folder to object storage), and handed back as a local
folder checked against the digest recorded at registration."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts.base import model_key
from ..errors import ArtifactNotFoundError, InvalidInputError
from .flavors import ModelLoadError

if TYPE_CHECKING:
    from ..artifacts import ArtifactStore


def _digest(folder: Path) -> tuple[str, int]:
    """sha256 over the relative names and bytes of a version's files, and their size."""
    h = hashlib.sha256()
    size = 0
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    return h.hexdigest(), size


def _store_files(artifacts: ArtifactStore, name: str, save) -> tuple[dict, str, str, int]:
    """save(folder) into a fresh folder, then store it under `models/<name>/<digest16>-<rnd>`;
    returns (save's metadata, the key prefix, digest, size)."""
    # A local artifact store gets the folder written beside its final place and renamed
    # (no second copy of a large model); object storage gets it uploaded from a temp folder.
    home = artifacts.local_path(model_key(name))
    if home is not None:
        tmp = home / f".incoming-{secrets.token_hex(6)}"
        tmp.mkdir(parents=True)  # the umask's mode (mkdtemp's 0700 would shut a team out)
    else:  # in the cache folder: on disk, where /tmp may be memory
        from ..config import cache_dir

        (cache_dir() / "incoming").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="model-", dir=cache_dir() / "incoming"))
    try:
        meta = save(tmp)
        digest, size = _digest(tmp)
        prefix = model_key(name, f"{digest[:16]}-{secrets.token_hex(3)}")
        if home is not None:
            os.replace(tmp, artifacts.local_path(prefix))
        else:
            artifacts.put_tree(prefix, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta, prefix, digest, size


def _files(info: dict[str, Any], verify: bool) -> Path:
    """A local folder holding the files of version `info`, checked against its digest
    when `verify`. With object storage it is a cached copy; a damaged cached copy is
    downloaded again once before the version is refused."""
    from . import _remote, _store  # the package's lookups of the store or the server

    if (url := _remote()) is not None:
        from ..remote import registry as remote

        artifacts = remote.version_files(url, info)
    else:
        artifacts = _store().artifacts
    what = f"{info['name']} v{info['version']}"
    try:
        remote = artifacts.local_path(info["path"]) is None
    except InvalidInputError:  # a row edited by hand must not name a place outside
        raise ModelLoadError(f"{what}: its stored path {info['path']!r} is not valid") from None
    for attempt in (1, 2):
        try:
            folder = artifacts.tree_local(info["path"])
        except ArtifactNotFoundError:
            folder = None
        if folder is None or not folder.is_dir():
            where = f"{artifacts.location}: {info['path']}"
            raise ModelLoadError(f"{what}: stored files are missing ({where})")
        if not verify or _digest(folder)[0] == info["digest"]:
            return folder
        if not remote or attempt == 2:
            break
        shutil.rmtree(folder, ignore_errors=True)  # our cached copy: fetch it again
    shown = folder if not remote else f"{artifacts.location}: {info['path']}"
    raise ModelLoadError(f"{what}: stored files changed since registration ({shown})")
