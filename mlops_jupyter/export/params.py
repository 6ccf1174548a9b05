"""params.yaml without a YAML dependency: a writer and a reader for the small, safe subset
a parameters cell produces (`key: value` lines, values in JSON/YAML flow style)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$")
_WORDS = {
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "null": None,
    "~": None,
    "none": None,
    ".inf": math.inf,
    "+.inf": math.inf,
    "-.inf": -math.inf,
    ".nan": math.nan,
}


def format_value(v: Any) -> str:
    """One value in YAML flow style (JSON, except for inf/nan which YAML spells .inf/.nan)."""
    if isinstance(v, float) and not math.isfinite(v):
        return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf")
    return json.dumps(v, ensure_ascii=False)


def dump(params: dict[str, Any], header: str = "") -> str:
    """params.yaml text; `header` becomes leading comment lines."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    lines += [f"{k}: {format_value(v)}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def parse_value(text: str) -> Any:
    """A scalar or flow list/dict as written in params.yaml or given as `--param k=v`."""
    t = text.strip()
    if t == "":
        return None
    if t.lower() in _WORDS:
        return _WORDS[t.lower()]
    try:
        return json.loads(t)
    except ValueError:
        pass
    if len(t) >= 2 and t[0] == t[-1] == "'":
        return t[1:-1].replace("''", "'")
    if t[0] in "[{":
        inner = t[1:-1]
        if t[0] == "[" and t[-1] == "]" and not re.search(r"[\[\]{}\"']", inner):
            # a YAML flow list of plain words: [a, b]
            return [parse_value(x) for x in inner.split(",")] if inner.strip() else []
        raise InvalidInputError(f"cannot read the value {t!r}")
    return t


def load(path: str | Path) -> dict[str, Any]:
    """Read a params.yaml written by `dump` (and hand edits in the same style)."""
    out: dict[str, Any] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _KEY.match(line)
        if not m or line[0].isspace():
            raise InvalidInputError(
                f"{path}, line {n}: expected `name: value` (one parameter per line, values "
                f'in JSON/YAML flow style such as 3, 0.1, "adam", [64, 64]), got {line!r}'
            )
        raw = m.group(2)
        try:
            out[m.group(1)] = parse_value(raw)
        except InvalidInputError:
            # a trailing comment: `lr: 0.1  # learning rate`
            out[m.group(1)] = parse_value(re.split(r"\s+#", raw, maxsplit=1)[0])
        else:
            if isinstance(out[m.group(1)], str) and re.search(r"\s+#", raw):
                out[m.group(1)] = parse_value(re.split(r"\s+#", raw, maxsplit=1)[0])
    return out


def coerce(name: str, raw: str, default: Any) -> Any:
    """A `--param name=raw` override, checked against the type of the default value."""
    if isinstance(default, str):
        v = parse_value(raw)
        return v if isinstance(v, str) else raw.strip()
    v = parse_value(raw)
    if default is None:
        return v
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise InvalidInputError(f"--param {name}: expected true or false, got {raw!r}")
        return v
    if isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInputError(f"--param {name}: expected an integer, got {raw!r}")
        if isinstance(v, float) and not v.is_integer():
            raise InvalidInputError(f"--param {name}: expected an integer, got {raw!r}")
        return int(v)
    if isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInputError(f"--param {name}: expected a number, got {raw!r}")
        return float(v)
    if isinstance(default, (list, dict)) and not isinstance(v, type(default)):
        raise InvalidInputError(
            f"--param {name}: expected a {type(default).__name__} like "
            f"{format_value(default)}, got {raw!r}"
        )
    return v
