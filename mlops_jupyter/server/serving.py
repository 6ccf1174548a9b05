"""REST routes of the sidebar's Serving view:

    GET /mlops/api/v1/serving
        {"models": [{model, requests, first_ts, last_ts}]}, most recently active first (mlops_jupyter.store.serving_stats.served_models).
    GET /mlops/api/v1/serving/{model}?window=5m&windows=48&since=T&until=T&control=V
        traffic, latency percentiles and error rate per variant, overall and per window
        (serving_stats.model_stats); "verdict": the A/B report (the statistics of
        mj.ab_report, read through the server's store), null with "verdict_note" when it
        cannot be made; "rollouts": the registry audit's "rollout" entries, newest first;
        "drift": drift per window (serving.monitor.drift_windows, when installed) and
        "canary": the stored rollout state (store.serving_rollouts, when installed), each
        with a note when missing.

A model with no logged prediction is a 404 JSON answer; bad query values are 400s."""

from __future__ import annotations

import importlib
import math
import time
from typing import Any

import tornado.web

from ..errors import InvalidInputError, RunNotFoundError, StoreError
from ..store.db import Store
from .handlers import BaseHandler

DEFAULT_WINDOWS = 48
ROLLOUT_LIMIT = 50
DRIFT_LIMIT = 50


def _window(raw: str | None) -> float | None:
    """'300' (seconds) or '90s' / '5m' / '1h' / '1d'; None: picked from the data."""
    if raw is None or raw == "":
        return None
    try:
        w = float(raw)
    except ValueError:
        from ..serving.rollout import parse_every

        return parse_every(raw)
    if not (math.isfinite(w) and w > 0):
        raise InvalidInputError(f"query parameter 'window' must be > 0 seconds, got {raw!r}")
    return w


