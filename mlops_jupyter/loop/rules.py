"""Gate rules and per-example metrics.

A metric maps (y_true, predictions) to one value per example, so a gate can compare a
candidate and the production model on the same examples (a paired bootstrap) instead of
on two summary numbers. Rules see a GateContext and return a RuleResult.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError


# -- metrics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A per-example metric: fn(y_true, pred) -> array of one value per example.
    `needs`: "label" (class labels: scores are arg-maxed), "proba" (probabilities) or
    "raw" (the model's output as it is)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], Any]
    higher_is_better: bool = True
    needs: str = "raw"

    def per_example(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The metric's values on each example, checked for shape and finiteness."""
        vals = np.asarray(self.fn(y, _prepare(out, self.needs)), dtype=np.float64).reshape(-1)
        if vals.shape[0] != len(y):
            raise InvalidInputError(
                f"metric {self.name!r} gave {vals.shape[0]} values for {len(y)} examples: a "
                "gate metric must return one value per example"
            )
        if not np.isfinite(vals).all():
            raise InvalidInputError(f"metric {self.name!r} gave non-finite values")
        return vals


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _prepare(out: np.ndarray, needs: str) -> np.ndarray:
    out = np.asarray(out)
    if needs == "label" and out.ndim == 2:
        return out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] >= 0.5).astype(int)
    if needs == "proba" and out.ndim == 2:
        probs = (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-4)
        return out if probs else _softmax(out.astype(np.float64))  # logits
    return out.reshape(len(out)) if out.ndim == 2 and out.shape[1] == 1 else out


def _log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    eps = 1e-15
    y = np.asarray(y).astype(int).reshape(-1)
    if p.ndim == 2:
        return -np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))
    p = np.clip(p.astype(np.float64), eps, 1 - eps)  # binary: P(class 1)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _flat(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", lambda y, p: np.asarray(y).reshape(-1) == p, True, "label"),
    "absolute_error": Metric(
        "absolute_error", lambda y, p: np.abs(_flat(y) - _flat(p)), False, "raw"
    ),
    "squared_error": Metric("squared_error", lambda y, p: (_flat(y) - _flat(p)) ** 2, False, "raw"),
    "log_loss": Metric("log_loss", _log_loss, False, "proba"),
}


def metric(spec: Any) -> Metric:
    """A Metric from a built-in name ("accuracy", "absolute_error", "squared_error",
    "log_loss"), a Metric, or a per-example callable fn(y_true, pred) (higher is better)."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec not in METRICS:
            raise InvalidInputError(
                f"unknown metric {spec!r}; built-ins: {', '.join(METRICS)} (or pass "
                "mj.loop.Metric(name, fn, higher_is_better) or a callable)"
            )
        return METRICS[spec]
    if callable(spec):
        return Metric(getattr(spec, "__name__", "metric"), spec)
    raise InvalidInputError(f"a metric must be a name, a Metric or a callable, got {spec!r}")


_as_metric = metric  # the rules' constructors take a parameter named `metric`


# -- the paired bootstrap -----------------------------------------------------------------
_BINNED_FROM = 20_000
_BINS = 256


def paired_bootstrap(
    diff: np.ndarray, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of `diff` (per-example candidate - baseline) over
    `n_boot` resamples of the examples. Seeded: the same data gives the same interval."""
    n = len(diff)
    if n == 0:
        raise InvalidInputError("the evaluation data has no examples")
    rng = np.random.default_rng(seed)
    values, counts = np.unique(diff, return_counts=True)
    if len(values) <= 64:
        # Few distinct values (accuracy differences are -1, 0, 1): drawing how many times
        # each value is picked is the same resampling, and O(n_boot * values), not O(n).
        picks = rng.multinomial(n, counts / n, size=n_boot)
        means = picks @ values / n
    elif n > _BINNED_FROM:
        # Many distinct values and many examples: resample 256 quantile bins (how many
        # picks each gets) and add the spread of the picks within each bin as a normal term
        # (c_k picks from a bin of variance s_k^2 add c_k * s_k^2 / n^2 to the mean's
        # variance). The same distribution to within ~1e-3 of the interval's width, and
        # O(n_boot * bins) instead of O(n_boot * n): 100k examples in milliseconds.
        bins = np.array_split(np.sort(diff), _BINS)
        mu = np.array([b.mean() for b in bins])
        var = np.array([b.var() for b in bins])
        sizes = np.array([len(b) for b in bins])
        picks = rng.multinomial(n, sizes / n, size=n_boot)
        means = picks @ mu / n + np.sqrt(picks @ var) / n * rng.standard_normal(n_boot)
    else:
        means = np.empty(n_boot)
        step = max(1, 4_000_000 // n)  # bounded memory for the index matrix
        for i in range(0, n_boot, step):
            k = min(step, n_boot - i)
            means[i : i + k] = diff[rng.integers(0, n, size=(k, n))].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


# -- rules --------------------------------------------------------------------------------
@dataclass
class RuleResult:
    """One rule's verdict: status "pass", "fail" or "skipped", with evidence."""

    rule: str
    status: str
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "status": self.status,
            "detail": self.detail,
            "evidence": self.evidence,
        }


