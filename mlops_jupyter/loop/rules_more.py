"""Gate rules that read what the store recorded about the candidate, not its outputs:
drift between its training data and the current data, its privacy guarantee, and its
LLM-evaluation scores.

    rules = [drift(max_share=0.2), privacy(max_epsilon=3.0), llm_score("token_f1", ">=", 0.6)]

Each is skipped (neither passed nor failed) where the record it needs does not exist,
except `privacy(required=True)`, which fails then.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidInputError
from .rules import _OPS, GateContext, Rule, RuleResult

__all__ = ["drift", "llm_score", "privacy"]


def _number(name: str, v: Any, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidInputError(f"{name} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise InvalidInputError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _version_info(ctx: GateContext, version: int) -> dict[str, Any]:
    from ..registry import model_version

    if not ctx.model:
        raise InvalidInputError("this rule needs the model's name: run it through mj.gate")
    return model_version(ctx.model, version=version)


def _run_detail(run_id: str) -> dict[str, Any]:
    from ..tracking.api import get_run

    return get_run(run_id)


# -- drift --------------------------------------------------------------------------------
class drift(Rule):  # noqa: N801 - used as a function in rule lists
    """Drift between the candidate's training data (the data versions its training run read)
    and the current data: the gate's evaluation inputs, or `data=` (a data version, its id
    or name, a frame, or a file). Fails when the share of drifted columns exceeds
    `max_share`; skipped when the candidate has no recorded training data. `columns=`
    limits the comparison; `num_method`, `cat_method` and `thresholds` are mj.drift's."""

    def __init__(
        self,
        max_share: float = 0.2,
        data: Any = None,
        *,
        columns: list[str] | None = None,
        num_method: str = "auto",
        cat_method: str = "auto",
        thresholds: dict[str, float] | None = None,
    ) -> None:
        max_share = _number("max_share", max_share)
        if not 0 <= max_share < 1:
            raise InvalidInputError(f"max_share must be in [0, 1), got {max_share!r}")
        if columns is not None and (
            not isinstance(columns, (list, tuple))
            or not columns
            or not all(isinstance(c, str) for c in columns)
        ):
            raise InvalidInputError(f"columns must be a non-empty list of names, got {columns!r}")
        self.max_share, self.data, self.columns = max_share, data, columns
        self.options = {"num_method": num_method, "cat_method": cat_method}
        self.thresholds = thresholds
        self.name = f"drift(max_share={max_share:g})"

    def _current(self, ctx: GateContext) -> tuple[Any, list[str], str | None]:
        """(current data for mj.drift, its column names, its data version id)."""
        import polars as pl

        from ..data.catalog import DataVersion, get_version
        from ..data.profile import to_polars

        if self.data is None:
            X = ctx.X
            if ctx.columns is not None and not hasattr(X, "columns"):
                X = pl.DataFrame(
                    {c: X[:, i] for i, c in enumerate(ctx.columns)}  # names of the frame's columns
                )
            frame = to_polars(X)
            return frame, list(frame.columns), ctx.data_id
        if isinstance(self.data, DataVersion) or (
            isinstance(self.data, str) and not _exists(self.data)
        ):
            from ..store.data import DataVersionNotFoundError

            try:
                v = get_version(self.data)
            except DataVersionNotFoundError as e:  # a typo in data=: a usage error, not a fail
                raise InvalidInputError(f"{self.name}: data={self.data!r}: {e}") from None
            if v.profile is None:
                raise InvalidInputError(f"data version {v.id} ({v.name}) has no column profile")
            return v, [p["name"] for p in v.profile], v.id
        if isinstance(self.data, str) or hasattr(self.data, "__fspath__"):
            from pathlib import Path

            from .gate import _read_file

            frame = _read_file(Path(self.data).expanduser())
            if isinstance(frame, tuple):
                frame = to_polars(frame[0])
            return frame, list(frame.columns), None
        frame = to_polars(self.data)
        return frame, list(frame.columns), None

    def check(self, ctx: GateContext) -> RuleResult:
        from ..data import compare
        from ..data.catalog import get_version
        from ..data.graph import lineage

        info = _version_info(ctx, ctx.candidate_version)
        if info.get("run_id") is None:
            return RuleResult(
                self.name,
                "skipped",
                f"v{ctx.candidate_version} was not registered from a run: no training data "
                "recorded",
            )
        refs = []
        for v in lineage(info["run_id"]).inputs:
            dv = get_version(v["id"])
            if dv.profile:
                refs.append(dv)
        if not refs:
            return RuleResult(
                self.name,
                "skipped",
                f"the training run {info['run_id']} recorded no input data version with a "
                "profile (mj.data.version(train_df) in the run records one)",
            )
        current, cur_cols, cur_id = self._current(ctx)
        per_version = []
        for ref in refs:
            ref_cols = [p["name"] for p in ref.profile]
            want = self.columns or ref_cols
            shared = [c for c in want if c in ref_cols and c in cur_cols]
            if shared:
                per_version.append((ref, shared))
        if self.columns is not None:
            found = {c for _, cols in per_version for c in cols}
            missing = [c for c in self.columns if c not in found]
            if missing:
                raise InvalidInputError(
                    f"{self.name}: columns {missing} are not in both the training data and "
                    "the current data"
                )
        if not per_version:
            names = ", ".join(
                f"{r.id} ({', '.join(p['name'] for p in r.profile[:10])})" for r in refs
            )
            raise InvalidInputError(
                f"{self.name}: the current data's columns ({', '.join(cur_cols[:10])}) share "
                f"none with the training data {names}: evaluate on a frame with the training "
                "columns' names, or pass data= to the rule"
            )
        cols: dict[str, dict[str, Any]] = {}
        many = len(per_version) > 1
        for ref, shared in per_version:
            rep = compare.drift(
                ref,
                current,
                columns=shared,
                thresholds=self.thresholds,
                store=False,
                **self.options,
            )
            for c in rep.columns:
                key = f"{c['column']} ({ref.id})" if many else c["column"]
                cols[key] = {
                    "training_data": ref.id,
                    "method": c["method"],
                    "statistic": c["statistic"],
                    "threshold": c["threshold"],
                    "drifted": bool(c["drifted"]),
                }
        if not cols:
            return RuleResult(self.name, "skipped", "no column could be compared (kinds differ)")
        drifted = [k for k, c in cols.items() if c["drifted"]]
        share = len(drifted) / len(cols)
        ok = share <= self.max_share
        return RuleResult(
            self.name,
            "pass" if ok else "fail",
            f"{len(drifted)}/{len(cols)} columns drifted (share {share:.2f}, at most "
            f"{self.max_share:g} allowed)" + (f": {', '.join(drifted[:10])}" if drifted else ""),
            {
                "training_data": [r.id for r, _ in per_version],
                "current_data": cur_id,
                "n_columns": len(cols),
                "n_drifted": len(drifted),
                "share": share,
                "max_share": self.max_share,
                "columns": cols,
            },
        )


