"""Client of a running `mlops-jupyter server`: MLOPS_JUPYTER_STORE=http(s)://host:port with
MLOPS_JUPYTER_TOKEN makes the tracking API (start_run, log, log_params, set_tags, end,
runs, metrics, get_run) go through the server. Features that need the store itself refuse
with RemoteUnsupportedError."""

from __future__ import annotations

from ..errors import StoreError

SUPPORTED = "start_run, log/log_metric, log_params, set_tags, end_run, runs, metrics, get_run"


class RemoteUnsupportedError(StoreError, AttributeError):
    """A feature that needs a direct store was used with a tracking-server URL. (Also an
    AttributeError, so `getattr(store, name, default)` probes keep working.)"""


def is_remote(location: object) -> bool:
    """Whether a store location is a tracking server (http:// or https://)."""
    return isinstance(location, str) and location[:8].lower().startswith(("http://", "https://"))


def unsupported(feature: str, url: str | None = None) -> RemoteUnsupportedError:
    """The error for `feature` used over a tracking server."""
    from ..config import redact_url

    where = f" {redact_url(url)}" if url else ""
    return RemoteUnsupportedError(
        f"{feature} needs a direct store: set MLOPS_JUPYTER_STORE to a postgresql://... URL "
        f"or a path. Over the tracking server{where} only {SUPPORTED} are available."
    )


__all__ = ["RemoteUnsupportedError", "is_remote", "unsupported"]
