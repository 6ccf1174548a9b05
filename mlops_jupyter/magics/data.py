"""Data magics: `%mlops_version`, `%mlops_preflight`, `%mlops_drift`. They parse the line,
look names up in the user namespace and call mlops_jupyter.data, which holds the logic."""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


def _cols(v: str | None) -> list[str] | bool | None:
    if v is None:
        return None
    if v in ("all", "*"):
        return True
    return [c.strip() for c in v.split(",") if c.strip()]


def _number(s: str) -> float | None:
    s = s.strip()
    if s == "":
        return None
    try:
        return float(s)
    except ValueError:
        raise UsageError(f"not a number: {s!r}") from None


@magics_class
class DataMagics(Magics):
    def _lookup(self, ref: str, stored_ok: bool) -> Any:
        """A variable of the user namespace; else a path; else (if allowed) a stored version
        id or name, passed through as a string."""
        ns = self.shell.user_ns
        if ref in ns:
            return ns[ref]
        if os.path.exists(ref):
            return ref
        if stored_ok:
            return ref
        raise UsageError(f"{ref!r} is neither a variable nor an existing file or directory")

    @magic_arguments()
    @argument("var", help="variable holding a DataFrame/array, or a file or directory path")
    @argument("-n", "--name", default=None, help="name of the data (default: the variable name)")
    @argument(
        "-r",
        "--role",
        default="input",
        choices=("input", "output"),
        help="input (used by the run, default) or output (produced by it)",
    )
    @line_magic
    def mlops_version(self, line: str = ""):
        """Version a DataFrame, array, file or directory: content fingerprint + column profile,
        linked to the active run. The same content always gets the same id."""
        args = parse_argstring(self.mlops_version, line)
        obj = self._lookup(args.var, stored_ok=False)
        from ..data import version

        name = args.name or (os.path.basename(args.var) if isinstance(obj, str) else args.var)
        return version(obj, name=name, role=args.role)

    @magic_arguments()
    @argument("var", nargs="?", default=None, help="variable holding the DataFrame to check")
    @argument("--min-rows", type=int, default=None, help="at least this many rows")
    @argument("--not-null", default=None, metavar="COLS", help="comma-separated columns, or all")
    @argument("--unique", default=None, metavar="COLS", help="key column(s) with no duplicates")
    @argument(
        "--schema",
        action="append",
        default=[],
        metavar="COL[=DTYPE]",
        help="required column, optionally with a dtype (Int64, numeric, string, ...); repeatable",
    )
    @argument(
        "--range",
        action="append",
        default=[],
        metavar="COL=LO:HI",
        help="allowed value range (leave LO or HI empty for an open end); repeatable",
    )
    @argument(
        "--balance", default=None, metavar="COL[=MIN_SHARE]", help="rarest class share (0.05)"
    )
    @argument("--min-disk-gb", type=float, default=None, help="free disk space")
    @argument("--min-memory-gb", type=float, default=None, help="available memory")
    @argument("--min-gpu-gb", type=float, default=None, help="free GPU memory")
    @argument("--warn", action="store_true", help="only warn on failures (default: stop)")
    @line_magic
    def mlops_preflight(self, line: str = ""):
        """Check data and machine before training; failures stop the cell (and its run) with
        a readable report unless --warn. Results are recorded on the active run."""
        args = parse_argstring(self.mlops_preflight, line)
        df = self._lookup(args.var, stored_ok=False) if args.var else None
        schema = None
        if args.schema:
            schema = {}
            for item in args.schema:
                col, _, dt = item.partition("=")
                schema[col.strip()] = dt.strip() or None
        ranges = {}
        for item in args.range:
            col, eq, rng = item.partition("=")
            lo, colon, hi = rng.partition(":")
            if not eq or not colon:
                raise UsageError(f"--range {item!r}: use COL=LO:HI")
            ranges[col.strip()] = (_number(lo), _number(hi))
        balance = None
        if args.balance:
            col, eq, share = args.balance.partition("=")
            balance = (col.strip(), _number(share) if eq else 0.05)
        from ..data import preflight

        return preflight(
            df,
            min_rows=args.min_rows,
            not_null=_cols(args.not_null),
            schema=schema,
            ranges=ranges or None,
            unique=_cols(args.unique),
            class_balance=balance,
            min_disk_gb=args.min_disk_gb,
            min_memory_gb=args.min_memory_gb,
            min_gpu_memory_gb=args.min_gpu_gb,
            on_fail="warn" if args.warn else None,
        )

    @magic_arguments()
    @argument("reference", help="variable, file, or stored data version id/name")
    @argument("current", help="variable, file, or stored data version id/name")
    @argument("--num-method", default="auto", help="ks, wasserstein, psi, jensenshannon")
    @argument("--cat-method", default="auto", help="chisquare, psi, jensenshannon")
    @argument("--columns", default=None, metavar="COLS", help="comma-separated columns to compare")
    @argument("--categorical", default=None, metavar="COLS", help="treat these as categorical")
    @argument("--no-store", action="store_true", help="don't store the result")
    @line_magic
    def mlops_drift(self, line: str = ""):
        """Drift between a reference and a current dataset (DataFrames or stored versions):
        per-column verdicts with statistic and threshold, and the drifted share."""
        args = parse_argstring(self.mlops_drift, line)
        ref = self._lookup(args.reference, stored_ok=True)
        cur = self._lookup(args.current, stored_ok=True)
        from ..data import drift

        cols = _cols(args.columns)
        cats = _cols(args.categorical)
        return drift(
            ref,
            cur,
            columns=cols if isinstance(cols, list) else None,
            categorical=cats if isinstance(cats, list) else None,
            num_method=args.num_method,
            cat_method=args.cat_method,
            store=not args.no_store,
        )


def register(ipython) -> None:
    """Register the data magics on `ipython`."""
    ipython.register_magics(DataMagics(ipython))
