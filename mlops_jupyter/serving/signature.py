"""Input signatures of served models and the parsing of request bodies against them.

A signature is kept in the registry with the version (`register_model(..., signature=)`),
in one of two kinds, normalized to:

- tensors: `{"kind": "tensor", "fields": [{"name": "x", "dtype": "float32", "shape": [4]}]}`
  where `shape` is the shape of one instance (the batch dimension is implied; -1 = any);
- columns: `{"kind": "columns", "columns": [{"name": "age", "dtype": "int64"}, ...]}`.

Accepted spellings: `{"x": {"shape": [4], "dtype": "float32"}}`, `{"x": ((4,), "float32")}`,
`{"columns": {"age": "int64", "income": "float64"}}`, or `infer_signature(example_batch)`.

Requests are parsed into `{field: ndarray}` with the batch first, or refused with a
`BadInput` (HTTP 422) naming the field and the expected signature.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import InvalidInputError

DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "string",
)
ARROW_TYPE = "application/vnd.apache.arrow.stream"


class BadInput(Exception):
    """A request that does not fit the signature (HTTP `status`, 422 unless said)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _dtype(d: Any, where: str) -> str:
    name = str(d).removeprefix("torch.")
    name = {"str": "string", "object": "string", "float": "float64", "int": "int64"}.get(name, name)
    if name not in DTYPES:
        raise InvalidInputError(f"signature {where}: dtype must be one of {DTYPES}, got {d!r}")
    return name


def _shape(s: Any, where: str) -> list[int]:
    if not isinstance(s, (list, tuple)) or not all(
        x is None or (isinstance(x, int) and not isinstance(x, bool) and x >= -1) for x in s
    ):
        raise InvalidInputError(
            f"signature {where}: shape must be a list of sizes (-1 or None = any), got {s!r}"
        )
    return [-1 if x is None else int(x) for x in s]


def normalize(sig: Any) -> dict[str, Any]:
    """The stored form of a signature given in any accepted spelling (see module doc)."""
    if not isinstance(sig, dict) or not sig:
        raise InvalidInputError(f"signature must be a non-empty dict, got {sig!r}")
    if sig.get("kind") == "tensor":
        return normalize({f["name"]: f for f in sig.get("fields", [])})
    if sig.get("kind") == "columns":
        return normalize({"columns": [(c["name"], c["dtype"]) for c in sig["columns"]]})
    if set(sig) == {"columns"}:
        cols = sig["columns"]
        items = list(cols.items()) if isinstance(cols, dict) else list(cols)
        out = []
        for item in items:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise InvalidInputError(f"signature columns: expected (name, dtype), got {item!r}")
            name, dt = item
            out.append({"name": str(name), "dtype": _dtype(dt, f"column {name!r}")})
        if not out:
            raise InvalidInputError("signature columns: no columns")
        return {"kind": "columns", "columns": out}
    fields = []
    for name, spec in sig.items():
        where = f"field {name!r}"
        if isinstance(spec, dict):
            shape, dt = spec.get("shape", []), spec.get("dtype")
        elif isinstance(spec, (list, tuple)) and len(spec) == 2:
            shape, dt = spec
        else:
            raise InvalidInputError(f"signature {where}: expected {{shape, dtype}}, got {spec!r}")
        fields.append(
            {"name": str(name), "dtype": _dtype(dt, where), "shape": _shape(shape, where)}
        )
    return {"kind": "tensor", "fields": fields}