def _exists(s: str) -> bool:
    import os

    return os.path.exists(os.path.expanduser(s))


# -- privacy ------------------------------------------------------------------------------
class privacy(Rule):  # noqa: N801
    """The differential-privacy guarantee recorded with the candidate (with the version by
    mj.register_model, else in its training run by mj.privacy): fails when epsilon exceeds
    `max_epsilon` or delta exceeds `max_delta`. Skipped when none is recorded, unless
    `required=True`, which fails then."""

    def __init__(
        self, max_epsilon: float, max_delta: float | None = None, *, required: bool = False
    ) -> None:
        self.max_epsilon = _number("max_epsilon", max_epsilon, positive=True)
        self.max_delta = (
            None if max_delta is None else _number("max_delta", max_delta, positive=True)
        )
        if not isinstance(required, bool):
            raise InvalidInputError(f"required must be True or False, got {required!r}")
        self.required = required
        parts = [f"max_epsilon={max_epsilon:g}"]
        if max_delta is not None:
            parts.append(f"max_delta={max_delta:g}")
        if required:
            parts.append("required")
        self.name = f"privacy({', '.join(parts)})"

    def check(self, ctx: GateContext) -> RuleResult:
        info = _version_info(ctx, ctx.candidate_version)
        g = (info.get("meta", {}).get("metadata") or {}).get("privacy")
        source = "version"
        if not g and info.get("run_id") is not None:
            from ..privacy.guarantee import guarantee

            g = guarantee(info["run_id"])
            source = "run"
        if not g:
            return RuleResult(
                self.name,
                "fail" if self.required else "skipped",
                f"no privacy guarantee recorded for v{ctx.candidate_version}"
                + (" and one is required" if self.required else ""),
            )
        eps, delta = g.get("epsilon"), g.get("delta")
        problems = []
        if not isinstance(eps, (int, float)) or not eps <= self.max_epsilon:
            problems.append(f"epsilon={eps} exceeds max_epsilon={self.max_epsilon:g}")
        if self.max_delta is not None and (
            not isinstance(delta, (int, float)) or not delta <= self.max_delta
        ):
            problems.append(f"delta={delta} exceeds max_delta={self.max_delta:g}")
        evidence = {
            "epsilon": eps,
            "delta": delta,
            "accountant": g.get("accountant"),
            "steps": g.get("steps"),
            "source": source,
            "max_epsilon": self.max_epsilon,
            "max_delta": self.max_delta,
        }
        if problems:
            return RuleResult(self.name, "fail", "; ".join(problems), evidence)
        return RuleResult(
            self.name,
            "pass",
            f"(epsilon={eps:.4g}, delta={delta})-DP recorded ({source})",
            evidence,
        )


