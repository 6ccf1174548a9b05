"""What import and export share: the lazily imported `mlflow` client, tracking-URI checks,
status mapping and the tags that make both directions idempotent."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import redact_url as redact  # noqa: F401 - the URI shown and tagged, password hidden
from ..errors import InvalidInputError, MlopsJupyterError

# On our imported runs: the MLflow run id and where it came from.
TAG_MLFLOW_RUN = "mlflow.run_id"
TAG_MLFLOW_URI = "mlflow.tracking_uri"
# On MLflow runs we exported: our run id, our status, and "complete" once every part is in.
TAG_OUR_RUN = "mlops_jupyter.run_id"
TAG_OUR_STATUS = "mlops_jupyter.status"
TAG_EXPORTED = "mlops_jupyter.export"

STATUS_IN = {
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "killed",
    "RUNNING": "running",
    "SCHEDULED": "running",
}
STATUS_OUT = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "killed": "KILLED",
    "crashed": "FAILED",  # MLflow has no "crashed": the exact status is kept in a tag
    "stopped": "KILLED",
    "running": "RUNNING",
}


class MlflowError(MlopsJupyterError):
    """An MLflow tracking URI cannot be used, or MLflow refused a request."""


def mlflow_client(uri: str, *, must_exist: bool) -> Any:
    """An `MlflowClient` for `uri` after checking that the URI is usable: a SQLite file or
    file store that exists (`must_exist`; MLflow would silently create an empty one), a
    server that answers /health. Raises MlflowError with the reason."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInputError("an MLflow tracking URI is required (e.g. sqlite:///mlflow.db)")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise MlflowError(
            "MLflow import/export needs the mlflow client: pip install mlops-jupyter[mlflow]"
        ) from None
    uri = uri.strip()
    scheme = urlsplit(uri).scheme.lower()
    shown = redact(uri)
    if scheme in ("http", "https"):
        _check_server(uri, shown)
    elif scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            p = Path(path)  # sqlite:///rel/path or sqlite:////abs/path
            if must_exist and not p.is_file():
                raise MlflowError(f"no MLflow SQLite store at {p} (from {shown})")
            if not must_exist and not p.parent.is_dir():
                raise MlflowError(f"folder {p.parent} does not exist (for {shown})")
    elif scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        _check_database(uri, shown)
    elif scheme in ("", "file"):
        p = Path(urlsplit(uri).path if scheme == "file" else uri)
        if must_exist and not p.is_dir():
            raise MlflowError(f"no MLflow file store (folder) at {p}")
        if must_exist:
            # MLflow 3 refuses its (deprecated) file store unless asked; reading old
            # history out of one is what migrating means
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # fails here, clearly, for a bad URI
    except MlflowError:
        raise
    except Exception as e:
        raise MlflowError(f"cannot use MLflow tracking URI {shown}: {_reason(e)}") from None
    return client


@contextlib.contextmanager
def mlflow_errors(doing: str) -> Iterator[None]:
    """Turn MLflow's exceptions (refused requests, unreachable stores) into MlflowError."""
    try:
        yield
    except MlopsJupyterError:
        raise
    except Exception as e:
        if type(e).__module__.startswith(("mlflow", "requests", "urllib3", "sqlalchemy")):
            raise MlflowError(f"{doing}: {_reason(e)}") from e
        raise


def _check_database(uri: str, shown: str) -> None:
    # MLflow retries a refused database connection for about 100 s: try once first
    import sqlalchemy

    args = {"connect_timeout": 10} if uri.startswith("postgres") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except Exception as e:
        reason = _reason(e)
        password = urlsplit(uri).password
        if password:
            reason = reason.replace(password, "***")
        raise MlflowError(f"cannot connect to the MLflow database {shown}: {reason}") from None


def _check_server(uri: str, shown: str) -> None:
    # MLflow's own client retries for minutes against a dead server; ask /health once
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as r:
            r.read(64)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return  # auth in front of /health: the client's token may still be accepted
        raise MlflowError(f"MLflow server {shown} answered /health with {e.code}") from None
    except (OSError, ValueError) as e:
        raise MlflowError(f"cannot reach the MLflow server {shown}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0][:500]


def paged(fetch, **kw) -> list:
    """Every item of a paged MLflow listing (search_experiments, search_runs)."""
    out: list = []
    token = None
    while True:
        page = fetch(page_token=token, **kw)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def parents_first(items: list, key, parent) -> list:
    """`items` (already in the wanted order) with every parent before its children."""
    by_id = {key(x): x for x in items}
    seen: set = set()
    out: list = []

    def visit(x, depth: int = 0) -> None:
        k = key(x)
        if k in seen:
            return
        seen.add(k)
        p = parent(x)
        if p in by_id and depth < 1000:
            visit(by_id[p], depth + 1)
        out.append(x)

    for x in items:
        visit(x)
    return out
