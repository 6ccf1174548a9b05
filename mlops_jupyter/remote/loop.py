"""The closed loop through a tracking server (routes: trackserver/loop_routes.py).
mlops_jupyter.loop calls these when MLOPS_JUPYTER_STORE is http(s)://.

- `mj.gate` evaluates in this process (it loads both models through the registry routes)
  and `save_gate` sends the verdict with a request key made here, so it is retried while
  the server cannot be reached: a retry after a lost answer gets the first verdict's id
  and stores nothing.
- Cards and lineage graphs are collected by the server from its store and rendered here;
  the audit view combines the registry's audit log with the stored gate verdicts.
- The watcher's state (store/loop_state.py): claims and resumes are compare-and-set on
  the server, so two watchers anywhere never handle one signal twice. A resume carries a
  request key too: sent again after a lost answer, it answers as the first did.
- Reads, policies, approvals and card fields are retried while the server cannot be
  reached (storing the same state again changes nothing but adds an audit line)."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import StoreError
from . import registry as rremote
from .api import RemoteStore
from .client import ServerRefused

_SCOPES = (
    "reading needs scope read; storing a gate verdict, approving and card fields need "
    "write; a model's policy needs admin"
)


def _path(name: str, tail: str) -> str:
    return f"/api/v1/models/{quote(name, safe='')}/{tail}"


def _error(store: RemoteStore, e: ServerRefused, what: str) -> Exception:
    if e.status == 403:
        return StoreError(
            f"the token in MLOPS_JUPYTER_TOKEN may not {what} on the tracking server "
            f"{store.client.shown}: {rremote._detail(e)}. {_SCOPES[0].upper()}{_SCOPES[1:]}"
        )
    if e.code == "ENDPOINT_NOT_FOUND":
        return StoreError(
            f"the tracking server {store.client.shown} has no routes for gates, cards and "
            "approvals (an older version?)"
        )
    return rremote._error(store, e, what)


def _call(
    url: str, method: str, path: str, body: Any, what: str, retry: bool = True
) -> dict[str, Any]:
    from .files import call

    return call(rremote._store(url), method, path, body, what, _error, retry)


def _plain(v: Any) -> Any:
    """JSON-able: numpy scalars and arrays as numbers and lists, non-finite floats as None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # numpy values
        return _plain(v.tolist())
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def _user() -> str:
    from .. import registry as reg

    return reg._user()


# -- gates -----------------------------------------------------------------------------


def save_gate(url: str, report: Any) -> int:
    """Store a GateReport's verdict on the server; its id. One request key for every try:
    a retry after a lost answer stores nothing and answers the first verdict's id."""
    body = {
        "report": _plain(report.to_dict()),
        "summary": report.summary(),
        "user": _user(),
        "key": uuid.uuid4().hex,
    }
    path = _path(report.model, f"versions/{report.candidate}/gates")
    what = f"store the gate of {report.model} v{report.candidate}"
    return int(_call(url, "POST", path, body, what)["id"])


def list_gates(url: str, name: str | None, version: int | None) -> list[dict[str, Any]]:
    """Stored gate verdicts, oldest first (as store.gates.list_gates)."""
    q = {k: v for k, v in (("model", name), ("version", version)) if v is not None}
    path = "/api/v1/gates" + (f"?{urlencode(q)}" if q else "")
    return _call(url, "GET", path, None, "read gate verdicts")["gates"]


def latest_gate(
    url: str, name: str, version: int, baseline_version: int | None
) -> dict[str, Any] | None:
    """The newest verdict of `name` v`version` against `baseline_version` (None: against no
    production version), or None."""
    q = f"?{urlencode({'baseline': baseline_version})}" if baseline_version is not None else ""
    path = _path(name, f"versions/{version}/latest-gate{q}")
    return _call(url, "GET", path, None, f"read the gates of {name} v{version}")["gate"]


# -- policies and approvals ------------------------------------------------------------


def set_policy(url: str, name: str, require_gate: bool) -> dict[str, Any]:
    """Set the promotion policy of `name` (admin scope); the policy now stored."""
    body = {"require_gate": require_gate, "user": _user()}
    return _call(url, "PUT", _path(name, "policy"), body, f"set the policy of {name!r}")["policy"]


def get_policy(url: str, name: str) -> dict[str, Any]:
    """The promotion policy of `name` ({} when none)."""
    return _call(url, "GET", _path(name, "policy"), None, f"read the policy of {name!r}")["policy"]


def set_approval(
    url: str, name: str, version: int, decision: str, reason: str | None
) -> dict[str, Any] | None:
    """Record `decision` on `name` v`version`; the decision as stored."""
    body: dict[str, Any] = {"decision": decision, "user": _user()}
    if reason is not None:
        body["reason"] = reason
    what = f"{'approve' if decision == 'approved' else 'reject'} {name} v{version}"
    return _call(url, "POST", _path(name, f"versions/{version}/approval"), body, what)["approval"]