class NoBaselineError(Exception):
    """A rule asked for the baseline's output where there is none: the rule is skipped."""


@dataclass
class GateContext:
    """What a rule sees: the loaded models, the evaluation data and cached outputs."""

    candidate: Any
    baseline: Any
    X: Any
    y: np.ndarray
    predict: Callable[[Any, Any], np.ndarray]
    candidate_version: int
    baseline_version: int | None
    # the model's name, the feature columns' names (None for array data) and the evaluation
    # data's version id: rules reading the registry and the training data need them
    model: str = ""
    columns: list[str] | None = None
    data_id: str | None = None
    # evaluation slices (mj.gate(slices=...)): a list of slices.SliceDim, or None
    slices: list[Any] | None = None
    min_slice_count: int = 30
    _outputs: dict[str, np.ndarray] = field(default_factory=dict)
    _values: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _slice_rows: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)

    def output(self, which: str) -> np.ndarray:
        """The model's predictions on the evaluation data ("candidate" or "baseline")."""
        if which not in self._outputs:
            if which == "baseline" and self.baseline is None:
                raise NoBaselineError("no production version to compare with")
            model = self.candidate if which == "candidate" else self.baseline
            out = np.asarray(self.predict(model, self.X))
            if len(out) != len(self.y):
                raise InvalidInputError(
                    f"the {which} gave {len(out)} predictions for {len(self.y)} examples"
                )
            self._outputs[which] = out
        return self._outputs[which]

    def values(self, m: Metric, which: str = "candidate") -> np.ndarray:
        """Per-example values of metric `m` for the candidate or the baseline."""
        key = (m.name, which)
        if key not in self._values:
            self._values[key] = m.per_example(self.y, self.output(which))
        return self._values[key]

    def slice_rows(
        self, m: Metric, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
    ) -> list[dict[str, Any]]:
        """Per-slice rows of metric `m` (see loop/slices.py): n, candidate and baseline
        means with intervals, the paired difference and its interval."""
        from .slices import slice_rows

        if not self.slices:
            raise InvalidInputError(
                "a rule with slices=True needs the gate's slices: mj.gate(..., "
                "slices=['column', ...]) or `mlops-jupyter gate --slice COLUMN`"
            )
        key = (m.name, confidence, n_boot, seed)
        if key not in self._slice_rows:
            base = None if self.baseline is None else self.values(m, "baseline")
            self._slice_rows[key] = slice_rows(
                self.slices,
                m.name,
                m.higher_is_better,
                self.values(m),
                base,
                confidence=confidence,
                n_boot=n_boot,
                seed=seed,
                min_count=self.min_slice_count,
            )
        return self._slice_rows[key]


class Rule:
    """Base class: `check(ctx) -> RuleResult`."""

    name = "rule"

    def check(self, ctx: GateContext) -> RuleResult:  # pragma: no cover - abstract
        raise NotImplementedError


_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class threshold(Rule):  # noqa: N801 - used as a function in rule lists
    """The candidate's mean of `metric` compared with `value` (e.g. accuracy >= 0.9)."""

    def __init__(self, metric: Any, op: str, value: float) -> None:
        if op not in _OPS:
            raise InvalidInputError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"threshold value must be a number, got {value!r}")
        self.metric, self.op, self.value = _as_metric(metric), op, float(value)
        self.name = f"threshold({self.metric.name} {op} {value:g})"

    def check(self, ctx: GateContext) -> RuleResult:
        v = ctx.values(self.metric)
        mean = float(v.mean())
        ok = _OPS[self.op](mean, self.value)
        return RuleResult(
            self.name,
            "pass" if ok else "fail",
            f"{self.metric.name} = {mean:.4g} (needs {self.op} {self.value:g})",
            {"metric": self.metric.name, "candidate": mean, "n": len(v)},
        )


