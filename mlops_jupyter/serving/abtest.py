"""A/B test statistics for serving rollouts: per-variant summaries, fixed-horizon tests,
the always-valid sequential test, the sample size still needed and a recommended action.
The summaries and fixed-horizon tests live in abstats.py and are re-exported here.

- Binary metrics (a conversion, a correct prediction): two proportions, the pooled z-test
  (two-sided), with the interval of the difference from the unpooled standard error.
- Continuous metrics (revenue, latency, a score): Welch's t-test, with the interval of the
  difference of means on the Welch-Satterthwaite degrees of freedom.
- The sequential test (sequential.py, mSPRT) gives a p-value and an interval that stay valid
  when the report is looked at after every batch; the recommended action rests on it.

Differences are always variant - control. Everything here is pure numpy, plus scipy.special
for the t distribution (imported on first use; the `data` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from ..errors import InvalidInputError
from . import power as _power
from .abstats import (  # noqa: F401  (re-exported: the statistics' public names)
    _N,
    BinarySummary,
    ContinuousSummary,
    Metric,
    Summary,
    TestResult,
    _alpha,
    _count,
    _z_for_sequential,
    compare,
    summarize,
    two_proportions_ztest,
    welch_ttest,
)
from .sequential import DEFAULT_MIN_N, DEFAULT_TAU, SequentialState


# -- the report ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantReport:
    """One variant against the control. p-values are Bonferroni-adjusted (times the number
    of variants, capped at 1) and intervals are at level 1 - alpha / (number of variants)."""

    variant: str
    control: str
    metric: str
    n: int
    estimate: float  # the variant's rate or mean
    n_control: int
    control_estimate: float
    diff: float  # variant - control
    ci_low: float  # fixed-horizon interval of diff
    ci_high: float
    pvalue: float  # fixed-horizon test: valid only if looked at once, at a planned n
    always_valid_p: float  # sequential (mSPRT): valid however often it is looked at
    cs_low: float  # always-valid interval of diff
    cs_high: float
    effect_for_n: float | None  # the effect the sample sizes below are for
    n_needed_control: int | None  # observations still needed for the fixed test
    n_needed_variant: int | None
    action: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ABReport:
    """Every variant against the control, and the recommended actions."""

    control: str
    metric: str
    alpha: float
    correction: str
    looks: int
    variants: tuple[VariantReport, ...]
    higher_is_better: bool = True

    @property
    def winner(self) -> str | None:
        """The variant to promote: of those whose action is "promote", the one with the best
        estimate; None when no variant is to be promoted (keep the control)."""
        best = [v for v in self.variants if v.action == f"promote {v.variant}"]
        if not best:
            return None
        pick = max if self.higher_is_better else min
        return pick(best, key=lambda v: v.estimate).variant

    def __getitem__(self, variant: str) -> VariantReport:
        for v in self.variants:
            if v.variant == variant:
                return v
        raise KeyError(variant)

    @property
    def actions(self) -> dict[str, str]:
        return {v.variant: v.action for v in self.variants}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["variants"] = [v.to_dict() for v in self.variants]
        return d

    def __str__(self) -> str:
        lines = [f"A/B report ({self.metric}, control {self.control}, alpha {self.alpha:g})"]
        for v in self.variants:
            lines.append(
                f"  {v.variant}: n={v.n} est={v.estimate:.4g} vs {v.control_estimate:.4g} "
                f"diff={v.diff:+.4g} (always valid [{v.cs_low:.4g}, {v.cs_high:.4g}]) "
                f"p(always valid)={v.always_valid_p:.3g} p(fixed)={v.pvalue:.3g} -> {v.action}"
            )
        return "\n".join(lines)


class ABTest:
    """Running A/B test state: per-variant summaries and per-variant sequential state.

    Feed it batches with `update` (after each, every variant's always-valid p-value and
    interval take one look), read `report()` whenever you like.

    Recommended action per variant (`m` variants besides the control, Bonferroni: the
    sequential p-value is compared with alpha / m, intervals are at 1 - alpha / m, which
    keeps the chance of any false verdict <= alpha at any time):

    1. always-valid p <= alpha / m and the difference goes the good way
       (`higher_is_better`): "promote <variant>"; the bad way: "roll back <variant>";
    2. else, when `mde` is given and the always-valid interval lies inside (-mde, mde):
       "no difference: keep control" (any effect left is smaller than what matters);
    3. else "keep collecting".

    The fixed-horizon p-value and interval are reported beside, for a test read once at its
    planned size; the sample size still needed is for that test (for `mde`, or the observed
    difference when no mde is given), and 0 once the sequential verdict is in.
    """

    def __init__(
        self,
        control: str,
        variants: Sequence[str],
        *,
        metric: Metric | None = None,
        alpha: float = 0.05,
        power: float = 0.8,
        mde: float | None = None,
        higher_is_better: bool = True,
        tau: float = DEFAULT_TAU,
        min_n: int = DEFAULT_MIN_N,
    ) -> None:
        names = [control, *variants]
        if not variants:
            raise InvalidInputError("an A/B test needs at least one variant besides the control")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise InvalidInputError(f"variant names must be distinct non-empty strings: {names}")
        if metric not in (None, "binary", "continuous"):
            raise InvalidInputError(f"metric must be 'binary' or 'continuous', got {metric!r}")
        self.alpha = _alpha(alpha)
        if not (0 < power < 1):
            raise InvalidInputError(f"power must lie strictly between 0 and 1, got {power!r}")
        if mde is not None and not (math.isfinite(mde) and mde != 0):
            raise InvalidInputError(f"mde must be a non-zero finite number, got {mde!r}")
        if not (math.isfinite(tau) and tau > 0):
            raise InvalidInputError(f"tau must be a positive finite number, got {tau!r}")
        self.control, self.variants = control, tuple(variants)
        self.metric: Metric | None = metric
        self.power, self.mde, self.tau = power, mde, tau
        self.min_n = _count(min_n, "min_n")
        self.higher_is_better = higher_is_better
        self.summaries: dict[str, Summary | None] = dict.fromkeys(names)
        self.states = {v: SequentialState() for v in self.variants}
        self.looks = 0

    @property
    def level(self) -> float:
        """alpha / m: the per-comparison level after the Bonferroni correction."""
        return self.alpha / len(self.variants)

    def update(self, batch: Mapping[str, object]) -> None:
        """Add a batch of observations (or counts) per variant and take one look.

        The whole batch is checked before anything is added: a bad entry changes nothing."""
        unknown = set(batch) - set(self.summaries)
        if unknown:
            raise InvalidInputError(
                f"unknown variant(s) {sorted(unknown)}; this test has {list(self.summaries)}"
            )
        parsed = {k: summarize(v, self.metric) for k, v in batch.items()}
        kinds = {s.metric for s in parsed.values()} | ({self.metric} if self.metric else set())
        if len(kinds) > 1:
            raise InvalidInputError(f"a batch mixes binary and continuous data: {parsed}")
        if kinds:
            self.metric = kinds.pop()
        for k, s in parsed.items():
            old = self.summaries[k]
            self.summaries[k] = s if old is None else old.merge(s)
        self.looks += 1
        a = self.summaries[self.control]
        for v, state in self.states.items():
            b = self.summaries[v]
            if a is None or b is None:
                state.looks += 1
                continue
            z, diff, se = _z_for_sequential(a, b)
            state.look(
                z=z, diff=diff, se=se, n_a=a.n, n_b=b.n, tau=self.tau, alpha=self.level,
                min_n=self.min_n,
            )  # fmt: skip

    def _needed(self, a: Summary, b: Summary, diff: float) -> tuple[float | None, int, int]:
        effect = self.mde if self.mde is not None else diff
        if not (math.isfinite(effect) and effect != 0) or a.n == 0 or b.n == 0:
            raise InvalidInputError("no effect to size for")
        ratio = b.n / a.n
        kw = {"alpha": self.level, "power": self.power, "ratio": ratio}
        if isinstance(a, BinarySummary):
            try:
                need = _power.sample_size_proportions(a.mean, effect, **kw)
            except InvalidInputError:  # p + effect leaves (0, 1): size the other direction
                need = _power.sample_size_proportions(a.mean, -effect, **kw)
        else:
            sd_b = math.sqrt(b.variance) if b.variance > 0 else None
            need = _power.sample_size_means(math.sqrt(a.variance), effect, sd_variant=sd_b, **kw)
        return abs(effect), max(0, need[0] - a.n), max(0, need[1] - b.n)

    def _action(self, variant: str, p_adj: float, diff: float, lo: float, hi: float) -> str:
        if p_adj <= self.alpha and diff != 0:
            return (
                f"promote {variant}"
                if (diff > 0) == self.higher_is_better
                else (f"roll back {variant}")
            )
        if self.mde is not None and -abs(self.mde) < lo and hi < abs(self.mde):
            return "no difference: keep control"
        return "keep collecting"

    def to_state(self) -> dict:
        """The whole running state as a JSON-able dict (a few numbers per variant), for
        keeping it between processes; `ABTest.from_state` restores it."""
        sums = {
            k: None if s is None else [s.metric, *_fields(s)] for k, s in self.summaries.items()
        }
        seq = {v: [_num(s.pvalue), _num(s.ci_low), _num(s.ci_high), s.looks]
               for v, s in self.states.items()}  # fmt: skip
        return {
            "control": self.control, "variants": list(self.variants), "metric": self.metric,
            "alpha": self.alpha, "power": self.power, "mde": self.mde, "tau": self.tau,
            "min_n": self.min_n, "higher_is_better": self.higher_is_better,
            "looks": self.looks, "summaries": sums, "sequential": seq,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping) -> ABTest:
        """An ABTest from `to_state()`'s dict; a malformed dict raises InvalidInputError."""
        try:
            opts = {k: state[k] for k in ("metric", "alpha", "power", "mde", "tau", "min_n")}
            test = cls(state["control"], state["variants"], **opts,
                       higher_is_better=bool(state["higher_is_better"]))  # fmt: skip
            for k, v in state["summaries"].items():
                if k not in test.summaries:
                    raise KeyError(k)
                if v is not None:
                    kind = {"binary": BinarySummary, "continuous": ContinuousSummary}[v[0]]
                    test.summaries[k] = kind(*v[1:])
            for v, (p, lo, hi, looks) in state["sequential"].items():
                test.states[v] = SequentialState(
                    float(p), _inf(lo, -1), _inf(hi, 1), _count(looks, "looks")
                )
            test.looks = _count(state["looks"], "looks")
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InvalidInputError(f"not an A/B test state: {e!r}") from e
        return test

    def report(self) -> ABReport:
        """The report at the current totals (see the class docstring for the action rule)."""
        m, nan = len(self.variants), math.nan
        a = self.summaries[self.control]
        rows = []
        for v in self.variants:
            b, st = self.summaries[v], self.states[v]
            fixed = None
            if a is not None and b is not None:
                try:
                    fixed = compare(a, b, alpha=self.level)
                except InvalidInputError:  # too few observations so far
                    fixed = None
            effect = need_a = need_b = None
            if fixed is not None:
                try:
                    effect, need_a, need_b = self._needed(a, b, fixed.diff)
                except InvalidInputError:  # no variation yet, or no effect to size for
                    pass
            diff = fixed.diff if fixed else nan
            p_av = min(1.0, m * st.pvalue)
            action = self._action(v, p_av, diff, st.ci_low, st.ci_high)
            if action != "keep collecting" and need_a is not None:
                need_a = need_b = 0  # the sequential verdict is in: nothing more is needed
            rows.append(
                VariantReport(
                    variant=v,
                    control=self.control,
                    metric=self.metric or "unknown",
                    n=b.n if b else 0,
                    estimate=b.mean if b else nan,
                    n_control=a.n if a else 0,
                    control_estimate=a.mean if a else nan,
                    diff=diff,
                    ci_low=fixed.ci_low if fixed else nan,
                    ci_high=fixed.ci_high if fixed else nan,
                    pvalue=min(1.0, m * fixed.pvalue) if fixed else nan,
                    always_valid_p=p_av,
                    cs_low=st.ci_low,
                    cs_high=st.ci_high,
                    effect_for_n=effect,
                    n_needed_control=need_a,
                    n_needed_variant=need_b,
                    action=action,
                )
            )
        return ABReport(
            self.control, self.metric or "unknown", self.alpha, "bonferroni", self.looks,
            tuple(rows), self.higher_is_better,
        )  # fmt: skip


def _fields(s: Summary) -> list:
    return [s.successes, s.n] if isinstance(s, BinarySummary) else [s.n, s.mean, s.m2]


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no infinity: None is unbounded


def _inf(x: float | None, sign: int) -> float:
    return sign * math.inf if x is None else float(x)


def report(data: Mapping[str, object], control: str, **options) -> ABReport:
    """One-shot A/B report from the totals per variant (raw observations, (successes, n),
    (n, mean, variance) or summaries); `options` are ABTest's. The always-valid p-value
    is then that of a single look, which stays valid whenever the look is taken."""
    if control not in data:
        raise InvalidInputError(f"control {control!r} is not among the variants {list(data)}")
    test = ABTest(control, [k for k in data if k != control], **options)
    test.update(data)
    return test.report()
