"""Checks on what a log call accepts, shared by the call sites (which raise) and the
background writer (which drops what slipped past them, e.g. points appended directly).

Accepted: keys that are non-empty strings encodable as UTF-8; values convertible to a
float64 (NaN and +-inf included: they are data); steps that are integers in
[0, 2**63 - 1] (the store keeps int64 steps)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError

MAX_STEP = (1 << 63) - 1
# Keys already checked: the hot path pays one set lookup instead of a UTF-8 encode.
# Cleared when it grows past MAX_KNOWN so that per-step key names cannot leak memory.
KNOWN_KEYS: set[str] = set()
MAX_KNOWN = 100_000


def key_problem(key: Any, what: str = "metric key") -> str | None:
    """Why `key` is not a valid key (None when it is)."""
    if not isinstance(key, str):
        return f"{what} must be a string, got {type(key).__name__} {key!r}"
    if not key:
        return f"{what} must be a non-empty string"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} {key!r} is not valid UTF-8 text (it contains a lone surrogate)"
    if "\x00" in key:  # PostgreSQL text cannot hold NUL: refused on every backend alike
        return f"{what} {key!r} contains a NUL character"
    return None


def check_key(key: Any) -> str:
    """Return `key` if it is a valid metric key (and remember it), else raise."""
    msg = key_problem(key)
    if msg is not None:
        raise InvalidInputError(msg)
    if len(KNOWN_KEYS) >= MAX_KNOWN:
        KNOWN_KEYS.clear()
    KNOWN_KEYS.add(str(key))
    return key


def bad_key(key: Any) -> None:
    """Raise the error for an invalid metric key (called when the fast check failed)."""
    check_key(key)


def as_value(key: str, value: Any) -> float:
    """Coerce a metric value to float (ints, numpy/torch scalars included) or raise clearly.

    Integers too large for a float64 (e.g. 10**400) are refused: they cannot be stored."""
    if isinstance(value, (str, bytes)) or value is None:
        raise InvalidInputError(
            f"metric {key!r}: value must be a number, got {type(value).__name__} {value!r}"
        )
    try:
        return float(value)
    except OverflowError:
        raise InvalidInputError(
            f"metric {key!r}: value {_short(value)} is too large for a float64"
        ) from None
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"metric {key!r}: value must be a number (or a 1-element array/tensor), "
            f"got {type(value).__name__}"
        ) from None


def as_step(step: Any) -> int:
    """Validate a step: an integer in [0, 2**63 - 1] (numpy integers accepted)."""
    if isinstance(step, bool) or isinstance(step, float):
        raise InvalidInputError(f"step must be a non-negative integer, got {step!r}")
    try:
        s = int(step.__index__()) if hasattr(step, "__index__") else None
    except TypeError:
        s = None
    if s is None:
        raise InvalidInputError(f"step must be a non-negative integer, got {type(step).__name__}")
    if s < 0:
        raise InvalidInputError(f"step must be a non-negative integer, got {s}")
    if s > MAX_STEP:
        raise InvalidInputError(f"step {_short(s)} is larger than the int64 maximum (2**63 - 1)")
    return s


def _short(v: Any) -> str:
    try:
        r = repr(v)
    except ValueError:  # an int beyond Python's str() digit limit
        return f"(an integer of {v.bit_length()} bits)"
    return r if len(r) <= 40 else f"{r[:20]}...{r[-8:]} ({len(r)} characters)"