class not_worse(Rule):  # noqa: N801
    """The candidate is not worse than the baseline by more than `by` on `metric`, judged
    on the paired bootstrap interval of (candidate - baseline).

    `require="no_regression"` (default): fail only on evidence of a regression larger than
    `by`: the whole interval lies past -by (past +by where lower is better). Noise alone
    fails (1 - confidence) / 2 of the time at most. `require="non_inferiority"`: pass only
    on evidence that it is not worse by more than `by`: the interval must not reach past
    -by (so `by` must be large against the noise; see docs/loop.md)."""

    REQUIRE = ("no_regression", "non_inferiority")

    def __init__(
        self,
        metric: Any,
        by: float = 0.0,
        *,
        require: str = "no_regression",
        confidence: float = 0.95,
        n_boot: int = 1000,
        seed: int = 0,
        slices: bool = False,
    ) -> None:
        if not isinstance(slices, bool):
            raise InvalidInputError(f"slices must be True or False, got {slices!r}")
        if isinstance(by, bool) or not isinstance(by, (int, float)) or not by >= 0:
            raise InvalidInputError(f"by must be a number >= 0, got {by!r}")
        if require not in self.REQUIRE:
            raise InvalidInputError(f"require must be one of {self.REQUIRE}, got {require!r}")
        if not 0 < confidence < 1:
            raise InvalidInputError(f"confidence must be between 0 and 1, got {confidence!r}")
        if not isinstance(n_boot, int) or n_boot < 100:
            raise InvalidInputError(f"n_boot must be an integer >= 100, got {n_boot!r}")
        self.metric, self.by, self.require = _as_metric(metric), float(by), require
        self.confidence, self.n_boot, self.seed = confidence, n_boot, seed
        self.slices = slices
        mode = "" if require == "no_regression" else ", non_inferiority"
        mode += ", slices" if slices else ""
        self.name = f"not_worse({self.metric.name}, by={by:g}{mode})"

    def _decide(self, lo: float, hi: float) -> tuple[bool, float]:
        """(passes, the bound that decided) for a difference interval [lo, hi]."""
        up = self.metric.higher_is_better
        # the bound that decides: the far side of the interval for no_regression (all of
        # it must show a regression), the near side for non_inferiority
        if self.require == "no_regression":
            bound = hi if up else lo
        else:
            bound = lo if up else hi
        return (bound >= -self.by if up else bound <= self.by), bound

    def check(self, ctx: GateContext) -> RuleResult:
        if ctx.baseline is None:
            return RuleResult(self.name, "skipped", "no production version to compare with")
        c, b = ctx.values(self.metric, "candidate"), ctx.values(self.metric, "baseline")
        lo, hi = paired_bootstrap(c - b, self.confidence, self.n_boot, self.seed)
        up = self.metric.higher_is_better
        ok, bound = self._decide(lo, hi)
        which = "upper" if (up == (self.require == "no_regression")) else "lower"
        pct = f"{self.confidence:.0%}"
        evidence = {}
        detail = (
            f"{self.metric.name}: candidate {c.mean():.4g} vs baseline {b.mean():.4g}, "
            f"difference {c.mean() - b.mean():+.4g} ({pct} interval [{lo:+.4g}, {hi:+.4g}]; "
            f"{which} bound {bound:+.4g} {'>=' if up else '<='} "
            f"{-self.by if up else self.by:+.4g} needed)"
        )
        if self.slices:
            evidence, text = self._check_slices(ctx)
            ok = ok and not evidence["slices_failed"]
            detail += f"; {text}"
        return RuleResult(
            self.name,
            "pass" if ok else "fail",
            detail,
            {
                "metric": self.metric.name,
                "higher_is_better": self.metric.higher_is_better,
                "candidate": float(c.mean()),
                "baseline": float(b.mean()),
                "difference": float(c.mean() - b.mean()),
                "interval": [lo, hi],
                "confidence": self.confidence,
                "require": self.require,
                "n": len(c),
                "n_boot": self.n_boot,
                "seed": self.seed,
                **evidence,
            },
        )

    def _check_slices(self, ctx: GateContext) -> tuple[dict[str, Any], str]:
        """Each slice with enough examples judged as the whole set is: (evidence, text)."""
        from .slices import regressions

        rows = ctx.slice_rows(self.metric, self.confidence, self.n_boot, self.seed)
        failed, checked, small = regressions(rows, lambda lo, hi: self._decide(lo, hi)[0])
        bad = [
            {
                "slice": r["slice"],
                "n": r["n"],
                "difference": r["difference"],
                "interval": r["difference_interval"],
            }
            for r in failed
        ]
        margin = f"{-self.by if self.metric.higher_is_better else self.by:+.4g}"
        if bad:
            text = f"slices: {len(bad)} of {checked} regress beyond {margin}: " + ", ".join(
                f"{b['slice']} {b['difference']:+.4g} [{b['interval'][0]:+.4g}, "
                f"{b['interval'][1]:+.4g}]"
                for b in bad
            )
        else:
            text = f"slices: none of {checked} regresses beyond {margin}"
        if small:
            text += f" ({small} too small to judge: under {ctx.min_slice_count} examples)"
        return {"slices_checked": checked, "slices_too_small": small, "slices_failed": bad}, text


