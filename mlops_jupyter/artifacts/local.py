"""A local (or network-mounted) folder as an artifact store: key `a/b/c` is file
`ROOT/a/b/c`. Writes go to a temp file in the target folder and are renamed (atomic);
put-if-absent is a hard link, which fails when the name exists."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import ArtifactNotFoundError, ArtifactStoreError, InvalidInputError
from .base import CHUNK, ArtifactStore, ObjectInfo, blob_key, check_key

_TMP = ".incoming-"


class LocalArtifactStore(ArtifactStore):
    """Artifacts in the folder `root` (created on first write)."""

    kind = "local"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _err(self, e: OSError, what: str, key: str) -> ArtifactStoreError:
        return ArtifactStoreError(f"cannot {what} {key!r} in {self.location}: {e.strerror or e}")

    # -- writes ------------------------------------------------------------------------------
    def _commit(self, tmp: str, dest: Path, if_absent: bool) -> bool:
        if if_absent:
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        os.replace(tmp, dest)
        return True

    def _write(self, key: str, fill, if_absent: bool) -> bool:
        dest = self._path(key)
        if if_absent and dest.exists():
            return False
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=_TMP)
        except OSError as e:
            raise self._err(e, "write", key) from e
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
            return self._commit(tmp, dest, if_absent)
        except OSError as e:
            raise self._err(e, "write", key) from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put_file(self, key: str, src: Path, *, if_absent: bool = False) -> bool:
        def fill(out) -> None:
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)

        return self._write(key, fill, if_absent)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> bool:
        def fill(out) -> None:
            for chunk in chunks:
                out.write(chunk)

        return self._write(key, fill, if_absent)

    def _put_blob_new(self, src: Path) -> tuple[str, int]:
        # one pass: hash while copying into a temp file, then name it by its digest
        incoming = self.root / "artifacts"
        h = hashlib.sha256()
        size = 0
        try:
            incoming.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=incoming, prefix=_TMP)
        except OSError as e:
            raise self._err(e, "write", "artifacts/") from e
        try:
            with os.fdopen(fd, "wb") as out:
                # O_NONBLOCK: a file swapped for a FIFO since it was checked fails at once
                src_fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
                with os.fdopen(src_fd, "rb") as f:
                    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        raise InvalidInputError(f"artifact {src} is no longer a regular file")
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            digest = h.hexdigest()
            dest = self._path(blob_key(digest))
            dest.parent.mkdir(exist_ok=True)
            self._commit(tmp, dest, if_absent=True)
        except OSError as e:
            raise self._err(e, "write", str(src)) from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return digest, size

    # -- reads -------------------------------------------------------------------------------
    def get_file(self, key: str, dest: Path) -> int:
        src = self._path(key)
        dest = Path(dest)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no object {key!r} in {self.location}") from None
        except OSError as e:
            raise self._err(e, "read", key) from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest.stat().st_size

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no object {key!r} in {self.location}") from None
        except OSError as e:
            raise self._err(e, "read", key) from e

        def gen() -> Iterator[bytes]:
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return gen()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
                return None
            raise self._err(e, "read", key) from e
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for d, dirs, names in os.walk(base, followlinks=False):
            dirs[:] = sorted(x for x in dirs if not x.startswith(_TMP))
            for n in sorted(names):
                if n.startswith(_TMP):
                    continue  # a write in progress
                f = Path(d) / n
                try:
                    st = f.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield ObjectInfo(f.relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        p = self._path(key)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._err(e, "delete", key) from e
        # drop folders left empty, up to the store root
        for parent in p.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def put_tree(self, prefix: str, folder: Path) -> list[str]:
        # copied into a temp folder beside the target, then renamed: a model of many files
        # appears whole or not at all; an existing tree gets its files replaced one by one
        from .base import tree_files

        check_key(prefix)
        dest = self._path(prefix)
        names = [rel for rel, _ in tree_files(Path(folder))]
        if dest.exists():
            return super().put_tree(prefix, folder)
        tmp = dest.parent / f"{_TMP}{dest.name}-{os.getpid()}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp, symlinks=False)
            os.replace(tmp, dest)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._err(e, "write", prefix) from e
        return names
