"""Evaluation input: column names, chunks of rows, per-example checks, answer generation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InvalidInputError

ALIASES = {
    "question": ("question", "prompt", "input", "query"),
    "answer": ("answer", "response", "output", "prediction"),
    "reference": ("reference", "ground_truth", "expected", "target"),
    "context": ("context", "contexts", "retrieved_context"),
}


def _columns(data: Any) -> list[str]:
    if isinstance(data, list):
        cols: dict[str, None] = {}
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise InvalidInputError(
                    f"data: a list must hold dicts, row {i} is {type(row).__name__}"
                )
            cols.update(dict.fromkeys(row))
        return list(cols)
    if hasattr(data, "columns") and hasattr(data, "__len__"):
        return [str(c) for c in data.columns]
    raise InvalidInputError(
        f"data must be a polars or pandas DataFrame or a list of dicts, got {type(data).__name__}"
    )


def resolve_columns(data: Any, need_answer: bool) -> dict[str, str]:
    """Map question/answer/reference/context to the data's column names."""
    cols = _columns(data)
    if len(data) == 0:
        raise InvalidInputError("data has no rows to evaluate")
    found = {}
    for role, names in ALIASES.items():
        for n in names:
            if n in cols:
                found[role] = n
                break
    if "question" not in found:
        raise InvalidInputError(
            f"data has no question column (one of {ALIASES['question']}); columns: {cols}"
        )
    if need_answer and "answer" not in found:
        raise InvalidInputError(
            f"data has no answer column (one of {ALIASES['answer']}) and no model= was given "
            f"to generate answers; columns: {cols}"
        )
    return found


def n_rows(data: Any) -> int:
    return len(data)


def chunks(data: Any, cols: dict[str, str], size: int) -> Iterator[dict[str, list]]:
    """Rows `size` at a time, as {role: list of values}."""
    n = len(data)
    for start in range(0, n, size):
        part = data[start : start + size]
        if isinstance(data, list):
            yield {role: [row.get(c) for row in part] for role, c in cols.items()}
        elif hasattr(part, "to_dict") and not hasattr(part, "to_arrow"):  # pandas
            yield {role: part[c].tolist() for role, c in cols.items()}
        else:  # polars
            yield {role: part[c].to_list() for role, c in cols.items()}


def check_text(
    value: Any, role: str, max_tokens: int, required: bool
) -> tuple[str | None, str | None]:
    """(text, error): a usable string, or None with the reason (None/None when optional and
    missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return None, (f"{role} is missing" if required else None)
    if not isinstance(value, str):
        return None, f"{role} must be a string, got {type(value).__name__}"
    if not value.strip():
        return None, f"{role} is empty"
    n = len(value.split())
    if n > max_tokens:
        return None, f"{role} has {n} tokens > max_tokens={max_tokens}; not scored"
    return value, None


def check_context(value: Any, max_tokens: int) -> tuple[str | list[str] | None, str | None]:
    """A context is a string or a list of strings (retrieved passages)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Series", "ndarray"):
        items = list(value)
        if not items:
            return None, "context is empty"
        bad = [type(x).__name__ for x in items if not isinstance(x, str)]
        if bad:
            return None, f"context passages must be strings, got {bad[0]}"
        n = sum(len(x.split()) for x in items)
        if n > max_tokens:
            return None, f"context has {n} tokens > max_tokens={max_tokens}; not scored"
        if not any(x.strip() for x in items):
            return None, "context is empty"
        return items, None
    return check_text(value, "context", max_tokens, required=False)


def generate(model: Callable[[str], Any], questions: list[Any]) -> list[dict[str, Any]]:
    """Call `model(question)` for each question: answer, latency_s, tokens and error.

    The model may return a string, or a dict with "answer"/"text"/"response" and optional
    "prompt_tokens"/"completion_tokens"; without counts, whitespace tokens are counted."""
    out = []
    for q in questions:
        rec: dict[str, Any] = {
            "answer": None,
            "latency_s": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "gen_error": None,
        }
        if not isinstance(q, str) or not q.strip():
            rec["gen_error"] = "no answer generated: question is missing, empty or not a string"
            out.append(rec)
            continue
        t0 = time.perf_counter()
        try:
            res = model(q)
        except Exception as e:
            rec["latency_s"] = time.perf_counter() - t0
            rec["gen_error"] = f"model failed: {type(e).__name__}: {e}"
            out.append(rec)
            continue
        rec["latency_s"] = time.perf_counter() - t0
        if isinstance(res, dict):
            ans = next((res[k] for k in ("answer", "text", "response") if k in res), None)
            rec["prompt_tokens"] = res.get("prompt_tokens")
            rec["completion_tokens"] = res.get("completion_tokens")
        else:
            ans = res
        rec["answer"] = ans
        if rec["prompt_tokens"] is None:
            rec["prompt_tokens"] = len(q.split())
        if rec["completion_tokens"] is None and isinstance(ans, str):
            rec["completion_tokens"] = len(ans.split())
        out.append(rec)
    return out
