"""Where a run ran: notebook path, git commit and dirty flag, Python and key package
versions (read from installed metadata, never by importing the package), hostname."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Distribution names whose versions explain most "it worked yesterday" questions.
KEY_PACKAGES = (
    "numpy",
    "polars",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "torch",
    "mlx",
    "jax",
    "tensorflow",
    "optuna",
    "mlops-jupyter",
)
_GIT_TIMEOUT_S = 3.0
_packages: dict[str, str] | None = None


def package_versions() -> dict[str, str]:
    """Installed versions of KEY_PACKAGES (missing ones left out); cached per process."""
    global _packages
    if _packages is None:
        found = {}
        for name in KEY_PACKAGES:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            except Exception:  # a broken dist-info must not stop a run
                continue
        _packages = found
    return dict(_packages)


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # never take git's index lock
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """{'git.commit', 'git.branch', 'git.dirty', 'git.root'} for the repository holding
    `path` (a file or folder; default: the working directory), or {} outside a repo.

    Dirty means tracked files differ from the commit, or `path` itself is untracked."""
    p = Path(path) if path is not None else Path.cwd()
    cwd = str(p if p.is_dir() else p.parent)
    out = _git(cwd, "rev-parse", "HEAD", "--show-toplevel", "--abbrev-ref", "HEAD")
    lines = out.splitlines() if out else []
    if len(lines) != 3:
        return {}  # not a repository, or no commit yet
    commit, root, branch = lines
    info: dict[str, Any] = {"git.commit": commit, "git.root": root}
    if branch != "HEAD":  # detached HEAD has no branch
        info["git.branch"] = branch
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    dirty = bool(status)
    if not dirty and p.is_file():
        dirty = _git(cwd, "ls-files", "--error-unmatch", p.name) is None
    info["git.dirty"] = dirty if status is not None else None
    return info


# Programs that start a kernel or an interpreter for someone else: not the user's script.
_LAUNCHERS = ("ipykernel_launcher.py", "ipykernel", "colab_kernel_launcher.py", "pydevd.py")


def script_path() -> str | None:
    """The user's script this process runs (`python train.py`), or None: in a Jupyter kernel
    sys.argv[0] is the kernel launcher, and installed tools are not the user's script."""
    arg0 = sys.argv[0] if sys.argv else ""
    if not arg0.endswith(".py") or not os.path.isfile(arg0):
        return None
    p = Path(arg0).resolve()
    if p.name in _LAUNCHERS or any(part in _LAUNCHERS for part in p.parts):
        return None
    if any(part in ("site-packages", "dist-packages") for part in p.parts):
        return None
    if "ipykernel" in sys.modules:
        try:
            from ipykernel.kernelapp import IPKernelApp

            if IPKernelApp.initialized():
                return None
        except Exception:
            pass
    return str(p)


def environment(notebook: str | None = None) -> dict[str, Any]:
    """Tags describing this process: `notebook.path` (when known), `git.*`, `env.python`,
    `env.platform`, `env.host`, and `env.<package>` versions."""
    tags: dict[str, Any] = {}
    if notebook:
        tags["notebook.path"] = notebook
    else:
        script = script_path()
        if script:
            tags["script.path"] = script
    tags.update(git_info(notebook or tags.get("script.path")))
    tags["env.python"] = platform.python_version()
    tags["env.platform"] = platform.platform(terse=True)
    tags["env.host"] = socket.gethostname()
    for name, ver in package_versions().items():
        tags[f"env.{name}"] = ver
    return tags