def verdict(
    store: Store,
    model: str,
    variant_versions: dict[str, list[int]],
    control: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """(the A/B report as a dict, None) or (None, why there is none). The same rules as
    mj.ab_report: answered requests with feedback only, binary when every value is 0/1,
    the control defaults to the variant serving the production version. A binary metric
    is counted in SQL (successes, n per variant); other values are read, feedback rows
    only."""
    from ..serving.abtest import report
    from ..store.serving_stats import feedback_counts, feedback_values

    counts = feedback_counts(store, model, since, until)
    values: dict[str, Any] = {}
    if all(c["binary"] == c["finite"] == c["n"] for c in counts.values()):
        # every value is 0/1: (successes, n) counted in SQL is all a binary report needs
        values = {v: (c["ones"], c["n"]) for v, c in counts.items() if c["n"]}
    else:  # numbers to average, or values to refuse: read them (the feedback rows only)
        for v, ys in feedback_values(store, model, since, until).items():
            bad = [y for y in ys if not isinstance(y, (bool, int, float))]
            if bad:
                return None, f"feedback of variant {v} is {bad[0]!r}: an A/B report needs numbers"
            xs = [float(y) for y in ys]
            if any(not math.isfinite(x) for x in xs):
                return None, "feedback values must be finite numbers for an A/B report"
            if xs:
                values[v] = xs
        if all(x in (0.0, 1.0) for xs in values.values() for x in xs):
            values = {v: (int(sum(xs)), len(xs)) for v, xs in values.items()}
    if len(values) < 2:
        return None, (
            f"feedback for {len(values)} variant(s): an A/B report needs two or more"
            if values
            else "no feedback yet: send ground truth to the server's /feedback route"
        )
    binary = all(isinstance(xs, tuple) for xs in values.values())
    metric = "binary" if binary else "continuous"
    if control is None:
        control, why = _default_control(
            store, model, {v: variant_versions.get(v, []) for v in values}
        )
        if control is None:
            return None, why
    elif control not in values:
        return None, f"control {control!r} has no feedback (variants: {sorted(values)})"
    if metric == "binary":
        data: dict[str, Any] = values
    else:
        import numpy as np

        data = {v: np.asarray(xs, np.float64) for v, xs in values.items()}
    try:
        rep = report(data, control, metric=metric)
    except InvalidInputError as e:
        return None, str(e)
    return {**rep.to_dict(), "winner": rep.winner}, None


def _default_control(
    store: Store, model: str, versions: dict[str, list[int]]
) -> tuple[str | None, str | None]:
    from ..store import registry as rs

    try:
        prod = rs.find_version(store, model, stage="production")["version"]
    except rs.ModelNotFoundError:
        prod = None
    hits = [v for v, vs in versions.items() if prod is not None and prod in vs]
    if len(hits) == 1:
        return hits[0], None
    return None, (
        f"cannot tell the control (variants {sorted(versions)}; production version {prod}): "
        "pick one"
    )


def rollouts(store: Store, model: str, limit: int = ROLLOUT_LIMIT) -> list[dict[str, Any]]:
    """The model's "rollout" entries of the registry audit log, newest first."""
    from ..store import registry as rs

    out = []
    for ts, _name, version, action, _frm, _to, _alias, reason, user in rs.audit_log(store, model):
        if action == "rollout":
            out.append({"ts": ts, "version": version, "reason": reason, "user": user})
    return out[::-1][:limit]


def drift(store: Store, model: str, limit: int = DRIFT_LIMIT) -> tuple[list[dict], str | None]:
    """Drift per window from serving.monitor.drift_windows, or ([], why not)."""
    try:
        fn = importlib.import_module("mlops_jupyter.serving.monitor").drift_windows
    except (ImportError, AttributeError):
        return [], "drift monitoring of live inputs is not installed in this version"
    try:
        return list(fn(store, model, limit=limit)), None
    except InvalidInputError as e:
        return [], str(e)


def canary(store: Store, model: str) -> tuple[dict | None, str | None]:
    """The stored rollout state (split or canary step) from store.serving_rollouts, or
    (None, why not) when that module or a layout for the model is missing."""
    try:
        mod = importlib.import_module("mlops_jupyter.store.serving_rollouts")
    except ImportError:
        return None, "live rollouts are not installed in this version"
    fn = getattr(mod, "get_rollout", None) or getattr(mod, "get", None)
    if fn is None:
        return None, "live rollouts are not installed in this version"
    try:
        state = fn(store, model)
    except StoreError as e:  # e.g. a store whose schema predates live rollouts
        return None, f"rollout state unavailable: {e}"
    if state is None:
        return None, "no stored rollout layout for this model"
    if hasattr(state, "to_dict"):
        state = state.to_dict()
    elif hasattr(state, "__dataclass_fields__"):
        from dataclasses import asdict

        state = asdict(state)
    return dict(state), None


def serving_detail(
    store: Store,
    model: str,
    *,
    window: float | None = None,
    windows: int = DEFAULT_WINDOWS,
    since: float | None = None,
    until: float | None = None,
    control: str | None = None,
) -> dict[str, Any]:
    """Everything the Serving view shows for `model` (see the module docstring)."""
    from ..store.api_queries import clean
    from ..store.serving_stats import has_predictions, model_stats

    t0 = time.perf_counter()
    if not has_predictions(store, model):
        raise RunNotFoundError(f"no logged predictions of model {model!r}")
    stats = model_stats(store, model, window=window, windows=windows, since=since, until=until)
    if stats is None:  # nothing in the asked range
        stats = {"model": model, "requests": 0, "first_ts": None, "last_ts": None,
                 "variants": [], "windows": None}  # fmt: skip
    versions = {v["variant"]: v["versions"] for v in stats["variants"]}
    rep, note = verdict(store, model, versions, control, since, until)
    windows_drift, drift_note = drift(store, model)
    state, canary_note = canary(store, model)
    return clean(
        {
            **stats,
            "verdict": rep,
            "verdict_note": note,
            "rollouts": rollouts(store, model),
            "drift": windows_drift,
            "drift_note": drift_note,
            "canary": state,
            "canary_note": canary_note,
            "elapsed_ms": (time.perf_counter() - t0) * 1000,
        }
    )


class ServingModels(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def run() -> dict[str, Any]:
            from ..store.api_queries import clean
            from ..store.serving_stats import served_models

            return clean({"models": served_models(self.store())})

        await self.answer(run)


class ServingModel(BaseHandler):
    @tornado.web.authenticated
    async def get(self, model: str) -> None:
        def run() -> dict[str, Any]:
            windows = self.arg_int("windows", DEFAULT_WINDOWS, lo=1)
            assert windows is not None
            return serving_detail(
                self.store(),
                model,  # tornado has already percent-decoded it
                window=_window(self.arg_str("window")),
                windows=windows,
                since=self.arg_float("since"),
                until=self.arg_float("until"),
                control=self.arg_str("control"),
            )

        await self.answer(run)


def serving_routes() -> list[tuple[str, type]]:
    """Routes (relative to the API prefix) to register before the catch-all."""
    return [(r"/serving", ServingModels), (r"/serving/([^/]+)", ServingModel)]