def get_approval(url: str, name: str, version: int) -> dict[str, Any] | None:
    """The decision on `name` v`version`, or None."""
    path = _path(name, f"versions/{version}/approval")
    return _call(url, "GET", path, None, f"read the approval of {name} v{version}")["approval"]


# -- cards, lineage, audit -------------------------------------------------------------


def set_card_fields(url: str, name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Merge card fields of `name` (None removes one); the fields now stored."""
    body = {"fields": json.loads(json.dumps(fields)), "user": _user()}
    what = f"write the card fields of {name!r}"
    return _call(url, "PATCH", _path(name, "card-fields"), body, what)["fields"]


def get_card_fields(url: str, name: str) -> dict[str, Any]:
    """The user-written card fields of `name`."""
    path = _path(name, "card-fields")
    return _call(url, "GET", path, None, f"read the card fields of {name!r}")["fields"]


def card(url: str, name: str, version: int | None) -> dict[str, Any]:
    """What the card of `name` `version` shows (loop/card.py collect), from the server."""
    q = f"?{urlencode({'version': version})}" if version is not None else ""
    return _call(url, "GET", _path(name, f"card{q}"), None, f"read the card of {name!r}")["card"]


def model_lineage(url: str, name: str, version: int | None) -> Any:
    """The lineage graph of `name` (every version, or one), from the server."""
    from ..loop.lineage import ModelLineage

    q = f"?{urlencode({'version': version})}" if version is not None else ""
    d = _call(url, "GET", _path(name, f"lineage{q}"), None, f"read the lineage of {name!r}")
    return ModelLineage(d["model"], {n["id"]: n for n in d["nodes"]}, d["edges"])


def model_names(url: str) -> list[str]:
    """Names of all registered models on the server."""
    return sorted({v["name"] for v in rremote.list_versions(url)})


def audit_data(url: str, model: str | None) -> tuple[list[tuple], list[dict[str, Any]]]:
    """(the registry's audit rows, the gate verdicts) of one model or all, for mj.audit."""
    rows = rremote.audit_log(url, model)
    if model is not None and not rows:
        rremote.find_version(url, model)  # an unknown model: ModelNotFoundError
    return rows, list_gates(url, model, None)


# -- the watcher's state ---------------------------------------------------------------


def claim(url: str, rule: str, signal: str, detail: dict[str, Any], owner: str) -> bool:
    """Claim `signal` of `rule` for `owner` (compare-and-set on the server); False when
    another watcher holds it. A claim sent again after a lost answer finds its own owner
    and counts as made."""
    body = {"rule": rule, "signal": signal, "detail": _plain(detail), "owner": owner}
    out = _call(url, "POST", "/api/v1/loop/signals", body, f"claim signal {signal!r}")
    return bool(out["claimed"]) or out.get("owner") == owner


def resume(url: str, rule: str, signal: str, owner: str) -> dict[str, Any] | None:
    """Take a waiting signal back to running (compare-and-set); its detail, or None. One
    request key for every try: a retry after a lost answer changes nothing and answers as
    the first did."""
    body = {"rule": rule, "signal": signal, "owner": owner, "key": uuid.uuid4().hex}
    what = f"resume signal {signal!r}"
    return _call(url, "POST", "/api/v1/loop/signals/resume", body, what)["detail"]


def update(
    url: str,
    rule: str,
    signal: str,
    state: str,
    detail: dict[str, Any],
    owner: str | None = None,
) -> bool:
    """Set the state and detail of a claimed signal (with `owner`: only while that watcher
    holds it; setting the same twice is harmless, so a retry is safe); whether it was
    set."""
    body: dict[str, Any] = {"rule": rule, "signal": signal, "state": state}
    body["detail"] = _plain(detail)
    if owner is not None:
        body["owner"] = owner
    out = _call(url, "PUT", "/api/v1/loop/signals/state", body, f"update signal {signal!r}")
    return bool(out.get("updated", True))


def signals(url: str, rule: str | None = None, state: str | None = None) -> list[dict]:
    """Handled signals, oldest first (as store.loop_state.signals)."""
    q = {k: v for k, v in (("rule", rule), ("state", state)) if v is not None}
    path = "/api/v1/loop/signals" + (f"?{urlencode(q)}" if q else "")
    return _call(url, "GET", path, None, "read the watcher's signals")["signals"]


def drift_alerts(url: str, model: str) -> list[dict]:
    """The drift alerts serving raised on `model`'s inputs, newest first."""
    path = _path(model, "drift-alerts")
    return _call(url, "GET", path, None, f"read the drift alerts of {model!r}")["alerts"]
