"""Traffic assignment for rollouts: which variant answers a request, sticky by a request key
(a user id header), and the parsing of split, ramp and interval settings.

A key is hashed (blake2b, keyed by the model name, so two models split their users
independently) to a bucket in 0..9999; the variants own consecutive ranges of buckets in
their listed order, sized by their weights in basis points. The same key always lands in
the same bucket on every process and machine (no per-process hash seed), so assignment is
sticky without any shared state. A canary is listed first: when its weight grows from 5 %
to 25 % its range grows from [0, 500) to [0, 2500), so every key that saw the canary keeps
seeing it.

The routing of the serving workers is built on this module; `mlops-jupyter rollout`
(rollout_cli.py, canary.py) stores the layouts they follow (live.py)."""

from __future__ import annotations

import hashlib
import math
import re
from bisect import bisect_right
from collections.abc import Sequence

from ..errors import InvalidInputError

BUCKETS = 10_000  # basis points: weights down to 0.01 %
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def bucket(key: str, salt: str = "") -> int:
    """The bucket (0..9999) of request key `key` under `salt` (the model name)."""
    if not isinstance(key, str):
        raise InvalidInputError(f"a request key must be a string, got {type(key).__name__}")
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                        key=salt.encode("utf-8", "surrogatepass")[:64])  # fmt: skip
    return int.from_bytes(h.digest(), "big") % BUCKETS


class Split:
    """Variants and their weights (basis points summing to 10,000), in routing order."""

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        names = [n for n, _ in weights]
        if not weights:
            raise InvalidInputError("a split needs at least one variant")
        if len(set(names)) != len(names):
            raise InvalidInputError(f"a variant is named twice in the split: {names}")
        for n, w in weights:
            if not isinstance(n, str) or not _NAME.match(n):
                raise InvalidInputError(f"variant names are letters, digits, '._-': {n!r}")
            if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
                raise InvalidInputError(f"variant {n!r}: weight must be > 0, got {w!r}")
        if sum(w for _, w in weights) != BUCKETS:
            total = sum(w for _, w in weights) / 100
            raise InvalidInputError(f"split weights must add up to 100 %, got {total:g} %")
        self.weights = list(weights)
        self._ends: list[int] = []
        acc = 0
        for _, w in weights:
            acc += w
            self._ends.append(acc)

    def variant(self, b: int) -> str:
        """The variant owning bucket `b`."""
        return self.weights[bisect_right(self._ends, b)][0]

    def assign(self, key: str, salt: str = "") -> str:
        """The variant that answers request key `key` (sticky: same key, same variant)."""
        return self.variant(bucket(key, salt))

    def percent(self) -> dict[str, float]:
        return {n: w / 100 for n, w in self.weights}

    def __repr__(self) -> str:
        return "Split(" + ", ".join(f"{n}={w / 100:g}" for n, w in self.weights) + ")"


def parse_split(text: str) -> Split:
    """'v3=90,v4=10' (percentages, up to two decimals, adding up to 100) -> Split."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("split must look like 'v3=90,v4=10'")
    out = []
    for part in text.split(","):
        name, sep, pct = part.partition("=")
        if not sep:
            raise InvalidInputError(f"split entry {part.strip()!r} must be VARIANT=PERCENT")
        out.append((name.strip(), _basis_points(pct, f"weight of {name.strip()!r}")))
    return Split(out)


def canary_split(canary: str, control: str, percent: float) -> Split:
    """The canary first (so its users stay with it as it grows), the control after."""
    bp = _basis_points(str(percent), "canary percent")
    if bp >= BUCKETS:
        return Split([(canary, BUCKETS)])
    return Split([(canary, bp), (control, BUCKETS - bp)])


def parse_ramp(text: str) -> list[float]:
    """'5,25,50,100' -> increasing percentages ending at 100."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("ramp must look like '5,25,50,100'")
    steps = [_basis_points(p, "ramp step") / 100 for p in text.split(",")]
    if any(b <= a for a, b in zip(steps, steps[1:])) or steps[-1] != 100:
        raise InvalidInputError(f"ramp steps must increase and end at 100, got {text!r}")
    return steps


def parse_every(text: str) -> float:
    """'30m' / '2h' / '90s' / '1d' -> seconds (> 0)."""
    m = _EVERY.match(text) if isinstance(text, str) else None
    if m is None or float(m[1]) <= 0:
        raise InvalidInputError(f"interval must look like 90s, 30m, 2h or 1d, got {text!r}")
    return float(m[1]) * _UNIT[m[2]]


def _basis_points(text: str, what: str) -> int:
    try:
        pct = float(text)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a percentage, got {text!r}") from None
    if not math.isfinite(pct) or not 0 < pct <= 100:
        raise InvalidInputError(f"{what} must be a percentage in (0, 100], got {text!r}")
    bp = round(pct * 100)
    if abs(bp - pct * 100) > 1e-6:
        raise InvalidInputError(f"{what}: at most two decimals, got {text!r}")
    return bp
