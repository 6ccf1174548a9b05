"""LLM-as-judge: any callable `judge(prompt) -> score` the user wires in (local or remote).

The judge gets the filled prompt template and may return a number, a string containing a
number ("Score: 4"); the first number in a string is the score. Calls run
on a small thread pool with a per-call timeout; a judge that raises, times out or returns
something unreadable gives an error on that example only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..errors import InvalidInputError

DEFAULT_TEMPLATE = (
    "You are grading an answer to a question.\n"
    "Question: {question}\n"
    "Context: {context}\n"
    "Reference answer: {reference}\n"
    "Answer: {answer}\n"
    "Rate the answer from 1 (wrong or useless) to 5 (correct, complete and relevant). "
    "Reply with the number only."
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FIELDS = ("question", "answer", "reference", "context")


def check_template(template: Any) -> str:
    """A template must be a string whose {fields} are among question/answer/reference/context."""
    if not isinstance(template, str) or not template.strip():
        raise InvalidInputError("judge_template must be a non-empty string")
    try:
        template.format(**{f: "" for f in _FIELDS})
    except (KeyError, IndexError, ValueError) as e:
        raise InvalidInputError(
            f"judge_template may only use the fields {_FIELDS} ({type(e).__name__}: {e})"
        ) from None
    return template


def parse_score(out: Any) -> dict[str, float]:
    """Read a judge's reply into {"judge": x}."""
    if isinstance(out, bool):
        raise ValueError(f"judge returned a bool ({out!r}), expected a number")
    if isinstance(out, (int, float)):
        return {"judge": _finite(float(out))}
    if isinstance(out, str):
        m = _NUMBER.search(out)
        if not m:
            raise ValueError(f"no number in the judge's reply {out[:80]!r}")
        return {"judge": _finite(float(m.group()))}
    try:  # numpy / torch scalars
        return {"judge": _finite(float(out))}
    except (TypeError, ValueError):
        raise ValueError(f"judge returned {type(out).__name__}, expected a number") from None


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"judge returned a non-finite score {x}")
    return x


def run_judge(
    judge: Callable[[str], Any],
    prompts: list[str | None],
    timeout: float,
    workers: int,
) -> list[tuple[dict[str, float], str | None]]:
    """Call the judge on each prompt (None = skip); (scores, error) per prompt, in order."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlops-llm-judge")
    try:
        futs = [pool.submit(judge, p) if p is not None else None for p in prompts]
        out: list[tuple[dict[str, float], str | None]] = []
        for f in futs:
            if f is None:
                out.append(({}, None))
                continue
            try:
                out.append((parse_score(f.result(timeout=timeout)), None))
            except FutureTimeout:
                f.cancel()
                out.append(({}, f"judge timed out after {timeout:g} s"))
            except Exception as e:
                out.append(({}, f"judge failed: {type(e).__name__}: {e}"))
        return out
    finally:
        # a timed-out call cannot be interrupted; don't wait for it
        pool.shutdown(wait=False, cancel_futures=True)