def infer_signature(example: Any) -> dict[str, Any]:
    """A signature from an example batch: an array/tensor (one field "inputs"), a dict of
    them, or a pandas/polars DataFrame (columns)."""
    if hasattr(example, "dtypes") and hasattr(example, "columns"):  # a data frame
        cols = list(example.columns)
        arrs = [np.asarray(example[c]) for c in cols]
        return normalize({"columns": [(c, _np_name(a)) for c, a in zip(cols, arrs)]})
    if isinstance(example, dict):
        items = example.items()
    else:
        items = [("inputs", example)]
    out = {}
    for k, v in items:
        a = _to_numpy(v)
        if a.ndim < 1:
            raise InvalidInputError(f"example {k!r} must have a batch dimension")
        out[k] = {"shape": list(a.shape[1:]), "dtype": _np_name(a)}
    return normalize(out)


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # torch
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _np_name(a: np.ndarray) -> str:
    return "string" if a.dtype.kind in "USO" else str(a.dtype)


def describe(sig: dict[str, Any] | None) -> str:
    """One line: `x: float32[batch, 4]` or `columns age: int64, income: float64`."""
    if sig is None:
        return "no signature (one array of any shape)"
    if sig["kind"] == "columns":
        return "columns " + ", ".join(f"{c['name']}: {c['dtype']}" for c in sig["columns"])
    return ", ".join(
        f"{f['name']}: {f['dtype']}[{', '.join(['batch', *(str(s) if s >= 0 else '*' for s in f['shape'])])}]"
        for f in sig["fields"]
    )


def field_names(sig: dict[str, Any]) -> list[str]:
    """Names of the signature's fields (or columns), in order."""
    return [f["name"] for f in (sig["fields"] if sig["kind"] == "tensor" else sig["columns"])]


# -- checking values ---------------------------------------------------------------------
_KINDS = {"f": "fiub", "i": "iub", "u": "iub", "b": "b", "U": "U"}


def _cast(name: str, value: Any, dtype: str | None, shape: list[int] | None, sig: Any) -> Any:
    """`value` (batch first) as an ndarray of `dtype` and per-instance `shape`, or BadInput."""
    expected = f"expected signature: {describe(sig)}"
    try:
        a = value if isinstance(value, np.ndarray) else np.asarray(value)
    except ValueError:
        raise BadInput(f"field {name!r}: instances have different shapes; {expected}") from None
    if a.dtype == object:
        raise BadInput(f"field {name!r}: instances have different shapes or types; {expected}")
    if a.ndim == 0:
        raise BadInput(f"field {name!r}: expected a batch (a list of instances); {expected}")
    if shape is not None:
        got = list(a.shape[1:])
        if len(got) != len(shape) or any(s >= 0 and g != s for g, s in zip(got, shape)):
            raise BadInput(
                f"field {name!r}: each instance has shape {got}, expected {shape}; {expected}"
            )
    if dtype is None:
        return a
    target = np.dtype("U") if dtype == "string" else np.dtype(dtype)
    if a.dtype.kind not in _KINDS.get(target.kind, target.kind):
        got = "strings" if a.dtype.kind in "US" else str(a.dtype)
        raise BadInput(f"field {name!r}: expected {dtype} values, got {got}; {expected}")
    return a if a.dtype == target or dtype == "string" else a.astype(target)


def check_fields(values: dict[str, Any], sig: dict[str, Any] | None, default: Any) -> dict:
    """Validated {field: ndarray} with one batch size. `default`: the dtype used without a
    signature (e.g. a torch model's parameter dtype), or None to keep the given one."""
    if sig is None:
        if len(values) != 1:
            raise BadInput(f"fields {sorted(values)} given; this model takes one array")
        ((k, v),) = values.items()
        out = {k: _cast(k, v, default, None, None)}
    else:
        specs = sig["fields"] if sig["kind"] == "tensor" else sig["columns"]
        names = [s["name"] for s in specs]
        missing = [n for n in names if n not in values]
        extra = [n for n in values if n not in names]
        if missing or extra:
            what = "; ".join(
                ([f"unknown field {extra[0]!r}"] if extra else [])
                + ([f"missing field {missing[0]!r}"] if missing else [])
            )
            raise BadInput(f"{what}; expected signature: {describe(sig)}")
        out = {
            s["name"]: _cast(s["name"], values[s["name"]], s["dtype"], s.get("shape", []), sig)
            for s in specs
        }
    sizes = {len(a) for a in out.values()}
    if len(sizes) != 1:
        raise BadInput(f"fields have different numbers of instances: {sorted(sizes)}")
    return out


