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


def _check_model(model: str) -> None:
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"model must be a model name, got {model!r}")


def _no_answers(model: str) -> InvalidInputError:
    return InvalidInputError(f"no answered predictions of model {model!r} in the store")


def _observations(model: str, since: float | None, until: float | None) -> dict[str, Any]:
    """Every answered request with its feedback, per variant (the server's store through
    its route when logging remotely)."""
    from ..store import serving as sstore
    from ..tracking.api import current_store, remote_url

    _check_model(model)
    if (url := remote_url()) is not None:  # the server's store, through its route
        from ..remote.serving import outcomes

        rows = outcomes(url, model, since, until)
    else:
        rows = sstore.outcomes(current_store(), model, since, until)
    if not rows:
        raise _no_answers(model)
    return rows


def _local(
    model: str, since: float | None, until: float | None, metric: str | None
) -> tuple[dict[str, Any], dict[str, set[int]]] | None:
    """`ab_inputs` of the session's store, or of the tracking server's through its route
    when logging remotely (None there too when the values need the full read)."""
    from ..tracking.api import current_store, remote_url

    if (url := remote_url()) is not None:
        from ..remote.serving import ab_inputs as remote_inputs

        got = remote_inputs(url, model, since, until, metric)
        return None if got is None or got[0] is None else got  # type: ignore[return-value]
    return ab_inputs(current_store(), model, since, until, metric)


def ab_inputs(
    store: Any, model: str, since: float | None, until: float | None, metric: str | None
) -> tuple[dict[str, Any], dict[str, set[int]]] | None:
    """What `ab_report` needs from `store`, without reading the log: (per variant with
    feedback, its values, or (successes, n) when the metric is binary, counted in SQL; per
    variant, the versions it answered with). None where the values must be checked one by
    one (a non-number or non-finite value: the full read names the request)."""
    from ..store.serving_stats import answered_versions, feedback_counts, feedback_values

    versions = answered_versions(store, model, since, until)
    if not versions:
        raise _no_answers(model)
    counts = feedback_counts(store, model, since, until)
    if any(c["finite"] != c["n"] for c in counts.values()):
        return None
    if metric in (None, "binary") and all(c["binary"] == c["n"] for c in counts.values()):
        return {v: (c["ones"], c["n"]) for v, c in counts.items() if c["n"]}, versions
    # numbers to average (or 0/1 asked for as continuous): the feedback rows, in time order
    raw = feedback_values(store, model, since, until)
    return {v: [float(y) for y in ys] for v, ys in raw.items() if ys}, versions


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


def _answered_versions(model: str) -> dict[str, set[int]]:
    """Per variant, the versions it answered with (all time)."""
    from ..store.serving_stats import answered_versions
    from ..tracking.api import current_store, remote_url

    _check_model(model)
    if (url := remote_url()) is not None:
        from ..remote.serving import ab_inputs as remote_inputs

        got = remote_inputs(url, model, None, None, None)
        return got[1] if got is not None else _versions(_observations(model, None, None))
    versions = answered_versions(current_store(), model)
    if not versions:
        raise _no_answers(model)
    return versions


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
    _check_model(model)
    local = _local(model, since, until, metric)
    if local is not None:
        values, versions = local
    else:
        rows = _observations(model, since, until)
        values = {v: xs for v, rs in rows.items() if (xs := _numbers(rs))}
        versions = _versions(rows)
    if len(values) < 2:
        raise InvalidInputError(
            f"model {model!r} has feedback for {len(values)} variant(s) "
            f"({sorted(values)}): an A/B report needs two or more"
        )
    lists = [xs for xs in values.values() if isinstance(xs, list)]
    if any(not math.isfinite(x) for xs in lists for x in xs):
        raise InvalidInputError("feedback values must be finite numbers for an A/B report")
    if metric is None:
        binary = all(x in (0.0, 1.0) for xs in lists for x in xs)
        metric = "binary" if binary else "continuous"
    if metric not in ("binary", "continuous"):
        raise InvalidInputError(f"metric must be 'binary' or 'continuous', got {metric!r}")
    if control is None:
        control = _default_control(model, {v: versions.get(v, set()) for v in values})
    if metric == "binary":
        data: dict[str, Any] = {
            v: xs if isinstance(xs, tuple) else (int(sum(xs)), len(xs)) for v, xs in values.items()
        }
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
    versions = _answered_versions(model).get(winner, set())
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
