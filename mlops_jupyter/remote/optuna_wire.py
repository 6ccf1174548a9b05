"""The JSON form of optuna's objects between the tracking server's optuna routes
(trackserver/optuna_routes.py) and the storage over the server (remote/optuna_storage.py):
both ends encode and validate with these functions. Params travel in optuna's internal
(float) form with each distribution as `distribution_to_json`, attributes as JSON texts
(they may hold NaN), floats that are not finite as "nan"/"inf"/"-inf", datetimes as ISO 8601
in UTC."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any

# optuna is an optional extra: imported where used, so a tracking server without it starts
# (its optuna route then answers that sweeps need optuna on the server)
if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study._study_direction import StudyDirection
    from optuna.trial import FrozenTrial, TrialState

KEY_ATTR = "mlops.create_key"  # the trial system attribute holding a creation's key
HEARTBEAT_ATTR = "mlops.heartbeat"  # heartbeats kept in the journal (SQLite stores)


def enc_float(x: float | None) -> float | str | None:
    """A float for JSON: "nan", "inf", "-inf" for those (JSON has no such numbers)."""
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def dec_float(v: Any, what: str = "value") -> float:
    """The float of `enc_float`'s output; ValueError for anything else."""
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} must be a number (or 'nan', 'inf', '-inf')")
    return float(v)


def enc_time(t: dt.datetime | None) -> str | None:
    """optuna's naive local datetime as ISO 8601 in UTC."""
    return None if t is None else t.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def dec_time(v: Any, what: str) -> dt.datetime | None:
    """ISO 8601 (with a zone; UTC if none) as optuna's naive local datetime."""
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 40:
        raise ValueError(f"{what} must be an ISO 8601 time or null")
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{what} must be an ISO 8601 time or null") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone().replace(tzinfo=None)


def enc_attrs(attrs: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in attrs.items()}


def dec_attrs(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"{what} must be an object of JSON texts")
    out = {}
    for k, s in v.items():
        if not isinstance(s, str):
            raise ValueError(f"{what}[{k!r}] must be a JSON text")
        try:
            out[k] = json.loads(s)
        except (ValueError, RecursionError):
            raise ValueError(f"{what}[{k!r}] is not valid JSON") from None
    return out


def trial_to_json(t: FrozenTrial) -> dict[str, Any]:
    """A FrozenTrial as JSON (params in internal form beside their distributions)."""
    from optuna.distributions import distribution_to_json

    return {
        "trial_id": t._trial_id,
        "number": t.number,
        "state": t.state.name,
        "values": None if t.values is None else [enc_float(v) for v in t.values],
        "datetime_start": enc_time(t.datetime_start),
        "datetime_complete": enc_time(t.datetime_complete),
        "params": {
            k: enc_float(t.distributions[k].to_internal_repr(v)) for k, v in t.params.items()
        },
        "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
        "user_attrs": enc_attrs(t.user_attrs),
        "system_attrs": enc_attrs(t.system_attrs),
        "intermediate_values": {str(k): enc_float(v) for k, v in t.intermediate_values.items()},
    }


def distribution(v: Any, what: str = "distribution") -> BaseDistribution:
    """optuna's `json_to_distribution`, its errors (of any kind) as ValueError."""
    from optuna.distributions import BaseDistribution, json_to_distribution

    if not isinstance(v, str) or len(v) > 100_000:
        raise ValueError(f"{what} must be optuna's distribution JSON text")
    try:
        d = json_to_distribution(v)
    except Exception as e:
        raise ValueError(f"{what} is not a valid distribution: {type(e).__name__}") from None
    if not isinstance(d, BaseDistribution):
        raise ValueError(f"{what} is not a valid distribution")
    return d


def state_of(v: Any) -> TrialState:
    from optuna.trial import TrialState

    states = {s.name: s for s in TrialState}
    if not isinstance(v, str) or v not in states:
        raise ValueError(f"state must be one of {sorted(states)}")
    return states[v]


def _int(v: Any, what: str, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low or v > 2**62:
        raise ValueError(f"{what} must be an integer >= {low}")
    return v


def trial_from_json(d: Any) -> FrozenTrial:
    """A FrozenTrial from `trial_to_json`'s form; ValueError naming the bad field."""
    from optuna.trial import FrozenTrial

    if not isinstance(d, dict):
        raise ValueError("a trial must be an object")
    dists_in = d.get("distributions") or {}
    params_in = d.get("params") or {}
    if not isinstance(dists_in, dict) or not isinstance(params_in, dict):
        raise ValueError("params and distributions must be objects")
    if set(dists_in) != set(params_in):
        raise ValueError("params and distributions must have the same names")
    dists = {k: distribution(v, f"distributions[{k!r}]") for k, v in dists_in.items()}
    params = {}
    for k, v in params_in.items():
        x = dec_float(v, f"params[{k!r}]")
        if not dists[k]._contains(x):
            raise ValueError(f"params[{k!r}] is outside its distribution")
        params[k] = dists[k].to_external_repr(x)
    values = d.get("values")
    if values is not None:
        if not isinstance(values, list) or len(values) > 64:
            raise ValueError("values must be a list of numbers or null")
        values = [dec_float(v, "values[]") for v in values] or None
    inter_in = d.get("intermediate_values") or {}
    if not isinstance(inter_in, dict):
        raise ValueError("intermediate_values must be an object")
    inter = {}
    for k, v in inter_in.items():
        try:
            step = int(k)
        except ValueError:
            raise ValueError("intermediate_values' keys must be integer steps") from None
        inter[_int(step, "a step")] = dec_float(v, "intermediate_values[]")
    state = state_of(d.get("state", "RUNNING"))
    t = FrozenTrial(
        number=_int(d.get("number", 0), "number", -1),  # -1: a template's (ignored)
        state=state,
        value=None,
        values=values,
        datetime_start=dec_time(d.get("datetime_start"), "datetime_start"),
        datetime_complete=dec_time(d.get("datetime_complete"), "datetime_complete"),
        params=params,
        distributions=dists,
        user_attrs=dec_attrs(d.get("user_attrs") or {}, "user_attrs"),
        system_attrs=dec_attrs(d.get("system_attrs") or {}, "system_attrs"),
        intermediate_values=inter,
        trial_id=_int(d.get("trial_id", 0), "trial_id", -1),
    )
    return t


def study_directions(v: Any) -> list[StudyDirection]:
    from optuna.study._study_direction import StudyDirection

    return [StudyDirection[x] for x in v]
