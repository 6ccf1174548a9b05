"""`mj.preflight(df, ...)`: catch data and machine problems before training starts.

Every check gives pass/fail with a readable detail; failures raise PreflightError (or only
warn, with on_fail="warn" or MLOPS_JUPYTER_PREFLIGHT=warn). Results are recorded on the
run as a `preflight` event and a `preflight` tag."""

from __future__ import annotations

import html
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import polars as pl
import psutil

from ..errors import InvalidInputError, MlopsJupyterError
from .profile import to_polars

_GB = 1024**3
_GENERIC = {
    "numeric": lambda dt: dt.is_numeric(),
    "integer": lambda dt: dt.is_integer(),
    "float": lambda dt: dt.is_float(),
    "string": lambda dt: dt == pl.String,
    "categorical": lambda dt: dt in (pl.String, pl.Categorical) or isinstance(dt, pl.Enum),
    "datetime": lambda dt: dt.is_temporal(),
    "boolean": lambda dt: dt == pl.Boolean,
}


class PreflightError(MlopsJupyterError):
    """Raised when preflight checks fail; `.report` holds every check."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        super().__init__("preflight checks failed; the run was stopped\n" + report.text())


@dataclass
class Check:
    """One check: name, passed, detail."""

    name: str
    passed: bool
    detail: str


class PreflightReport:
    """All checks of one preflight call; renders as a table in notebooks."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (as recorded on the run)."""
        return {
            "passed": self.passed,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
        }

    def text(self) -> str:
        """Plain-text table of the checks."""
        w = max([len(c.name) for c in self.checks] + [5])
        lines = [
            f"  {'PASS' if c.passed else 'FAIL'}  {c.name:<{w}}  {c.detail}" for c in self.checks
        ]
        n = len(self.failed)
        lines.append(f"  {len(self.checks) - n} passed, {n} failed")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"PreflightReport({'passed' if self.passed else 'FAILED'})\n{self.text()}"

    def _repr_html_(self) -> str:
        rows = "".join(
            f'<tr><td style="color:{"#2e7d32" if c.passed else "#b00020"};font-weight:600">'
            f"{'pass' if c.passed else 'FAIL'}</td><td>{html.escape(c.name)}</td>"
            f"<td>{html.escape(c.detail)}</td></tr>"
            for c in self.checks
        )
        n = len(self.failed)
        head = "all checks passed" if not n else f"{n} of {len(self.checks)} checks failed"
        return (
            f'<div style="font:12px system-ui,sans-serif"><b>Preflight</b>: {head}'
            f'<table style="border-collapse:collapse">{rows}</table></div>'
        )


def _columns(df: pl.DataFrame, cols: Any, what: str) -> list[str]:
    if cols is True:
        return list(df.columns)
    if isinstance(cols, str):
        cols = [cols]
    if not isinstance(cols, (list, tuple)) or not all(isinstance(c, str) for c in cols):
        raise InvalidInputError(f"{what}: give a column name or a list of column names")
    return list(cols)


def _dtype_ok(actual: pl.DataType, want: Any) -> bool:
    if isinstance(want, str):
        key = want.lower()
        if key in _GENERIC:
            return _GENERIC[key](actual)
        return str(actual).lower() == key or actual.__class__.__name__.lower() == key
    try:
        return actual == want
    except Exception:
        return False