# -- LLM-evaluation scores ----------------------------------------------------------------
class llm_score(Rule):  # noqa: N801
    """An LLM-evaluation score (mj.llm_eval's `<prefix>/<metric>`) recorded by the
    candidate's run: compared with `value` by `op`, and with `not_worse_by=` the candidate
    may be worse than production's recorded score by at most that much (lower is better
    for refusal, error_rate, latency_s, completion_tokens). Skipped when the candidate has
    no such score; the production comparison is skipped when production has none."""

    def __init__(
        self,
        metric: str,
        op: str = ">=",
        value: float | None = None,
        not_worse_by: float | None = None,
        *,
        prefix: str = "llm",
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise InvalidInputError(f"metric must be a score name like 'token_f1', got {metric!r}")
        if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
            raise InvalidInputError(f"prefix must be a name without a trailing '/', got {prefix!r}")
        if metric.startswith(prefix + "/"):
            metric = metric[len(prefix) + 1 :]
        if op not in _OPS:
            raise InvalidInputError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
        if value is None and not_worse_by is None:
            raise InvalidInputError("llm_score needs value= and/or not_worse_by=")
        self.value = None if value is None else _number("value", value)
        self.by = None if not_worse_by is None else _number("not_worse_by", not_worse_by)
        if self.by is not None and self.by < 0:
            raise InvalidInputError(f"not_worse_by must be >= 0, got {not_worse_by!r}")
        from ..llm.result import LOWER_IS_BETTER

        self.metric, self.op, self.prefix = metric, op, prefix
        self.higher_is_better = metric not in LOWER_IS_BETTER
        head = f"{prefix}/{metric}" + (f" {op} {value:g}" if value is not None else "")
        tail = f", not_worse_by={not_worse_by:g}" if not_worse_by is not None else ""
        self.name = f"llm_score({head}{tail})"

    def _score(self, ctx: GateContext, version: int) -> dict[str, Any] | None:
        """{value, ci_low, ci_high, run} of the version's run (or registered metrics)."""
        info = _version_info(ctx, version)
        key = f"{self.prefix}/{self.metric}"
        if info.get("run_id") is not None:
            last = {m["key"]: m["last"] for m in _run_detail(info["run_id"])["metrics"]}
            v = last.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                return {
                    "value": float(v),
                    "ci_low": last.get(f"{key}/ci_low"),
                    "ci_high": last.get(f"{key}/ci_high"),
                    "run": info["run_id"],
                }
        v = (info.get("metrics") or {}).get(key)  # mj.register_model(metrics={...})
        if isinstance(v, (int, float)) and math.isfinite(v):
            return {"value": float(v), "ci_low": None, "ci_high": None, "run": None}
        return None

    def check(self, ctx: GateContext) -> RuleResult:
        key = f"{self.prefix}/{self.metric}"
        cand = self._score(ctx, ctx.candidate_version)
        if cand is None:
            return RuleResult(
                self.name,
                "skipped",
                f"v{ctx.candidate_version}'s run recorded no {key} (mj.llm_eval in the run "
                "records it)",
            )
        evidence: dict[str, Any] = {"metric": key, "candidate": cand}
        details, failed = [f"{key} = {cand['value']:.4g}"], False
        if self.value is not None:
            ok = _OPS[self.op](cand["value"], self.value)
            failed |= not ok
            details[0] += f" (needs {self.op} {self.value:g})"
            evidence["value"], evidence["op"] = self.value, self.op
        compared = False
        if self.by is not None:
            base = None
            if ctx.baseline_version is not None:
                base = self._score(ctx, ctx.baseline_version)
            if base is None:
                why = (
                    "no production version"
                    if ctx.baseline_version is None
                    else f"baseline v{ctx.baseline_version} recorded no {key}"
                )
                details.append(f"not compared with production: {why}")
            else:
                compared = True
                diff = cand["value"] - base["value"]
                ok = diff >= -self.by if self.higher_is_better else diff <= self.by
                failed |= not ok
                evidence.update(
                    baseline=base,
                    difference=diff,
                    not_worse_by=self.by,
                    higher_is_better=self.higher_is_better,
                )
                details.append(
                    f"vs v{ctx.baseline_version} {base['value']:.4g}: difference {diff:+.4g} "
                    f"({'>=' if self.higher_is_better else '<='} "
                    f"{-self.by if self.higher_is_better else self.by:+.4g} needed)"
                )
        if self.value is None and not compared:
            return RuleResult(self.name, "skipped", "; ".join(details), evidence)
        return RuleResult(self.name, "fail" if failed else "pass", "; ".join(details), evidence)
