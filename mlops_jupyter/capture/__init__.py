"""Notebook capture (pure Python, no IPython): literal params from cell source, papermill
`parameters` cells, executed-cell recording with provenance warnings, and the environment
a run ran in. The IPython side lives in `mlops_jupyter.magics`."""

from __future__ import annotations

import os

from .env import environment, git_info, package_versions
from .notebook import NOTEBOOK_ENV, read_notebook, resolve_notebook
from .params import is_parameters_comment, literal_params
from .recorder import ENV_TAGGED, PROVENANCE, Session, cell_key, source_hash

__all__ = [
    "NOTEBOOK_ENV",
    "PROVENANCE",
    "Session",
    "attach",
    "cell_key",
    "environment",
    "git_info",
    "is_parameters_comment",
    "literal_params",
    "package_versions",
    "read_notebook",
    "resolve_notebook",
    "source_hash",
]


def attach(run) -> None:
    """Tag `run` with its environment (git, Python and package versions, host, and the
    notebook path when the kernel says which notebook it runs). Usable as a start hook;
    child runs are skipped (their parent carries the same environment)."""
    if getattr(run, "parent", None) is not None:
        return
    nb = resolve_notebook(os.environ.get(NOTEBOOK_ENV), os.environ.get("JPY_SESSION_NAME"))
    run.set_tags(environment(nb))
    ENV_TAGGED[run] = nb
