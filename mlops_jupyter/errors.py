"""Exception hierarchy: every error the package raises on purpose derives from MlopsJupyterError."""

from __future__ import annotations

__all__ = [
    "MlopsJupyterError",
    "InvalidInputError",
    "NoActiveRunError",
    "RunNotFoundError",
    "ArtifactNotFoundError",
    "StoreError",
    "NotAStoreError",
    "StoreVersionError",
    "ReadOnlyStoreError",
    "MalformedStoreError",
]


class MlopsJupyterError(Exception):
    """Base class of all mlops-jupyter errors."""


class InvalidInputError(MlopsJupyterError, ValueError, TypeError):
    """A bad argument: wrong type, empty key, negative step, ...

    It is both a ValueError and a TypeError so callers catching either still work.
    """


class NoActiveRunError(MlopsJupyterError, RuntimeError):
    """A logging call was made while no run is active."""

    def __init__(self, what: str = "log") -> None:
        super().__init__(
            f"cannot {what}: no run is active. Start one with "
            "`with mj.start_run(name=...):` (or `mj.start_run()` ... `mj.end_run()`), "
            "or wrap the notebook cell in `%%mlops_run`."
        )


class RunNotFoundError(MlopsJupyterError, LookupError):
    """No run matches the given id, id prefix or name."""


class ArtifactNotFoundError(MlopsJupyterError, FileNotFoundError):
    """An artifact path does not exist."""


class StoreError(MlopsJupyterError):
    """The store cannot be opened, read or written; the SQLite error is the __cause__."""


class NotAStoreError(StoreError):
    """The file exists but is not an mlops-jupyter store; it is left untouched."""


class StoreVersionError(StoreError):
    """The store was written by a newer mlops-jupyter than this one."""


class ReadOnlyStoreError(StoreError):
    """The store can be read but not written (file, folder or file system read-only)."""


class MalformedStoreError(StoreError):
    """SQLite found the store file damaged; later writes to it are refused."""


class ArtifactStoreError(StoreError):
    """The artifact store (a folder or a bucket) cannot be read or written: unreachable
    endpoint, wrong credentials, missing bucket... The message names the location, never
    a secret; the client library's error is the __cause__."""


class ArtifactIntegrityError(ArtifactStoreError):
    """Downloaded or stored bytes do not hash to the digest they are stored under."""
