"""optuna's storage contract over the tracking server: `POST /api/v1/optuna/{method}` with
the method's arguments as JSON (client: remote/optuna_storage.py), so sweeps run with
MLOPS_JUPYTER_STORE=http(s)://... share their study with the store's local workers.

The methods are a closed list (`METHODS`); every field is checked (400 with a JSON error,
never a 500). Getters need scope `read`, the rest `write`. The server calls its store's own
optuna storage (hpo.storage.storage_for: RDBStorage on PostgreSQL behind optuna's
cache, the journal file beside a SQLite store), one per process.

Heartbeats: on PostgreSQL `record_heartbeat` and the stale query are RDBStorage's own
(its table, the database's clock), so local workers fail a dead remote worker's trial and
the other way round; the client's grace period is used. optuna's journal has no
heartbeats: there the last beat is the trial system attribute `mlops.heartbeat` (the
beater's clock), as local workers on the journal keep it (hpo/journal.py). A trial creation names a random key, kept as the system attribute
`mlops.create_key`; a request marked `retry` returns the trial made with that key if any."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from typing import Any

from ..remote.optuna_wire import (
    HEARTBEAT_ATTR,
    KEY_ATTR,
    dec_float,
    distribution,
    enc_attrs,
    state_of,
    trial_from_json,
    trial_to_json,
)
from .app import BaseHandler, HTTPError

READ = (
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_trials",
    "get_stale_trial_ids",
)
WRITE = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "record_heartbeat",
)
METHODS = READ + WRITE
_MAX_ID = 2**31 - 1  # optuna's id and step columns are 32-bit integers on PostgreSQL
_MAX_TEXT = 512  # optuna's name and key columns
_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_storages: dict[str, Any] = {}
_lock = threading.Lock()


def _bad(msg: str) -> HTTPError:
    return HTTPError(400, "INVALID_PARAMETER_VALUE", msg)


def _id(body: dict, name: str, low: int = 0) -> int:
    v = body.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= _MAX_ID:
        raise _bad(f"'{name}' must be an integer in [{low}, {_MAX_ID}]")
    return v


def _text(body: dict, name: str) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_TEXT or "\x00" in v:
        raise _bad(f"'{name}' must be a string of 1-{_MAX_TEXT} characters (no NUL)")
    return v


def _json_text(body: dict, name: str = "value") -> Any:
    v = body.get(name)
    if not isinstance(v, str) or "\x00" in v:
        raise _bad(f"'{name}' must be a JSON text")
    try:
        out = json.loads(v)
        json.dumps(out)  # what the storage writes must encode back
    except (ValueError, RecursionError, TypeError):
        raise _bad(f"'{name}' is not valid JSON") from None
    return out


def _num(v: Any, what: str, finite: bool = False) -> float:
    try:
        x = dec_float(v, what)
    except ValueError as e:
        raise _bad(str(e)) from None
    if x != x or (finite and x in (float("inf"), float("-inf"))):
        raise _bad(f"'{what}' must be a {'finite ' if finite else ''}number, not NaN")
    return x


def storage_of(store: Any) -> Any:
    """The optuna storage the server uses for `store` (one per process)."""
    with _lock:
        st = _storages.get(store.key)
        if st is None:
            from ..hpo.storage import storage_for

            st = storage_for(store, heartbeat_interval=10, max_retry=None)
            from optuna.storages import RDBStorage

            if isinstance(st, RDBStorage):
                from optuna.storages._cached_storage import _CachedStorage

                st = _CachedStorage(st)  # finished trials read once per process
            _storages[store.key] = st
        return st


def _backend(st: Any) -> Any:
    return getattr(st, "_backend", st)


def _rdb(st: Any) -> bool:
    from optuna.storages import RDBStorage

    return isinstance(_backend(st), RDBStorage)


# -- the methods --------------------------------------------------------------------------
def _study(st: Any, s: Any) -> dict[str, Any]:
    return {
        "study_id": s._study_id,
        "study_name": s.study_name,
        "directions": [d.name for d in s.directions],
        "user_attrs": enc_attrs(s.user_attrs),
        "system_attrs": enc_attrs(s.system_attrs),
    }


def _create_new_study(st: Any, b: dict) -> int:
    from optuna.study._study_direction import StudyDirection

    dirs = b.get("directions")
    if (
        not isinstance(dirs, list)
        or not 0 < len(dirs) <= 64
        or any(d not in ("MINIMIZE", "MAXIMIZE") for d in dirs)
    ):
        raise _bad("'directions' must be a list of 'MINIMIZE' / 'MAXIMIZE'")
    return st.create_new_study([StudyDirection[d] for d in dirs], _text(b, "study_name"))


def _get_trials(st: Any, b: dict) -> list[dict]:
    since = b.get("since_id", -1)
    if isinstance(since, bool) or not isinstance(since, int) or not -1 <= since <= _MAX_ID:
        raise _bad("'since_id' must be an integer >= -1")
    inc = b.get("include", [])
    if not isinstance(inc, list) or len(inc) > 100_000:
        raise _bad("'include' must be a list of trial ids")
    wanted = {_id({"i": i}, "i") for i in inc}
    trials = st.get_all_trials(_id(b, "study_id"), deepcopy=False)
    return [trial_to_json(t) for t in trials if t._trial_id > since or t._trial_id in wanted]


def _created(st: Any, trial_id: int, beat: bool) -> dict[str, Any]:
    return {"trial_id": trial_id, "trial": trial_to_json(st.get_trial(trial_id)), "beat": beat}


def _create_new_trial(st: Any, b: dict) -> dict[str, Any]:
    """Answers the new trial (optuna reads it next) and whether its first heartbeat was
    recorded with it (`heartbeat`: the client's storage has heartbeats)."""
    from optuna.trial import FrozenTrial, TrialState

    study_id = _id(b, "study_id")
    key = b.get("key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise _bad("'key' must be 16-64 lowercase hex characters")
    if "template" in b and b["template"] is not None:
        try:
            t = trial_from_json(b["template"])
        except ValueError as e:
            raise _bad(f"template: {e}") from None
    else:
        t = FrozenTrial(
            number=0, state=TrialState.RUNNING, value=None, datetime_start=dt.datetime.now(),
            datetime_complete=None, params={}, distributions={}, user_attrs={},
            system_attrs={}, intermediate_values={}, trial_id=0,
        )  # fmt: skip
    if b.get("retry") is True:  # the first attempt's answer was lost: did it make one?
        for old in st.get_all_trials(study_id, deepcopy=False):
            if old.system_attrs.get(KEY_ATTR) == key:
                return _created(st, old._trial_id, False)
    t.system_attrs[KEY_ATTR] = key
    beat = b.get("heartbeat") is True and t.state == TrialState.RUNNING
    if beat and not _rdb(st):
        t.system_attrs[HEARTBEAT_ATTR] = time.time()  # the journal's heartbeat, in one write
    try:
        t._validate()
    except ValueError as e:
        raise _bad(f"template: {e}") from None
    if t.values is not None and any(v != v for v in t.values):
        raise _bad("template: values must not be NaN")
    trial_id = st.create_new_trial(study_id, template_trial=t)
    if beat and _rdb(st):
        st.record_heartbeat(trial_id)
    return _created(st, trial_id, beat)


def _set_trial_param(st: Any, b: dict) -> None:
    trial_id = _id(b, "trial_id")
    name = _text(b, "param_name")
    try:
        dist = distribution(b.get("distribution"))
    except ValueError as e:
        raise _bad(str(e)) from None
    x = _num(b.get("param_value_internal"), "param_value_internal", finite=True)
    if not dist._contains(x):
        raise _bad("'param_value_internal' is outside its distribution")
    have = st.get_trial(trial_id)  # KeyError: 404
    if name in have.distributions:  # a repeat (a lost answer): same value is fine
        if (
            have.distributions[name] == dist
            and have.distributions[name].to_internal_repr(have.params[name]) == x
        ):
            return None
        raise HTTPError(409, "PARAM_EXISTS", f"trial {trial_id} already has param {name!r}")
    st.set_trial_param(trial_id, name, x, dist)
    return None


def _set_trial_state_values(st: Any, b: dict) -> dict[str, Any]:
    try:
        state = state_of(b.get("state"))
    except ValueError as e:
        raise _bad(str(e)) from None
    values = b.get("values")
    if values is not None:
        if not isinstance(values, list) or not 0 < len(values) <= 64:
            raise _bad("'values' must be a list of 1-64 numbers or null")
        values = [_num(v, "values[]") for v in values]
    if state.name == "COMPLETE" and values is None:
        raise _bad("state COMPLETE needs 'values'")
    if values is not None and state.name not in ("COMPLETE", "PRUNED"):
        raise _bad("'values' go with state COMPLETE or PRUNED only")
    trial_id = _id(b, "trial_id")
    updated = bool(st.set_trial_state_values(trial_id, state, values))
    # the trial as it is now: optuna reads it right after telling
    return {"updated": updated, "trial": trial_to_json(st.get_trial(trial_id))}


def _record_heartbeat(st: Any, b: dict) -> None:
    from optuna.exceptions import UpdateFinishedTrialError

    trial_id = _id(b, "trial_id")
    t = st.get_trial(trial_id)  # 404 for an unknown trial (not a foreign-key error)
    if _rdb(st):
        st.record_heartbeat(trial_id)
    elif not t.state.is_finished():
        try:
            st.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # finished meanwhile: nothing to watch
    return None


def _stale(st: Any, b: dict) -> list[int]:
    study_id = _id(b, "study_id")
    grace = b.get("grace_s")
    if isinstance(grace, bool) or not isinstance(grace, int) or not 1 <= grace <= 86_400:
        raise _bad("'grace_s' must be an integer of seconds in [1, 86400]")
    if _rdb(st):
        rdb = _backend(st)
        st.get_study_name_from_id(study_id)  # 404 for an unknown study
        # the client's grace period on a copy sharing the engine (threads share `rdb`)
        view = object.__new__(type(rdb))
        view.__dict__.update(rdb.__dict__)
        view.heartbeat_interval, view.grace_period = max(1, grace // 2), grace
        return list(view._get_stale_trial_ids(study_id))
    from ..hpo.journal import stale_trial_ids

    return stale_trial_ids(st, study_id, grace)


def _dispatch(st: Any, method: str, b: dict) -> Any:
    if method == "create_new_study":
        return _create_new_study(st, b)
    if method == "delete_study":
        return st.delete_study(_id(b, "study_id"))
    if method in ("set_study_user_attr", "set_study_system_attr"):
        return getattr(st, method)(_id(b, "study_id"), _text(b, "key"), _json_text(b))
    if method == "get_study_id_from_name":
        return st.get_study_id_from_name(_text(b, "study_name"))
    if method == "get_study_name_from_id":
        return st.get_study_name_from_id(_id(b, "study_id"))
    if method == "get_study_directions":
        return [d.name for d in st.get_study_directions(_id(b, "study_id"))]
    if method in ("get_study_user_attrs", "get_study_system_attrs"):
        return enc_attrs(getattr(st, method)(_id(b, "study_id")))
    if method == "get_all_studies":
        return [_study(st, s) for s in st.get_all_studies()]
    if method == "create_new_trial":
        return _create_new_trial(st, b)
    if method == "set_trial_param":
        return _set_trial_param(st, b)
    if method == "get_trial_id_from_study_id_trial_number":
        return st.get_trial_id_from_study_id_trial_number(
            _id(b, "study_id"), _id(b, "trial_number")
        )
    if method == "set_trial_state_values":
        return _set_trial_state_values(st, b)
    if method == "set_trial_intermediate_value":
        step = _id(b, "step")
        return st.set_trial_intermediate_value(
            _id(b, "trial_id"), step, _num(b.get("value"), "value")
        )
    if method in ("set_trial_user_attr", "set_trial_system_attr"):
        return getattr(st, method)(_id(b, "trial_id"), _text(b, "key"), _json_text(b))
    if method == "get_trial":
        return trial_to_json(st.get_trial(_id(b, "trial_id")))
    if method == "get_trials":
        return _get_trials(st, b)
    if method == "record_heartbeat":
        return _record_heartbeat(st, b)
    if method == "get_stale_trial_ids":
        return _stale(st, b)
    raise HTTPError(404, "ENDPOINT_NOT_FOUND", f"no optuna storage method {method!r}")


class OptunaHandler(BaseHandler):
    """POST /api/v1/optuna/{method}: one storage call; answers {"result": ...}."""

    def needed_scope(self) -> str:
        return "read" if self.path_args and self.path_args[0] in READ else "write"

    async def post(self, method: str) -> None:
        await self.handle(lambda: self._call(method))

    def _call(self, method: str) -> dict[str, Any]:
        try:
            from optuna.exceptions import (
                DuplicatedStudyError,
                StorageInternalError,
                UpdateFinishedTrialError,
            )
        except ImportError:  # an optional extra: the rest of the server works without it
            raise HTTPError(
                501,
                "NOT_IMPLEMENTED",
                "sweeps over this tracking server need optuna where the server runs "
                "(pip install 'mlops-jupyter[optuna]')",
            ) from None

        from ..errors import StoreError

        if method not in METHODS:
            raise HTTPError(404, "ENDPOINT_NOT_FOUND", f"no optuna storage method {method!r}")
        body = self.body_json()
        st = storage_of(self.store)
        try:
            return {"result": _dispatch(st, method, body)}
        except DuplicatedStudyError as e:
            raise HTTPError(409, "STUDY_EXISTS", str(e) or "the study exists") from None
        except UpdateFinishedTrialError as e:
            raise HTTPError(409, "TRIAL_FINISHED", str(e) or "the trial is finished") from None
        except KeyError as e:
            msg = e.args[0] if e.args and isinstance(e.args[0], str) else "not found"
            raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", msg) from None
        except StorageInternalError as e:
            raise StoreError(f"optuna storage: {e}") from None
        except (ValueError, TypeError) as e:  # optuna's own checks (distribution clashes...)
            raise _bad(str(e) or type(e).__name__) from None


ROUTES = [(r"/api/v1/optuna/([A-Za-z_]{1,64})", OptunaHandler)]
