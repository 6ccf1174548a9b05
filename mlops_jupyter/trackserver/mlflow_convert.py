"""MLflow's JSON shapes from our store's rows: experiments, runs (info, data), status and
value conversions, and the id mapping (MLflow experiment "0" is our `default` experiment,
MLflow run ids are our run ids)."""

from __future__ import annotations

import json
import math
from typing import Any

from ..store import ingest as ing
from .app import HTTPError, check_value

DEFAULT_EXPERIMENT = "default"  # our default experiment is MLflow's experiment "0"
DELETED_TAG = "mlflow.lifecycle_stage"  # MLflow's soft delete, kept as a tag of ours
LIMITS = {"metrics": 1000, "params": 100, "tags": 100}
MAX_BATCH_BYTES = 1 << 20
MAX_PARAM_VALUE = 6000
TO_MLFLOW = {
    "running": "RUNNING",
    "finished": "FINISHED",
    "failed": "FAILED",
    "crashed": "FAILED",
    "killed": "KILLED",
    "stopped": "KILLED",
}
FROM_MLFLOW = {
    "RUNNING": "running",
    "SCHEDULED": "running",
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "killed",
}


# ---------------------------------------------------------------------- conversions


def _ms(t: float | None) -> int | None:
    return None if t is None else int(round(t * 1000))


def as_num(v: Any, what: str) -> float:
    """A double as MLflow's JSON sends it: a number or "NaN"/"Infinity"/"-Infinity"."""
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"):
        return float(v.replace("Infinity", "inf"))
    check_value(isinstance(v, (int, float)) and not isinstance(v, bool), f"{what} must be a number")
    return float(v)


def as_int(v: Any, what: str, default: int | None = None) -> int | None:
    """An int64 as MLflow's JSON sends it (a number or a numeric string)."""
    if v is None:
        return default
    if isinstance(v, str) and v.isascii() and v.lstrip("-").isdigit():
        v = int(v)
    check_value(isinstance(v, int) and not isinstance(v, bool), f"{what} must be an integer")
    check_value(-(2**63) <= v < 2**63, f"{what} is out of range")
    return v


def req_str(body: dict, name: str, required: bool = True) -> str | None:
    v = body.get(name)
    if v is None or v == "":
        check_value(not required, f"Missing value for required parameter '{name}'.")
        return None
    check_value(isinstance(v, str), f"'{name}' must be a string")
    return v


def out_num(v: float | None) -> Any:
    if v is None or math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _text(json_value: str) -> str:
    """A stored param/tag value as MLflow's string."""
    try:
        v = json.loads(json_value)
    except ValueError:
        return json_value
    return v if isinstance(v, str) else json.dumps(v)


def exp_id(eid: int, name: str) -> str:
    return "0" if name == DEFAULT_EXPERIMENT else str(eid)


def experiment_json(eid: int, name: str, created: float) -> dict[str, Any]:
    mid = exp_id(eid, name)
    return {
        "experiment_id": mid,
        "name": name,
        "artifact_location": f"mlflow-artifacts:/{mid}",
        "lifecycle_stage": "active",
        "creation_time": _ms(created),
        "last_update_time": _ms(created),
        "tags": [],
    }


def find_experiment(store, mid: Any) -> tuple[int, str, float]:
    """Our experiment for MLflow experiment id `mid` ("0" is created on first use)."""
    mid = str(mid) if isinstance(mid, int) and not isinstance(mid, bool) else mid
    check_value(isinstance(mid, str) and mid != "", "experiment_id must be a string")
    if mid == "0":
        ing.ensure_experiment(store, DEFAULT_EXPERIMENT)
        return ing.experiments(store, name=DEFAULT_EXPERIMENT)[0]
    rows = (
        ing.experiments(store, ids=[int(mid)])
        if mid.isascii() and mid.isdigit() and len(mid) < 19
        else []
    )
    if not rows:
        raise HTTPError(404, "RESOURCE_DOES_NOT_EXIST", f"No Experiment with id={mid} exists")
    return rows[0]


def load_runs(store, rows: list[ing.RunRow]) -> list[dict[str, Any]]:
    """Runs with their params, tags and latest metrics, in one shape for filter and JSON."""
    rids = [r.rid for r in rows]
    params = ing.kv(store, "params", rids)
    tags = ing.kv(store, "tags", rids)
    mets = ing.latest_metrics(store, rids)
    out = []
    for r in rows:
        t = {k: _text(v) for k, v in tags[r.rid].items()}
        stage = "deleted" if t.pop(DELETED_TAG, None) == "deleted" else "active"
        if r.name:
            t["mlflow.runName"] = r.name  # a rename through our API shows too
        if r.username:
            t.setdefault("mlflow.user", r.username)
        out.append(
            {
                "run_id": r.uid,
                "row": r,
                "stage": stage,
                "params": {k: _text(v) for k, v in params[r.rid].items()},
                "tags": t,
                "metrics": {k: v for k, v, _ts, _s in mets[r.rid] if v is not None},
                "metric_rows": mets[r.rid],
                "attributes": {
                    "run_id": r.uid,
                    "run_name": r.name,
                    "status": TO_MLFLOW.get(r.status, "FAILED"),
                    "start_time": _ms(r.start_time),
                    "end_time": _ms(r.end_time),
                    "user_id": r.username or "",
                    "artifact_uri": _artifact_uri(r),
                    "lifecycle_stage": stage,
                },
            }
        )
    return out


def _artifact_uri(r: ing.RunRow) -> str:
    return f"mlflow-artifacts:/{exp_id(r.experiment_id, r.experiment)}/{r.uid}/artifacts"


def run_info(d: dict[str, Any]) -> dict[str, Any]:
    r: ing.RunRow = d["row"]
    a = d["attributes"]
    info = {
        "run_id": r.uid,
        "run_uuid": r.uid,
        "run_name": r.name or "",
        "experiment_id": exp_id(r.experiment_id, r.experiment),
        "user_id": a["user_id"],
        "status": a["status"],
        "start_time": a["start_time"],
        "artifact_uri": a["artifact_uri"],
        "lifecycle_stage": d["stage"],
    }
    if a["end_time"] is not None:
        info["end_time"] = a["end_time"]
    return info


def run_json(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "info": run_info(d),
        "data": {
            "metrics": [
                {"key": k, "value": out_num(v), "timestamp": _ms(ts) or 0, "step": s or 0}
                for k, v, ts, s in d["metric_rows"]
            ],
            "params": [{"key": k, "value": v} for k, v in sorted(d["params"].items())],
            "tags": [{"key": k, "value": v} for k, v in sorted(d["tags"].items())],
        },
        "inputs": {},
        "outputs": {},
    }
