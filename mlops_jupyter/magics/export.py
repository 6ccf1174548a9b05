"""`%mlops_export`: export the notebook this kernel runs to a pipeline (logic in export/)."""

from __future__ import annotations

import os

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import InvalidInputError


def _kernel_run() -> str | None:
    """The newest notebook run of this kernel process (active or ended), if the store has one."""
    import socket

    from .. import config, tracking
    from ..store import pipeline as pstore
    from ..store.db import open_existing
    from ..tracking import api

    active = tracking.active_run()
    if active is not None:
        while active.parent is not None:
            active = active.parent
        return active.id
    store = open_existing(api._store_override or config.find_store_location())
    if store is None:
        return None
    tracking.flush()
    found = pstore.process_run(store, socket.gethostname(), os.getpid())
    return found[0] if found else None


def _history(ip) -> list[tuple[str | None, str]]:
    """The cells this kernel ran, oldest first, as (cell id, source) for the Locator."""
    raw = list(getattr(ip.history_manager, "input_hist_raw", None) or [])[1:]
    return [(None, src) for src in raw]


@magics_class
class ExportMagics(Magics):
    def __init__(self, shell=None, **kwargs):
        super().__init__(shell, **kwargs)
        self._locator = None
        if shell is not None:
            from ..capture.locate import Locator

            # made at %load_ext: the runner's process and the kernel's starting folder are
            # read now (the notebook may change the working directory later)
            self._locator = Locator(lambda: _history(shell), lambda: shell.user_ns)

    @magic_arguments()
    @argument(
        "notebook",
        nargs="?",
        default=None,
        help="the .ipynb to export (default: this kernel's notebook, when Jupyter says which)",
    )
    @argument("-o", "--output", default=None, help="package folder (default: <notebook>_pipeline)")
    @argument(
        "--target",
        choices=["python", "airflow", "prefect"],
        default="python",
        help="python: a package run with python -m DIR (default); airflow: also an Airflow DAG; "
        "prefect: also a Prefect 3 flow",
    )
    @argument(
        "--source-run",
        default=None,
        help="run to link the pipeline to (default: this kernel's newest run)",
    )
    @argument("--experiment", default=None, help="experiment of the pipeline runs")
    @line_magic
    def mlops_export(self, line: str = ""):
        """Export the notebook to a pipeline package runnable with `python -m DIR`.

        Save the notebook first: the file on disk is what is exported. Cells become stages
        by their `stage=NAME` tags (else markdown headings); `skip` cells are left out and
        the `parameters` cell becomes params.yaml."""
        from ..capture.notebook import NOTEBOOK_ENV, resolve_notebook
        from ..export import export_notebook

        args = parse_argstring(self.mlops_export, line)
        ns = self.shell.user_ns if self.shell is not None else {}
        nb = resolve_notebook(
            args.notebook,
            os.environ.get(NOTEBOOK_ENV),
            ns.get("__session__"),
            os.environ.get("JPY_SESSION_NAME"),
            ns.get("__vsc_ipynb_file__"),
        )
        if nb is None and not args.notebook and self._locator is not None:
            # a headless kernel (nbclient, nbconvert, papermill): no front end says which
            # notebook runs, the capture package's locator reads the runner's traces
            nb = self._locator()
        if nb is None:
            if args.notebook:
                raise InvalidInputError(f"notebook not found: {args.notebook}")
            raise InvalidInputError(
                "cannot tell which notebook this kernel runs; name it: %mlops_export NOTEBOOK.ipynb"
            )
        source = args.source_run or _kernel_run()
        res = export_notebook(
            nb, args.output, args.target, source_run=source, experiment=args.experiment
        )
        print(res.summary())
        return None


def register(ipython) -> None:
    """Called by `%load_ext mlops_jupyter`."""
    ipython.register_magics(ExportMagics(ipython))
