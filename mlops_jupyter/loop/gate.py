"""Validation gates: a registered candidate version checked against the production version
on the same evaluation data. The verdict is stored (store/gates.py) with a line in the
registry's audit log, and a failure is sent to the configured notification channels.

    report = mj.gate("classifier", candidate=5, data=eval_df, target="y",
                     rules=[threshold("accuracy", ">=", 0.9), not_worse("accuracy", by=0.01)])
    report.passed, report.markdown()
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..store import gates as gstore
from ..store.registry import ModelNotFoundError
from .rules import GateContext, NoBaselineError, Rule, RuleResult

__all__ = ["GateReport", "default_predict", "gate", "gates"]


@dataclass
class GateReport:
    """A gate's verdict: one RuleResult per rule. `passed` is True only when every rule
    that ran passed and at least one ran (skipped rules neither pass nor fail it)."""

    model: str
    candidate: int
    baseline: int | None
    data_id: str | None
    n: int
    results: list[RuleResult]
    created: float = field(default_factory=time.time)
    id: int | None = None
    # per-slice metrics (loop/slices.py): {"confidence", "n_boot", "min_count", "metrics",
    # "slices", "rows": [...]}, or None when the gate was given no slices
    slices: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        ran = [r for r in self.results if r.status != "skipped"]
        return bool(ran) and all(r.status == "pass" for r in ran)

    def summary(self) -> str:
        """One line: verdict and counts."""
        counts = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skipped")}
        word = "PASS" if self.passed else "FAIL"
        if not any(r.status != "skipped" for r in self.results):
            word += " (no rule ran)"
        against = f"v{self.baseline}" if self.baseline is not None else "no production version"
        return (
            f"{word}: {self.model} v{self.candidate} vs {against}: {counts['pass']} passed, "
            f"{counts['fail']} failed, {counts['skipped']} skipped on {self.n} examples"
        )

    def markdown(self) -> str:
        """The report as Markdown (a pull-request comment, a notification)."""
        lines = [
            f"## Gate: {self.model} v{self.candidate} — {'PASS' if self.passed else 'FAIL'}",
            "",
            self.summary() + (f"; data {self.data_id}" if self.data_id else ""),
            "",
            "| rule | status | detail |",
            "| --- | --- | --- |",
        ]
        for r in self.results:
            detail = (r.detail or _short(r.evidence)).replace("|", "\\|")
            lines.append(f"| {r.rule.replace('|', '/')} | {r.status} | {detail} |")
        if self.slices:
            from .slices import markdown_table

            lines += markdown_table(self.slices)
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the store keeps)."""
        return {
            "id": self.id,
            "model": self.model,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "data_id": self.data_id,
            "n": self.n,
            "passed": self.passed,
            "created": self.created,
            "results": [r.to_dict() for r in self.results],
            **({"slices": self.slices} if self.slices is not None else {}),
        }


def _short(evidence: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in evidence.items()
    )


# -- models and data ----------------------------------------------------------------------
def default_predict(model: Any, X: Any) -> np.ndarray:
    """A model's output on X: torch modules are called without gradients on a float32
    tensor; objects with predict_proba (classes 0..K-1) or predict use them; other
    callables are called."""
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            with torch.no_grad():
                out = model(torch.as_tensor(np.asarray(X), dtype=torch.float32))
            return out.detach().cpu().numpy()
    except ImportError:  # torch is optional
        pass
    classes = getattr(model, "classes_", None)
    if hasattr(model, "predict_proba") and (
        classes is None or np.array_equal(np.asarray(classes), np.arange(len(classes)))
    ):
        return np.asarray(model.predict_proba(X))
    if hasattr(model, "predict"):
        return np.asarray(model.predict(X))
    if callable(model):
        return np.asarray(model(X))
    raise InvalidInputError(
        f"cannot predict with a {type(model).__name__}: pass predict=fn(model, X) to mj.gate"
    )


