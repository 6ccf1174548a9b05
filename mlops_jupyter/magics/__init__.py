"""IPython adaptor: `%load_ext mlops_jupyter` registers the magics and the (idle) cell hooks.

Feature areas add their own magics in sibling modules (telemetry, data, export, sweep),
each with a `register(ipython)` function; a missing module is skipped and a failing one
only warns, so one broken feature never stops the extension from loading. Every `mlops_*`
magic then accepts a trailing `# comment` on its line (see comments.py)."""

from __future__ import annotations

import importlib
import warnings

OPTIONAL_MODULES = ("telemetry", "data", "export", "sweep", "llm", "features")
_loaded: dict[int, object] = {}


def load_ipython_extension(ipython) -> None:
    """Register %%mlops_run, %mlops_runs, %mlops_status, the cell hooks, and the magics of
    the optional feature modules. Loading twice is harmless."""
    from . import core

    if id(ipython) in _loaded:
        return
    _loaded[id(ipython)] = core.register(ipython)
    for name in OPTIONAL_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            warnings.warn(f"mlops-jupyter: %{name} magics unavailable: {e}", stacklevel=2)
            continue
        except Exception as e:
            warnings.warn(f"mlops-jupyter: %{name} magics unavailable: {e}", stacklevel=2)
            continue
        try:
            mod.register(ipython)
        except Exception as e:
            warnings.warn(f"mlops-jupyter: %{name} magics failed to load: {e}", stacklevel=2)
    from .comments import accept_comments

    accept_comments(ipython)


def unload_ipython_extension(ipython) -> None:
    """Remove the cell hooks (magics stay registered, as IPython has no unregister)."""
    from . import core

    state = _loaded.pop(id(ipython), None)
    if state is not None:
        core.unregister(ipython, state)
