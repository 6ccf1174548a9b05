"""Output helpers shared by the `mlops-jupyter` subcommands: plain tables, strict JSON,
and the global `--store` option."""

from __future__ import annotations

import json
import math
from typing import Any


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned text columns with a dashed rule under the header."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def json_text(obj: Any) -> str:
    """Strict JSON: NaN becomes null and infinities the strings "Infinity"/"-Infinity"."""
    return json.dumps(_clean(obj), default=str, allow_nan=False)


def use_store(args: Any) -> None:
    """Apply `--store` when the parsed arguments carry one."""
    if getattr(args, "store", None):
        from .tracking import set_store

        set_store(args.store)
