"""Trailing `# comments` on magic lines (`%mlops_run end  # done`), stripped once for every
mlops magic before its arguments are parsed."""

from __future__ import annotations

import functools
from collections.abc import Callable

PREFIX = "mlops_"


def strip_comment(line: str) -> str:
    """`line` without a trailing shell-style comment: a `#` that starts a word outside
    quotes. `#` inside quotes (`"run #1"`), escaped (`\\#`) or inside a word (`a#b`) stays;
    a line with an unterminated quote is returned unchanged for the parser to report."""
    quote: str | None = None
    word_start = True
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote is not None:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = None
            word_start = False
        elif ch == "\\":
            i += 2
            word_start = False
            continue
        elif ch in "'\"":
            quote = ch
            word_start = False
        elif ch == "#" and word_start:
            return line[:i].rstrip()
        else:
            word_start = ch.isspace()
        i += 1
    return line


def _accepting_comments(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def magic(line: str = "", *args, **kwargs):
        return fn(strip_comment(line), *args, **kwargs)

    magic._mj_comments = True  # type: ignore[attr-defined]
    return magic


def accept_comments(ipython) -> None:
    """Make every registered `mlops_*` line and cell magic ignore a trailing comment on its
    line (IPython passes the rest of the line verbatim, so the parser would see it)."""
    table = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        for name, fn in list(table[kind].items()):
            if name.startswith(PREFIX) and not getattr(fn, "_mj_comments", False):
                table[kind][name] = _accepting_comments(fn)