def _data_checks(df: pl.DataFrame, a: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    if a["min_rows"] is not None:
        ok = df.height >= a["min_rows"]
        out.append(Check("min_rows", ok, f"{df.height} rows (need >= {a['min_rows']})"))
    if a["schema"] is not None:
        want = a["schema"]
        if isinstance(want, (list, tuple)):
            want = {c: None for c in want}
        if not isinstance(want, dict):
            raise InvalidInputError("schema: give {column: dtype} or a list of required columns")
        for col, dt in want.items():
            if col not in df.columns:
                out.append(Check(f"schema:{col}", False, "column is missing"))
            elif dt is not None and not _dtype_ok(df.schema[col], dt):
                out.append(Check(f"schema:{col}", False, f"dtype {df.schema[col]}, expected {dt}"))
            else:
                out.append(Check(f"schema:{col}", True, f"dtype {df.schema[col]}"))
    if a["not_null"] is not None:
        for col in _columns(df, a["not_null"], "not_null"):
            if col not in df.columns:
                out.append(Check(f"not_null:{col}", False, "column is missing"))
                continue
            s = df[col]
            n = s.null_count() + (int(s.is_nan().sum()) if s.dtype.is_float() else 0)
            out.append(Check(f"not_null:{col}", n == 0, f"{n} null/NaN values"))
    for col, rng in (a["ranges"] or {}).items():
        if col not in df.columns:
            out.append(Check(f"range:{col}", False, "column is missing"))
            continue
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise InvalidInputError(f"ranges[{col!r}] must be (low, high); use None for open ends")
        lo, hi = rng
        s = df[col].drop_nulls()
        cond = pl.lit(False)
        if lo is not None:
            cond = cond | (pl.col(col) < lo)
        if hi is not None:
            cond = cond | (pl.col(col) > hi)
        try:
            bad = int(s.to_frame().select(cond.sum()).item())
        except Exception as e:
            out.append(Check(f"range:{col}", False, f"cannot compare {s.dtype} with {rng}: {e}"))
            continue
        got = f"[{s.min()}, {s.max()}]" if len(s) else "no values"
        out.append(
            Check(f"range:{col}", bad == 0, f"{bad} values outside [{lo}, {hi}]; seen {got}")
        )
    if a["unique"] is not None:
        cols = _columns(df, a["unique"], "unique")
        missing = [c for c in cols if c not in df.columns]
        name = "unique:" + "+".join(cols)
        if missing:
            out.append(Check(name, False, f"missing columns {missing}"))
        else:
            dup = int(df.select(cols).is_duplicated().sum())
            out.append(Check(name, dup == 0, f"{dup} rows share a key with another row"))
    if a["class_balance"] is not None:
        out.append(_balance(df, a["class_balance"]))
    return out


def _balance(df: pl.DataFrame, spec: Any) -> Check:
    if isinstance(spec, str):
        col, min_share = spec, 0.05
    elif isinstance(spec, (list, tuple)) and len(spec) == 2:
        col, min_share = spec
    elif isinstance(spec, dict) and "column" in spec:
        col, min_share = spec["column"], spec.get("min_share", 0.05)
    else:
        raise InvalidInputError(
            "class_balance: give a column, (column, min_share) or {'column':..., 'min_share':...}"
        )
    if col not in df.columns:
        return Check(f"class_balance:{col}", False, "column is missing")
    vc = df[col].drop_nulls().value_counts(sort=True, name="n")
    tot = int(vc["n"].sum())
    if tot == 0 or vc.height < 2:
        return Check(f"class_balance:{col}", False, f"{vc.height} class(es): nothing to balance")
    least, share = vc[col][-1], vc["n"][-1] / tot
    return Check(
        f"class_balance:{col}",
        share >= min_share,
        f"{vc.height} classes; rarest {least!r} is {share:.1%} (need >= {min_share:.1%})",
    )


def _gpu_free() -> tuple[float, str] | None:
    """Free GPU memory in bytes and the device name, or None when no GPU is visible."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        return float(pynvml.nvmlDeviceGetMemoryInfo(h).free), str(name)
    except Exception:
        pass
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except Exception:
            torch = None
    if torch is not None:
        try:
            if torch.cuda.is_available():
                free, _ = torch.cuda.mem_get_info()
                return float(free), torch.cuda.get_device_name()
        except Exception:
            pass
    return None


def _machine_checks(a: dict[str, Any]) -> list[Check]:
    out = []
    if a["min_disk_gb"] is not None:
        path = os.fspath(a["disk_path"] or os.getcwd())
        free = shutil.disk_usage(path).free / _GB
        out.append(
            Check(
                "disk_space",
                free >= a["min_disk_gb"],
                f"{free:.1f} GB free at {path} (need >= {a['min_disk_gb']} GB)",
            )
        )
    if a["min_memory_gb"] is not None:
        free = psutil.virtual_memory().available / _GB
        out.append(
            Check(
                "memory",
                free >= a["min_memory_gb"],
                f"{free:.1f} GB available (need >= {a['min_memory_gb']} GB)",
            )
        )
    if a["min_gpu_memory_gb"] is not None:
        g = _gpu_free()
        if g is None:
            out.append(Check("gpu_memory", False, "no GPU found"))
        else:
            free = g[0] / _GB
            out.append(
                Check(
                    "gpu_memory",
                    free >= a["min_gpu_memory_gb"],
                    f"{free:.1f} GB free on {g[1]} (need >= {a['min_gpu_memory_gb']} GB)",
                )
            )
    return out


def preflight(
    df: Any = None,
    *,
    min_rows: int | None = None,
    not_null: list[str] | str | bool | None = None,
    schema: dict[str, Any] | list[str] | None = None,
    ranges: dict[str, tuple[Any, Any]] | None = None,
    unique: list[str] | str | None = None,
    class_balance: Any = None,
    min_disk_gb: float | None = None,
    disk_path: str | os.PathLike | None = None,
    min_memory_gb: float | None = None,
    min_gpu_memory_gb: float | None = None,
    on_fail: str | None = None,
    run: Any = None,
) -> PreflightReport:
    """Check data (and the machine) before training.

    Data checks: `min_rows`; `not_null` (columns, or True for all; NaN counts as null);
    `schema` ({column: dtype} with polars dtypes, their names, or "numeric", "integer",
    "float", "string", "categorical", "datetime", "boolean"; or a list of required
    columns); `ranges` ({column: (low, high)}, None for an open end); `unique` (a key
    column or columns); `class_balance` (column, or (column, min_share), default 5%).
    Machine checks: `min_disk_gb` (at `disk_path`, default the working directory),
    `min_memory_gb`, `min_gpu_memory_gb`. `on_fail`: "raise" (default; stops the run with
    PreflightError) or "warn" (MLOPS_JUPYTER_PREFLIGHT sets the default)."""
    on_fail = on_fail or os.environ.get("MLOPS_JUPYTER_PREFLIGHT", "raise") or "raise"
    if on_fail not in ("raise", "warn"):
        raise InvalidInputError(f"on_fail must be 'raise' or 'warn', got {on_fail!r}")
    if min_rows is not None and (not isinstance(min_rows, int) or min_rows < 0):
        raise InvalidInputError("min_rows must be a non-negative integer")
    args = dict(locals())
    checks: list[Check] = []
    if df is not None:
        checks += _data_checks(to_polars(df), args)
    elif any(
        args[k] is not None
        for k in ("min_rows", "not_null", "schema", "ranges", "unique", "class_balance")
    ):
        raise InvalidInputError("data checks need a DataFrame: preflight(df, ...)")
    checks += _machine_checks(args)
    if not checks:
        raise InvalidInputError("preflight: no checks requested (e.g. min_rows=..., not_null=True)")
    report = PreflightReport(checks)
    _record(report, run, on_fail)
    if not report.passed:
        if on_fail == "raise":
            raise PreflightError(report)
        warnings.warn("preflight checks failed:\n" + report.text(), RuntimeWarning, stacklevel=2)
    return report


def _record(report: PreflightReport, run: Any, on_fail: str) -> None:
    from ..store import runs as rstore
    from .catalog import _remote, _run_rid, _store

    remote = _remote()
    rid = None if remote is not None else _run_rid(run)
    if remote is None and rid is None:
        return
    n = len(report.failed)
    level = "info" if not n else ("error" if on_fail == "raise" else "warning")
    msg = (
        "preflight passed"
        if not n
        else f"preflight: {n} of {len(report.checks)} checks failed: "
        + ", ".join(c.name for c in report.failed)
    )
    if remote is not None:  # the server records the event and the tag (no run: nothing)
        from ..remote import data_more as rmore

        rmore.record_preflight(remote, run, level, msg, report.to_dict(), not n)
        return
    st = _store()
    rstore.add_event(st, rid, "preflight", msg, level=level, data=report.to_dict())
    rstore.set_kv(st, "tags", rid, {"preflight": "passed" if not n else "failed"})