def parse_json(body: bytes, sig: dict[str, Any] | None, default: Any = None) -> dict:
    """{field: ndarray} from a JSON body: {"inputs": ...}, {"instances": [...]}, MLflow's
    {"dataframe_split": {"columns", "data"}} or {"dataframe_records": [...]}."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"body is not valid JSON: {e}", 400) from None
    if not isinstance(obj, dict):
        raise BadInput("body must be a JSON object with 'inputs' or 'instances'", 400)
    names = field_names(sig) if sig else None
    one = names[0] if names and len(names) == 1 and sig["kind"] == "tensor" else None
    if "inputs" in obj:
        x = obj["inputs"]
        if isinstance(x, dict):
            values = x
        elif sig is None or one is not None:
            values = {one or "inputs": x}
        else:
            raise BadInput(f"'inputs' must be an object of fields; {describe(sig)}")
    elif "instances" in obj or "dataframe_records" in obj:
        rows = obj.get("instances", obj.get("dataframe_records"))
        if not isinstance(rows, list) or not rows:
            raise BadInput("'instances' must be a non-empty list")
        if isinstance(rows[0], dict):
            keys = list(rows[0])
            try:
                values = {k: [r[k] for r in rows] for k in keys}
            except (KeyError, TypeError):
                raise BadInput("every instance must have the same fields") from None
        elif sig is None or one is not None:
            values = {one or "inputs": rows}
        else:
            raise BadInput(f"instances must be objects of fields; {describe(sig)}")
    elif "dataframe_split" in obj:
        split = obj["dataframe_split"]
        try:
            cols, data = split["columns"], split["data"]
            values = {c: [row[i] for row in data] for i, c in enumerate(cols)}
        except (KeyError, TypeError, IndexError):
            raise BadInput("'dataframe_split' needs 'columns' and rows in 'data'") from None
    else:
        raise BadInput("body needs 'inputs' or 'instances'", 400)
    if sig is not None and sig["kind"] == "tensor" and one is None and set(values) == {"inputs"}:
        raise BadInput(f"this model takes several fields; expected signature: {describe(sig)}")
    return check_fields(values, sig, default)


def parse_arrow(body: bytes, sig: dict[str, Any] | None, default: Any = None) -> dict:
    """{field: ndarray} from an Arrow IPC stream: one column per field (list or
    fixed-size-list columns for tensor fields); a one-field model also takes a table of
    scalar columns as its feature matrix."""
    try:
        import pyarrow as pa
    except ImportError:
        raise BadInput("Arrow bodies need pyarrow on the server; send JSON", 415) from None
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise BadInput(f"body is not an Arrow IPC stream: {e}", 400) from None
    names = field_names(sig) if sig else ["inputs"]
    values: dict[str, Any] = {}
    if sig is not None and sig["kind"] == "columns":
        for c in table.column_names:
            values[c] = table.column(c).to_numpy(zero_copy_only=False)
    elif len(names) == 1 and names[0] not in table.column_names:
        if not all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types):
            raise BadInput(f"Arrow columns must be numbers or a column {names[0]!r}")
        cols = [table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names]
        values[names[0]] = np.column_stack(cols) if cols else np.empty((0, 0))
    else:
        for c in table.column_names:
            values[c] = _arrow_column(table.column(c))
    return check_fields(values, sig, default)


def _arrow_column(col: Any) -> np.ndarray:
    import pyarrow as pa

    arr = col.combine_chunks()
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        inner = _arrow_column(pa.chunked_array([arr.flatten()]))
        return inner.reshape(len(arr), t.list_size, *inner.shape[1:])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return np.asarray(arr.to_pylist())
    return arr.to_numpy(zero_copy_only=False)