def _read_file(path: Path) -> Any:
    import polars as pl

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path)
    if suffix == ".csv":
        return pl.read_csv(path)
    if suffix in (".arrow", ".ipc", ".feather"):
        return pl.read_ipc(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z or "y" not in z:
                raise InvalidInputError(f"{path}: an .npz of evaluation data needs arrays X and y")
            return (z["X"], z["y"])
    raise InvalidInputError(f"{path}: evaluation data must be .parquet, .csv, .arrow or .npz")


def _resolve_data(data: Any) -> tuple[Any, str | None]:
    """(the data itself, the data version id when it names a stored version/file)."""
    from ..data.catalog import DataVersion, get_version

    if isinstance(data, (str, os.PathLike)) and Path(data).expanduser().is_file():
        from ..data import fingerprint as fpr

        p = Path(data).expanduser()
        return _read_file(p), fpr.version_id(fpr.file_fingerprint(p))
    if isinstance(data, (str, DataVersion)):
        v = get_version(data)
        if v.kind != "file" or not v.source or not Path(v.source).is_file():
            raise InvalidInputError(
                f"data version {v.id} ({v.name}) has no readable file (kind {v.kind!r}, source "
                f"{v.source!r}): pass the evaluation frame itself as data="
            )
        return _read_file(Path(v.source)), v.id
    return data, None


def _split(
    data: Any, target: str, features: list[str] | None, as_frame: bool = False
) -> tuple[Any, np.ndarray, str]:
    """(X, y, fingerprint) of evaluation data: (X, y), {"X":, "y":} or a frame with a
    `target` column (the other columns, or `features`, as a float array)."""
    if isinstance(data, dict) and "X" in data and "y" in data:
        data = (data["X"], data["y"])
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
        y = np.asarray(y)
        h = hashlib.sha256()
        for a in (np.asarray(X), y):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        if len(y) != len(X):
            raise InvalidInputError(f"X has {len(X)} examples but y has {len(y)}")
        return X, y, h.hexdigest()[:16]
    if hasattr(data, "columns"):
        from ..data import fingerprint as fpr
        from ..data.profile import to_polars

        df = to_polars(data)
        if target not in df.columns:
            raise InvalidInputError(
                f"the evaluation frame has no target column {target!r} (columns: "
                f"{', '.join(df.columns[:20])}); pass target="
            )
        cols = features or [c for c in df.columns if c != target]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InvalidInputError(f"the evaluation frame has no columns {missing}")
        X = df.select(cols)
        if not as_frame:  # the built-in predict feeds models a float array
            try:
                X = X.to_numpy().astype(np.float32)
            except (ValueError, TypeError):
                raise InvalidInputError(
                    f"feature columns {cols[:10]} are not all numeric: pass features=[...] or "
                    "predict=fn(model, X) (which gets the feature columns as a polars frame)"
                ) from None
        return X, df[target].to_numpy(), fpr.version_id(fpr.frame_fingerprint(df))
    raise InvalidInputError(
        "data must be a DataFrame with a target column, (X, y), {'X': X, 'y': y}, a file "
        f"(.parquet, .csv, .arrow, .npz) or a data version id; got {type(data).__name__}"
    )


def _baseline_info(name: str, baseline: Any) -> dict | None:
    from ..registry import model_version

    if baseline is None:
        return None
    if baseline == "production":
        try:
            return model_version(name, stage="production")
        except ModelNotFoundError:
            return None  # none yet: rules comparing with it are skipped
    if isinstance(baseline, str) and not baseline.isdigit():
        return model_version(name, alias=baseline)
    return model_version(name, version=baseline)


# -- the gate -----------------------------------------------------------------------------
def gate(
    name: str,
    candidate: int,
    data: Any,
    rules: list[Rule],
    *,
    baseline: Any = "production",
    target: str = "y",
    features: list[str] | None = None,
    predict: Any = None,
    trusted: bool = False,
    notify: bool = True,
    slices: Any = None,
    slice_metrics: list[Any] | None = None,
    min_slice_count: int = 30,
) -> GateReport:
    """Check version `candidate` of model `name` against `baseline` (default: the current
    production version; none -> rules comparing with it are skipped) on the same evaluation
    `data`, by `rules` (threshold, not_worse, latency, custom). The report is stored with an
    audit-log entry; a failing one is sent to the notification channels (mj.notify).
    `predict=fn(model, X)`: how to call the models (default: default_predict); with it, X
    from a frame is the polars frame of the feature columns, else a float32 array.
    `slices=["country", ...]` (columns of the evaluation frame, or {name: mask or
    fn(frame) -> mask}): the report also gets per-slice metrics (`slice_metrics`, default
    the rules' metrics) with intervals; slices under `min_slice_count` examples get means
    only. A rule with slices=True (not_worse) also judges each slice."""
    from ..registry import (
        _check_name,
        _check_version,
        _remote,
        _store,
        _user,
        load_model,
        model_version,
    )

    _check_name(name)
    candidate = _check_version(candidate)
    if not isinstance(rules, (list, tuple)) or not rules:
        raise InvalidInputError("rules must be a non-empty list (threshold, not_worse, ...)")
    bad = [r for r in rules if not isinstance(r, Rule)]
    if bad:
        raise InvalidInputError(f"not gate rules: {bad!r} (use mj.loop.threshold, not_worse...)")
    if predict is not None and not callable(predict):
        raise InvalidInputError("predict must be a callable fn(model, X)")
    data, data_id = _resolve_data(data)
    X, y, fp = _split(data, target, features, as_frame=predict is not None)
    if len(y) == 0:
        raise InvalidInputError("the evaluation data has no examples")
    dims, slice_on = None, []
    if slices is not None:
        dims, slice_on = _slicing(slices, slice_metrics, min_slice_count, rules, data, X, len(y))
    cand_info = model_version(name, version=candidate)
    base_info = _baseline_info(name, baseline)
    columns = None
    if hasattr(data, "columns"):  # a frame: the names of X's columns
        columns = [str(c) for c in (features or [c for c in data.columns if c != target])]
    ctx = GateContext(
        candidate=load_model(name, version=candidate, trusted=trusted),
        baseline=(
            load_model(name, version=base_info["version"], trusted=trusted) if base_info else None
        ),
        X=X,
        y=y,
        predict=predict or default_predict,
        candidate_version=cand_info["version"],
        baseline_version=base_info["version"] if base_info else None,
        model=name,
        columns=columns,
        data_id=data_id or fp,
        slices=dims,
        min_slice_count=min_slice_count,
    )
    results = []
    for rule in rules:
        try:
            results.append(rule.check(ctx))
        except NoBaselineError as e:  # e.g. a custom rule comparing with production
            results.append(RuleResult(rule.name, "skipped", str(e)))
        except InvalidInputError:
            raise  # bad input: say so, store nothing
        except Exception as e:  # a rule that crashes fails, with the reason as evidence
            results.append(RuleResult(rule.name, "fail", f"error: {type(e).__name__}: {e}"))
    report = GateReport(name, candidate, ctx.baseline_version, data_id or fp, len(y), results)
    if dims:
        report.slices = _slice_table(ctx, slice_on)
    if (url := _remote()) is not None:  # the server stores the verdict (remote/loop.py)
        from ..remote import loop as remote

        report.id = remote.save_gate(url, report)
    else:
        report.id = gstore.save_gate(
            _store(),
            name,
            candidate,
            report.baseline,
            report.data_id,
            report.passed,
            report.to_dict(),
            _user(),
            report.summary(),
        )
    if not report.passed and notify:
        from .notify import notify as send

        send(
            {
                "kind": "gate_failed",
                "model": name,
                "version": candidate,
                "baseline": report.baseline,
                "text": report.summary(),
                "markdown": report.markdown(),
                "report": report.to_dict(),
            }
        )
    return report


def _slicing(
    spec: Any, metrics: Any, min_count: Any, rules: list[Rule], data: Any, X: Any, n: int
) -> tuple[list, list]:
    """(the slicings, the metrics to report per slice), checked before any model loads."""
    from ..data.profile import to_polars
    from .rules import Metric
    from .rules import metric as as_metric
    from .slices import prepare

    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 2:
        raise InvalidInputError(f"min_slice_count must be an integer >= 2, got {min_count!r}")
    frame = to_polars(data) if hasattr(data, "columns") else None
    dims = prepare(spec, frame, X, n)
    if metrics is not None:
        if not isinstance(metrics, (list, tuple)) or not metrics:
            raise InvalidInputError("slice_metrics must be a non-empty list of metrics")
        chosen = [as_metric(m) for m in metrics]
    else:  # the metrics the rules judge (threshold, not_worse), in their order
        chosen = [r.metric for r in rules if isinstance(getattr(r, "metric", None), Metric)]
        if not chosen:
            raise InvalidInputError(
                "no metric to report per slice: no rule names one; pass slice_metrics="
                "['accuracy', ...]"
            )
    seen: dict[str, Any] = {}
    for m in chosen:
        seen.setdefault(m.name, m)
    return dims, list(seen.values())


def _slice_table(ctx: GateContext, metrics: list) -> dict[str, Any]:
    """The report's slice table: every slice x metric, 95 % intervals (seed 0)."""
    rows: list[dict[str, Any]] = []
    table: dict[str, Any] = {
        "confidence": 0.95,
        "n_boot": 1000,
        "min_count": ctx.min_slice_count,
        "metrics": [m.name for m in metrics],
        "slices": [d.name for d in ctx.slices or []],
    }
    try:
        for m in metrics:
            rows += ctx.slice_rows(m)
    except InvalidInputError:
        raise
    except Exception as e:  # a model that cannot predict: its rules already failed on it
        table["error"] = f"{type(e).__name__}: {e}"
    table["rows"] = rows
    return table


def gates(name: str | None = None, version: int | None = None) -> list[dict[str, Any]]:
    """Stored gate verdicts, oldest first: id, model, version, baseline_version, data_id,
    passed, report (the dict), time, user."""
    from ..registry import _check_name, _check_version, _remote, _store

    if name is not None:
        _check_name(name)
    if version is not None:
        version = _check_version(version)
    if (url := _remote()) is not None:  # through the tracking server (remote/loop.py)
        from ..remote import loop as remote

        return remote.list_gates(url, name, version)
    rows = gstore.list_gates(_store(), name, version)
    if name is not None and not rows:
        from ..store.registry import find_version

        find_version(_store(), name, version)  # an unknown model or version: say so
    return rows
