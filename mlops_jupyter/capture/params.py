"""Params from cell source: top-level literal assignments (`lr = 3e-4`, `layers = [64, 64]`)
found with `ast`, never by executing anything, and papermill-style `parameters` cells."""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from typing import Any

# Bigger literals (a pasted array, a long text) are data, not parameters.
MAX_PARAM_CHARS = 2000
_PARAM_COMMENT = re.compile(r"^\s*#\s*parameters\b", re.IGNORECASE)
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_NO_VALUE = object()


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _value(node: ast.AST) -> Any:
    """A literal's value, including constant arithmetic like `2**10` or `1e-3 * 4`;
    `_NO_VALUE` for anything that would need the interpreter (names, calls, ...)."""
    if isinstance(node, ast.Constant):
        v = node.value
        return v if isinstance(v, (int, float, str, bool, type(None))) else _NO_VALUE
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand)
        if not _number(v):
            return _NO_VALUE
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Add) and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_number(a) and _number(b)):
            return _NO_VALUE
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            return _NO_VALUE  # refuse 10**10**10-style work inside a cell hook
        try:
            r = _BINOPS[type(node.op)](a, b)
        except (ArithmeticError, ValueError):
            return _NO_VALUE
        return r if not isinstance(r, complex) else _NO_VALUE
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_value(e) for e in node.elts]
        if any(i is _NO_VALUE for i in items):
            return _NO_VALUE
        if isinstance(node, ast.Set):
            try:
                return sorted(items)
            except TypeError:
                return _NO_VALUE
        return items
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            kv = _value(k) if k is not None else _NO_VALUE
            vv = _value(v)
            # params keep only string dict keys (JSON): {0: 1.0} is not captured
            if kv is _NO_VALUE or vv is _NO_VALUE or not isinstance(kv, str):
                return _NO_VALUE
            out[kv] = vv
        return out
    return _NO_VALUE


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        pass
    # IPython syntax (%magic, !shell, ?help) is not Python; drop those lines and retry
    kept = [
        "" if ln.lstrip().startswith(("%", "!", "?")) or ln.rstrip().endswith("?") else ln
        for ln in source.splitlines()
    ]
    try:
        return ast.parse("\n".join(kept))
    except (SyntaxError, ValueError):
        return None


def _small(v: Any) -> bool:
    if isinstance(v, float) and not math.isfinite(v):
        return True
    try:
        return len(json.dumps(v)) <= MAX_PARAM_CHARS
    except (TypeError, ValueError):
        return False


def literal_params(source: str) -> dict[str, Any]:
    """Top-level assignments of literal values in `source`, in order (later wins).

    `a = b = 1`, `a, b = 1, 2` and `x: int = 3` count; names starting with `_`, values
    that need evaluation (`f(3)`, `np.zeros(3)`, `other_var`) and huge literals don't."""
    if "=" not in source:
        return {}
    tree = _parse(source)
    if tree is None:
        return {}
    out: dict[str, Any] = {}

    def put(target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            if not target.id.startswith("_") and _small(value):
                out[target.id] = value
            else:
                out.pop(target.id, None)
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, list) and len(value) == len(target.elts):
                for t, v in zip(target.elts, value):
                    put(t, v)
            else:
                forget(target)

    def forget(target: ast.AST) -> None:
        # a later non-literal assignment means the earlier literal is not what ran
        for n in ast.walk(target):
            if isinstance(n, ast.Name):
                out.pop(n.id, None)

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            v = _value(stmt.value)
            for t in stmt.targets:
                if v is _NO_VALUE:
                    forget(t)
                else:
                    put(t, v)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and stmt.simple:
            v = _value(stmt.value)
            if v is _NO_VALUE:
                forget(stmt.target)
            else:
                put(stmt.target, v)
        elif isinstance(stmt, ast.AugAssign):
            forget(stmt.target)
    return out


def is_parameters_comment(source: str) -> bool:
    """True when the cell's first line is a `# parameters` comment (papermill writes
    `# Parameters` at the top of the cell it injects)."""
    for ln in source.splitlines():
        if ln.strip():
            return bool(_PARAM_COMMENT.match(ln))
    return False
