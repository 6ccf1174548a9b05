"""`mj.lineage(run)`: which data versions a run used and produced, and which other runs
produced its inputs or used its outputs."""

from __future__ import annotations

from typing import Any

import polars as pl

from ..errors import RunNotFoundError
from ..store import data as dstore
from .catalog import DataVersion, _remote, _run_rid, _store


class Lineage:
    """Inputs and outputs of one run, each with the runs linked on the other side."""

    def __init__(self, run: dict, inputs: list[dict], outputs: list[dict]) -> None:
        self.run = run
        self.inputs = inputs
        self.outputs = outputs

    @property
    def upstream(self) -> list[dict]:
        """Runs that produced this run's inputs."""
        return _unique(r for v in self.inputs for r in v["produced_by"])

    @property
    def downstream(self) -> list[dict]:
        """Runs that used this run's outputs."""
        return _unique(r for v in self.outputs for r in v["used_by"])

    def to_frame(self) -> pl.DataFrame:
        """role, id, name, kind, n_rows, n_cols, source, fingerprint, runs (on the other side)."""
        rows = []
        for role, items, other in (
            ("input", self.inputs, "produced_by"),
            ("output", self.outputs, "used_by"),
        ):
            for v in items:
                rows.append(
                    {
                        "role": role,
                        "id": v["id"],
                        "name": v.get("name"),
                        "kind": v["kind"],
                        "n_rows": v.get("n_rows"),
                        "n_cols": v.get("n_cols"),
                        "source": v.get("source"),
                        "fingerprint": v["fingerprint"],
                        "runs": [r["run_id"] for r in v[other]],
                    }
                )
        schema = {
            "role": pl.String,
            "id": pl.String,
            "name": pl.String,
            "kind": pl.String,
            "n_rows": pl.Int64,
            "n_cols": pl.Int64,
            "source": pl.String,
            "fingerprint": pl.String,
            "runs": pl.List(pl.String),
        }
        return pl.DataFrame(rows, schema=schema)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without the store's row ids)."""

        def strip(d: Any) -> Any:
            if isinstance(d, list):
                return [strip(v) for v in d]
            if isinstance(d, dict):
                return {k: strip(v) for k, v in d.items() if not k.startswith("_")}
            return d

        return {
            "run": strip(self.run),
            "inputs": [strip(v) for v in self.inputs],
            "outputs": [strip(v) for v in self.outputs],
        }

    def __repr__(self) -> str:
        return (
            f"Lineage(run={self.run['name']!r} ({self.run['id']}), "
            f"inputs={[v['name'] or v['id'] for v in self.inputs]}, "
            f"outputs={[v['name'] or v['id'] for v in self.outputs]})"
        )

    def _repr_html_(self) -> str:
        from .report import lineage_html

        return lineage_html(self)


def _unique(runs) -> list[dict]:
    seen, out = set(), []
    for r in runs:
        if r["run_id"] not in seen:
            seen.add(r["run_id"])
            out.append(r)
    return out


def lineage(run: Any = None) -> Lineage:
    """Lineage of a run (a Run, run id or name; default: the active run, else the latest)."""
    if isinstance(run, DataVersion):
        raise RunNotFoundError("lineage() takes a run; use mj.data.runs_for(version) for data")
    remote = _remote()
    if remote is not None:  # the server assembles it (trackserver/data_more_routes.py)
        from ..remote import data_more as rmore

        return Lineage(*rmore.lineage(remote, run))
    store = _store()
    rid = _run_rid(run)
    if rid is None:
        rid = dstore.latest_run(store)
        if rid is None:
            raise RunNotFoundError(f"no runs in {store.location} yet")
    return Lineage(*lineage_parts(store, rid))


def lineage_parts(store: Any, rid: int) -> tuple[dict, list[dict], list[dict]]:
    """(run info, inputs, outputs) of run row `rid`: what Lineage is made of."""
    info = dstore.run_info(store, rid)
    inputs, outputs = [], []
    for v in dstore.run_versions(store, rid):
        others = [r for r in dstore.runs_for_version(store, v["_id"]) if r["_id"] != rid]
        if v["role"] == "input":
            v["produced_by"] = [r for r in others if r["role"] == "output"]
            inputs.append(v)
        else:
            v["used_by"] = [r for r in others if r["role"] == "input"]
            outputs.append(v)
    return info, inputs, outputs


def runs_for(version: DataVersion | str) -> pl.DataFrame:
    """Runs that used or produced a data version: run_id, run_name, status, role."""
    from .catalog import get_version

    v = get_version(version)
    remote = _remote()
    if remote is not None:
        from ..remote import data_more as rmore

        rows = rmore.runs_for(remote, v.id)
    else:
        rows = dstore.runs_for_version(_store(), v._rid)
    return pl.DataFrame(
        {
            "run_id": [r["run_id"] for r in rows],
            "run_name": [r["run_name"] for r in rows],
            "status": [r["status"] for r in rows],
            "role": [r["role"] for r in rows],
        },
        schema={"run_id": pl.String, "run_name": pl.String, "status": pl.String, "role": pl.String},
    )
