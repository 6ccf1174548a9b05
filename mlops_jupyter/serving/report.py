"""`mj.ab_report`: the A/B report of a served model from its prediction log and the
feedback sent later, and `mj.promote_winner`, which moves the winning version to
production through the registry (its audit log records why).

Only answered requests (status 200) that received feedback count: a request without ground
truth says nothing about which variant is better. A metric whose feedback values are all
0/1 (or booleans) is binary (successes / n); otherwise continuous (the mean)."""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidInputError
from .abtest import ABReport, report


def _observations(model: str, since: float | None, until: float | None) -> dict[str, Any]:
    from ..store import serving as sstore
    from ..tracking.api import current_store, remote_url

    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"model must be a model name, got {model!r}")
    if (url := remote_url()) is not None:  # the server's store, through its route
        from ..remote.serving import outcomes

        rows = outcomes(url, model, since, until)
    else:
        rows = sstore.outcomes(current_store(), model, since, until)
    if not rows:
        raise InvalidInputError(f"no answered predictions of model {model!r} in the store")
    return rows


def _numbers(rs: list[dict]) -> list[float]:
    """The feedback values of requests that got one (the decoded JSON: the stored number
    column cannot hold NaN on SQLite, which must be refused, not dropped)."""
    out = []
    for r in rs:
        y = r["value"]
        if y is None:
            continue
        if not isinstance(y, (bool, int, float)):
            raise InvalidInputError(
                f"feedback of request {r['request_id']} is {y!r}: an A/B report needs numbers "
                "(0/1 for a binary metric)"
            )
        out.append(float(y))
    return out


def _versions(rows: dict[str, list[dict]]) -> dict[str, set[int]]:
    return {v: {r["version"] for r in rs if r["version"] is not None} for v, rs in rows.items()}


def _default_control(model: str, versions: dict[str, set[int]]) -> str:
    """The variant serving the production version (one variant only), else an error."""
    from ..registry import model_version

    try:
        prod = model_version(model, stage="production")["version"]
    except Exception:  # no production version: the caller must name the control
        prod = None
    hits = [v for v, vs in versions.items() if prod is not None and prod in vs]
    if len(hits) != 1:
        raise InvalidInputError(
            f"cannot tell the control of {model!r} (variants {sorted(versions)}; production "
            f"version {prod}): pass control='variant'"
        )
    return hits[0]


def ab_report(
    model: str,
    control: str | None = None,
    *,
    metric: str | None = None,
    since: float | None = None,
    until: float | None = None,
    **options: Any,
) -> ABReport:
    """Per-variant metrics of served `model` with confidence intervals, the fixed and the
    always-valid (sequential) p-values, the sample still needed and a recommended action
    (see docs/serving.md). `control`: the variant to compare against (default: the one
    serving the production version). `metric`: "binary" or "continuous" (default: binary
    when every feedback value is 0/1). `since`/`until`: seconds since the epoch.
    `options`: ABTest's (alpha, mde, higher_is_better, tau...)."""
    rows = _observations(model, since, until)
    values = {v: xs for v, rs in rows.items() if (xs := _numbers(rs))}
    if len(values) < 2:
        raise InvalidInputError(
            f"model {model!r} has feedback for {len(values)} variant(s) "
            f"({sorted(values)}): an A/B report needs two or more"
        )
    if any(not math.isfinite(x) for xs in values.values() for x in xs):
        raise InvalidInputError("feedback values must be finite numbers for an A/B report")
    if metric is None:
        binary = all(x in (0.0, 1.0) for xs in values.values() for x in xs)
        metric = "binary" if binary else "continuous"
    if metric not in ("binary", "continuous"):
        raise InvalidInputError(f"metric must be 'binary' or 'continuous', got {metric!r}")
    if control is None:
        control = _default_control(model, {v: _versions(rows)[v] for v in values})
    if metric == "binary":
        data: dict[str, Any] = {v: (int(sum(xs)), len(xs)) for v, xs in values.items()}
    else:
        import numpy as np

        data = {v: np.asarray(xs, np.float64) for v, xs in values.items()}
    return report(data, control, metric=metric, **options)


def promote_winner(model: str, rep: ABReport, reason: str | None = None) -> int | None:
    """Move the version behind `rep.winner` to production (staging first where the
    registry's transitions require it); returns that version, or None when the report
    has no winner (nothing changes). A variant that served several versions is refused."""
    from ..registry import model_version, promote_model

    winner = rep.winner
    if winner is None:
        return None
    versions = _versions(_observations(model, None, None)).get(winner, set())
    if len(versions) != 1:
        raise InvalidInputError(
            f"variant {winner!r} of {model!r} served versions {sorted(versions)}: "
            "promote one yourself with mj.promote_model"
        )
    (version,) = versions
    why = (
        reason
        or f"A/B report: {rep[winner].action} (always-valid p {rep[winner].always_valid_p:.3g})"
    )
    if model_version(model, version)["stage"] not in ("staging", "production"):
        promote_model(model, version, "staging", why)
    if model_version(model, version)["stage"] != "production":
        promote_model(model, version, "production", why)
    return version