class latency(Rule):  # noqa: N801
    """Prediction latency of the candidate, one example per call, on up to `samples`
    examples of the evaluation batch (after a few warm-up calls)."""

    def __init__(
        self, p99_ms: float | None = None, p50_ms: float | None = None, *, samples: int = 200
    ) -> None:
        if p99_ms is None and p50_ms is None:
            raise InvalidInputError("latency needs p99_ms= and/or p50_ms=")
        for nm, v in (("p99_ms", p99_ms), ("p50_ms", p50_ms)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                raise InvalidInputError(f"{nm} must be a positive number, got {v!r}")
        if not isinstance(samples, int) or samples < 1:
            raise InvalidInputError(f"samples must be a positive integer, got {samples!r}")
        self.p99, self.p50, self.samples = p99_ms, p50_ms, samples
        parts = [f"{k}={v:g}" for k, v in (("p99_ms", p99_ms), ("p50_ms", p50_ms)) if v]
        self.name = f"latency({', '.join(parts)})"

    def check(self, ctx: GateContext) -> RuleResult:
        n = len(ctx.y)
        idx = np.linspace(0, n - 1, min(self.samples, n)).astype(int)
        for i in idx[:3]:  # warm-up: first calls pay for lazy initialisation
            ctx.predict(ctx.candidate, _rows(ctx.X, i))
        times = []
        for i in idx:
            t0 = time.perf_counter()
            ctx.predict(ctx.candidate, _rows(ctx.X, i))
            times.append((time.perf_counter() - t0) * 1000)
        p50, p99 = (float(x) for x in np.percentile(times, [50, 99]))
        ok = (self.p99 is None or p99 <= self.p99) and (self.p50 is None or p50 <= self.p50)
        return RuleResult(
            self.name,
            "pass" if ok else "fail",
            f"p50 {p50:.3g} ms, p99 {p99:.3g} ms over {len(times)} single-example calls",
            {"p50_ms": p50, "p99_ms": p99, "calls": len(times)},
        )


def _rows(X: Any, i: int) -> Any:
    """Example `i` of X as a batch of one, in X's own type."""
    if isinstance(X, dict):
        return {k: _rows(v, i) for k, v in X.items()}
    if hasattr(X, "slice") and hasattr(X, "columns"):  # polars
        return X.slice(int(i), 1)
    if hasattr(X, "iloc"):  # pandas
        return X.iloc[int(i) : int(i) + 1]
    return X[int(i) : int(i) + 1]


class custom(Rule):  # noqa: N801
    """A user rule: fn(ctx) -> bool or (bool, evidence dict); ctx is a GateContext (ctx.X,
    ctx.y, ctx.output("candidate"), ctx.output("baseline"), ctx.candidate, ...)."""

    def __init__(self, fn: Callable[[GateContext], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise InvalidInputError(f"custom needs a callable, got {fn!r}")
        self.fn = fn
        self.name = f"custom({name or getattr(fn, '__name__', 'rule')})"

    def check(self, ctx: GateContext) -> RuleResult:
        got = self.fn(ctx)
        evidence: Any = {}
        if isinstance(got, tuple) and len(got) == 2:
            got, evidence = got
        if not isinstance(got, (bool, np.bool_)):
            raise InvalidInputError(
                f"{self.name} returned {got!r}: a custom rule returns a bool or (bool, evidence)"
            )
        if not isinstance(evidence, dict):
            evidence = {"value": evidence}
        return RuleResult(self.name, "pass" if got else "fail", "", evidence)
