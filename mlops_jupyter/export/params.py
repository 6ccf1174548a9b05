"""params.yaml: written and read with PyYAML's safe dumper and loader, so a file edited the
way YAML is usually written (block lists, comments, quoted keys, multi-line strings) reads
as YAML says; `--param NAME=VALUE` goes through the same loader and is checked against the
type of the parameter's default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInputError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` and `1E5` as floats (YAML 1.2 and JSON do; PyYAML's
    YAML 1.1 rules need a dot, so `lr: 1e-3` would be the string "1e-3")."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes the strings _Loader would read as floats ("1e-3")."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _str(dumper: yaml.SafeDumper, v: str) -> yaml.Node:
    # YAML 1.1 line breaks (NEL, LS, PS) do not survive plain or single-quoted style
    style = '"' if any(c in v for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", v, style=style)


_Dumper.add_representer(str, _str)


def _plain(v: Any, where: str) -> Any:
    """Tuples as lists (YAML has no tuple); anything YAML cannot hold is refused by name."""
    if isinstance(v, (list, tuple)):
        return [_plain(x, where) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x, f"{where}.{k}") for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise InvalidInputError(f"parameter {where}: {type(v).__name__} cannot be written to YAML")


def dump(params: dict[str, Any], header: str = "") -> str:
    """params.yaml text; `header` becomes leading comment lines."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    body = {k: _plain(v, k) for k, v in params.items()}
    text = yaml.dump(
        body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=None
    )
    return "\n".join(lines) + ("\n" if lines else "") + (text if body else "")


def parse_value(text: str) -> Any:
    """One value as YAML reads it (`3`, `0.1`, `1e-3`, `adam`, `[64, 64]`, `{a: 1}`)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise InvalidInputError(f"cannot read the value {text.strip()!r}: {e}") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read params.yaml: a mapping of parameter names to values."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise InvalidInputError(
            f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e}); "
            "expected one `name: value` per parameter"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{path}: expected a mapping of parameter names to values, got {type(data).__name__}"
        )
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise InvalidInputError(f"{path}: parameter names must be strings, got {bad!r}")
    return data


def check(name: str, v: Any, default: Any, where: str = "params.yaml") -> Any:
    """A value for parameter `name`, checked against (and converted to) its default's type."""
    if default is None:
        return v
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise InvalidInputError(f"{where} {name}: expected true or false, got {v!r}")
        return v
    if isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInputError(f"{where} {name}: expected an integer, got {v!r}")
        if isinstance(v, float) and not v.is_integer():
            raise InvalidInputError(f"{where} {name}: expected an integer, got {v!r}")
        return int(v)
    if isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInputError(f"{where} {name}: expected a number, got {v!r}")
        return float(v)
    if isinstance(default, str):
        if not isinstance(v, str):
            raise InvalidInputError(
                f"{where} {name}: expected a string, got {v!r} (quote it: '{v}')"
            )
        return v
    if isinstance(default, (list, tuple)) and not isinstance(v, list):
        raise InvalidInputError(f"{where} {name}: expected a list like {list(default)!r}")
    if isinstance(default, dict) and not isinstance(v, dict):
        raise InvalidInputError(f"{where} {name}: expected a mapping like {default!r}")
    return v


def coerce(name: str, raw: str, default: Any) -> Any:
    """A `--param name=raw` override, read as YAML and checked against the default's type.
    For a string parameter the text is taken as it is (`--param opt=123` is "123")."""
    if isinstance(default, str):
        try:
            v = parse_value(raw)
        except InvalidInputError:
            return raw.strip()
        return v if isinstance(v, str) else raw.strip()
    return check(name, parse_value(raw), default, "--param")
