"""One progress bar for every long operation (pipeline stages, drift on large frames, folder
fingerprints, sweeps without a live view, and later store copies, imports and uploads):
tqdm, drawn as a widget in a notebook and as a text bar on a terminal.

    with progress(total=len(files), desc="fingerprint", unit="file") as bar:
        for f in files:
            ...
            bar.update()

A bar is drawn only where someone can see it: in a Jupyter kernel, or when the stream is a
terminal; never with quiet=True or MLOPS_JUPYTER_PROGRESS=0, and only once the work has run
`delay` seconds, so short calls print nothing (MLOPS_JUPYTER_PROGRESS=1 draws every bar at
once, anywhere). Not for the logging
hot path: call it around work that takes seconds, not per logged point.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any, TextIO

ENV = "MLOPS_JUPYTER_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def _env() -> str:
    return os.environ.get(ENV, "").strip().lower()


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget)."""
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def visible(quiet: bool = False, file: TextIO | None = None) -> bool:
    """Whether a bar would be drawn: not quiet, not switched off, and a kernel or a terminal."""
    env = _env()
    if quiet or env in _OFF:
        return False
    if env in _ON:
        return True
    if in_kernel():
        return True
    stream = file if file is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    quiet: bool = False,
    delay: float = 1.0,
    file: TextIO | None = None,
    leave: bool = False,
    **kwargs: Any,
):
    """A tqdm bar (use as an iterator wrapper or with `.update()`); disabled, at no cost
    beyond a counter, where `visible()` says nobody would see it."""
    show = visible(quiet, file)
    if show and _env() in _ON:
        delay = 0
        kwargs.setdefault("mininterval", 0)  # every update drawn: a log to read afterwards
    if show and file is None and in_kernel():
        with warnings.catch_warnings():
            # without ipywidgets tqdm.auto falls back to a text bar and warns about it
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not show,
        delay=delay,
        file=file,
        leave=leave,
        dynamic_ncols=True,
        **kwargs,
    )
