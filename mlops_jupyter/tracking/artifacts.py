"""Which files `log_artifact` copies (the artifact store stores them).

Only regular files are read: opening a FIFO would block forever, a device could stream
without end, and the live store files must never be copied into the store."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from ..config import STORE_DIRNAME
from ..errors import ArtifactNotFoundError, InvalidInputError


def _text(name: str) -> str:
    """A file name as storable text (undecodable bytes of a POSIX name are escaped)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def artifact_files(
    path: str | os.PathLike, name: str | None, store_root: Path
) -> tuple[list[tuple[str, Path]], str]:
    """The (artifact name, file) pairs to copy for `log_artifact(path, name)`, and the base
    name. Raises InvalidInputError / ArtifactNotFoundError for what cannot be logged."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(
            f"artifact path must be a str or PathLike, got {type(path).__name__}"
        )
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if raw == "":
        raise InvalidInputError(
            "artifact path is empty; name a file or directory (use '.' for the working directory)"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInputError(f"artifact name must be a non-empty string, got {name!r}")
    if name is not None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"artifact name {name!r} is not valid UTF-8 text (it contains a lone surrogate)"
            ) from None
    p = Path(raw)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"artifact path does not exist: {p}") from None
    except OSError as e:
        raise InvalidInputError(f"artifact path {p} cannot be read: {e}") from None
    resolved = p.resolve()
    root = store_root.resolve()
    if _inside(resolved, root):
        raise InvalidInputError(
            f"artifact path {p} is inside the store folder {root}; copy it elsewhere first"
        )
    base = name or _text(resolved.name if p.name in ("", ".", "..") else p.name)
    if stat.S_ISREG(st.st_mode):
        return [(base, p)], base
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(
            f"artifact path {p} is not a regular file or directory ({_kind(st.st_mode)}); "
            "only regular files can be logged"
        )
    files: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for d, dirs, names in os.walk(p, followlinks=False):
        here = Path(d)
        # never descend into a store folder (this one or any other) or through symlinks
        keep = []
        for sub in sorted(dirs):
            sp = here / sub
            if sub == STORE_DIRNAME or sp.is_symlink() or _inside(sp.resolve(), root):
                skipped.append(str(sp))
            else:
                keep.append(sub)
        dirs[:] = keep
        for fn in sorted(names):
            f = here / fn
            try:
                fst = f.stat()  # a symlink to a regular file is followed
            except OSError:
                skipped.append(str(f))
                continue
            if not stat.S_ISREG(fst.st_mode) or _inside(f.resolve(), root):
                skipped.append(str(f))
                continue
            files.append((f"{base}/{_text(f.relative_to(p).as_posix())}", f))
    if skipped:
        warnings.warn(
            f"mlops-jupyter: log_artifact({raw!r}) skipped {len(skipped)} entr"
            f"{'y' if len(skipped) == 1 else 'ies'} that are not regular files or are store "
            f"folders/symlinked folders (first: {skipped[0]})",
            RuntimeWarning,
            stacklevel=3,
        )
    files.sort(key=lambda x: x[0])
    return files, base


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "a special file"
