"""MLflow's proxied artifact routes (`/api/2.0/mlflow-artifacts/artifacts/...`), so
`mlflow.log_artifact` and downloads work against this server. A run's artifact root is
`mlflow-artifacts:/<experiment id>/<run id>/artifacts`; files are stored through the
artifact-store contract (content-addressed blobs) and recorded as the run's artifacts."""

from __future__ import annotations

import posixpath
import time
from pathlib import Path
from typing import Any

from ..errors import ArtifactNotFoundError
from ..store import ingest as ing
from ..store import runs as rstore
from .app import HTTPError
from .mlflow_routes import MlflowHandler


def _split(path: str) -> tuple[str, str]:
    """(run id, artifact name) of '<exp>/<run>/artifacts[/<name>]'."""
    path = path.strip("/")
    parts = path.split("/")
    if len(parts) < 3 or parts[2] != "artifacts":
        raise HTTPError(
            404, "RESOURCE_DOES_NOT_EXIST", f"{path!r} is not under <experiment>/<run>/artifacts"
        )
    name = "/".join(parts[3:])
    if name and (posixpath.normpath(name) != name or name.startswith("../") or name in ("..", ".")):
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"invalid artifact path {name!r}")
    return parts[1], name


class ArtifactHandler(MlflowHandler):
    to_file = True

    def _run(self, uid: str) -> ing.RunRow:
        return self.run_of({"run_id": uid})

    async def put(self, path: str) -> None:
        def go() -> dict:
            uid, name = _split(path)
            if not name:
                raise HTTPError(400, "INVALID_PARAMETER_VALUE", "an artifact needs a file name")
            row = self._run(uid)
            self.body_bytes()  # 413 / bad gzip
            src = Path(self._file.name) if self._file is not None else None
            if src is None:
                import tempfile

                self._file = tempfile.NamedTemporaryFile(prefix="mj-upload-", delete=False)
                src = Path(self._file.name)
            self._file.flush()
            digest, size = self.store.artifacts.put_blob(src)
            rstore.add_artifacts(self.store, [(row.rid, name, digest, size, time.time())])
            return {}

        await self.handle(go)

    async def get(self, path: str) -> None:
        try:
            await self.run(self.authorize)
            uid, name = _split(path)
            row = await self.run(lambda: self._run(uid))
            digest = await self.run(lambda: rstore.artifact_digest(self.store, row.rid, name))
            if digest is None:
                raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"no artifact {name!r}")
            local = await self.run(lambda: self.store.artifacts.blob_file(digest))
        except HTTPError as e:
            self.send_error_json(e.status, e.code, e.message)
            return
        except ArtifactNotFoundError as e:
            self.send_error_json(404, "RESOURCE_DOES_NOT_EXIST", str(e))
            return
        await self.send_file(local)

    async def delete(self, path: str) -> None:
        await self.handle(self._unsupported)

    def _unsupported(self) -> Any:
        raise HTTPError(501, "NOT_IMPLEMENTED", "deleting artifacts is not supported")


class ListArtifacts(MlflowHandler):
    scope_get = "read"

    def do(self, body: dict[str, Any]) -> dict[str, Any]:
        path = body.get("path") or ""
        if not isinstance(path, str):
            raise HTTPError(400, "INVALID_PARAMETER_VALUE", "path must be a string")
        uid, prefix = _split(path)
        row = self._run_row(uid)
        run = ing.artifacts_of(self.store, row.rid)
        files: dict[str, dict[str, Any]] = {}
        head = prefix + "/" if prefix else ""
        for name, size in run:
            if prefix and name == prefix:
                files[posixpath.basename(name)] = {
                    "path": posixpath.basename(name),
                    "is_dir": False,
                    "file_size": size,
                }
                continue
            if not name.startswith(head):
                continue
            rest = name[len(head) :]
            first, sep, _ = rest.partition("/")
            if sep:
                files.setdefault(first, {"path": first, "is_dir": True})
            else:
                files[first] = {"path": first, "is_dir": False, "file_size": size}
        return {"files": [files[k] for k in sorted(files)]}

    def _run_row(self, uid: str) -> ing.RunRow:
        return self.run_of({"run_id": uid})


ROUTES = [
    (rf"/{p}/2\.0/mlflow-artifacts/artifacts", ListArtifacts) for p in ("api", "ajax-api")
] + [(rf"/{p}/2\.0/mlflow-artifacts/artifacts/(.+)", ArtifactHandler) for p in ("api", "ajax-api")]
