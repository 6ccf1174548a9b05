"""Several versions of one model in one worker: an A/B split (`--split v3=90,v4=10`) and a
shadow (`--shadow v4`).

A variant is named `vN` (registry version N) or by a stage or alias of the model; names are
resolved to versions once, when the server starts (`make_plan`), so every worker serves the
same versions even if an alias moves meanwhile. Each worker loads every variant (and the
shadow) with its own batcher. A request goes to `Split.assign(key, salt=model name)`, the
key being the X-User-Id header (sticky) or else the request id (a random split).

The control is the variant with the largest weight (the first listed among equal weights):
requests routed to a variant that failed to load are answered by the control, or by the
next-heaviest loaded variant if the control failed too, and logged with the variant that
answered."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError
from .rollout import BUCKETS, Split, parse_split

log = logging.getLogger("mlops_jupyter.serving")
_VERSION = re.compile(r"^v(\d+)$")
SHADOW_PREFIX = "shadow:"  # the log's variant of a shadow row: cannot clash with a split name
# The store variants are resolved in when it is not the process's own: a tracking server
# changing a rollout for a remote client (trackserver/serving_routes.py) resolves in the
# store it serves, whatever MLOPS_JUPYTER_STORE says in its environment.
_STORE: contextvars.ContextVar[Any] = contextvars.ContextVar("mj_serving_store", default=None)


@contextlib.contextmanager
def using_store(store: Any) -> Iterator[None]:
    """Resolve variants and versions in `store` inside the block (this thread only)."""
    token = _STORE.set(store)
    try:
        yield
    finally:
        _STORE.reset(token)


def find_version(model: str, **kw: Any) -> dict:
    """registry.model_version in the store of `using_store`, else the session's."""
    from .. import registry

    store = _STORE.get()
    if store is None:
        return registry.model_version(model, **kw)
    from ..store import registry as rs

    return rs.find_version(store, registry._check_name(model), **kw)


@dataclass
class Plan:
    """What a server serves: the variants in routing order with their versions and weights
    (basis points), and the shadow, all resolved to registry versions."""

    model: str
    variants: list[tuple[str, int, int]]  # (variant, version, basis points)
    shadow: tuple[str, int] | None = None
    split_text: str | None = None
    flavors: set[str] = field(default_factory=set)

    @property
    def control(self) -> str:
        """The variant with the largest weight (the first listed among equal weights)."""
        return max(self.variants, key=lambda v: v[2])[0]  # max keeps the first of ties

    def versions(self) -> list[int]:
        out = [v for _, v, _ in self.variants]
        if self.shadow and self.shadow[1] not in out:
            out.append(self.shadow[1])
        return out

    def reason(self) -> str:
        """The audit log's reason of this rollout, e.g. 'split v3=90,v4=10 shadow v4'."""
        parts = []
        if len(self.variants) > 1 or self.split_text:
            parts.append("split " + ",".join(f"{n}={w / 100:g}" for n, w in self._weights()))
        else:
            parts.append(f"serve {self.variants[0][0]}")
        if self.shadow:
            parts.append(f"shadow {self.shadow[0]}")
        named = [(n, v) for n, v, _ in self.variants if n != f"v{v}"]
        if self.shadow and self.shadow[0] != f"v{self.shadow[1]}":
            named.append(self.shadow)
        if named:
            parts.append("(" + ", ".join(f"{n} = v{v}" for n, v in named) + ")")
        return " ".join(parts)

    def _weights(self) -> list[tuple[str, int]]:
        return [(n, w) for n, _, w in self.variants]

    def describe(self) -> str:
        """One line for the start message."""
        if len(self.variants) == 1:
            text = f"{self.model} v{self.variants[0][1]}"
        else:
            text = f"{self.model} split " + ", ".join(
                f"{n} (v{v}) {w / 100:g} %" for n, v, w in self.variants
            )
        if self.shadow:
            text += f", shadow {self.shadow[0]} (v{self.shadow[1]})"
        return text


def resolve_variant(model: str, variant: str) -> dict:
    """The registry entry of variant `variant` of `model`: `vN` is version N, a stage name
    its version in that stage, anything else an alias. Raises ModelNotFoundError naming
    the variant."""
    from .. import registry
    from ..registry import STAGES

    m = _VERSION.match(variant)
    if m:
        kw: dict[str, Any] = {"version": int(m[1])}
    elif variant in STAGES:
        kw = {"stage": variant}
    else:
        kw = {"alias": variant}
    try:
        return find_version(model, **kw)
    except registry.ModelNotFoundError as e:
        raise registry.ModelNotFoundError(f"variant {variant!r} of {model!r}: {e}") from None


def make_plan(
    spec: str, split: str | None = None, shadow: str | None = None, variant: str | None = None
) -> Plan:
    """Resolve what `serve SPEC [--split ...] [--shadow ...]` serves. Without a split the
    one variant is the version SPEC names (named `variant`, default vN); with a split SPEC
    must be the model NAME only."""
    from .model import parse_spec
    from .server import resolve

    kw = parse_spec(spec)
    name = kw["name"]
    flavors: set[str] = set()
    if split is None:
        info = resolve(spec)
        flavors.add(info["flavor"])
        variants = [(variant or f"v{info['version']}", info["version"], BUCKETS)]
    else:
        if len(kw) > 1:
            raise InvalidInputError(
                f"with --split give the model NAME only (got {spec!r}); name the versions "
                "in the split, e.g. --split v3=90,v4=10"
            )
        if variant:
            raise InvalidInputError("--variant names the one variant; a split names its own")
        sp = parse_split(split)
        variants = []
        for n, w in sp.weights:
            info = resolve_variant(name, n)
            flavors.add(info["flavor"])
            variants.append((n, info["version"], w))
    sh = None
    if shadow is not None:
        if not isinstance(shadow, str) or not shadow.strip():
            raise InvalidInputError("--shadow needs a variant: vN, a stage or an alias")
        info = resolve_variant(name, shadow.strip())
        flavors.add(info["flavor"])
        sh = (shadow.strip(), info["version"])
    return Plan(name, variants, sh, split, flavors)


class Variant:
    """One version served by this worker: its predictor (loaded in a thread at start), its
    batcher, and the load error if it failed."""

    def __init__(self, model: str, name: str, version: int, weight: int) -> None:
        self.model, self.name, self.version, self.weight = model, name, version, weight
        self.predictor: Any = None
        self.error: str | None = None
        self.loaded = asyncio.Event()
        self.batcher: Any = None

    def load(self, trusted: bool) -> None:
        from . import model

        try:
            # loads in parallel threads are safe: the registry guards torch's allowlist
            self.predictor = model.load(self.model, trusted=trusted, version=self.version)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log.error("model %s v%s not loaded: %s", self.model, self.version, self.error)

    def start_batcher(self, opts: dict[str, Any]) -> None:
        """The batcher of a loaded predictor, by the server's batching options."""
        from .batching import Batcher

        self.batcher = Batcher(
            self.predictor,
            opts.get("max_batch", 64),
            opts.get("max_wait_ms", 5) / 1000,
            threaded=opts.get("model_thread", False),
        )

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "weight": self.weight / 100}
        if not self.loaded.is_set():
            out["ready"], out["error"] = False, "model loading"
        else:
            out["ready"], out["error"] = self.error is None, self.error
        return out


class Router:
    """The variants of one worker and which one answers a request."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.variants = {n: Variant(plan.model, n, v, w) for n, v, w in plan.variants}
        # the fallback order: heaviest first, listing order among ties (stable sort)
        self.by_weight = sorted(self.variants.values(), key=lambda v: -v.weight)
        self.split = Split(plan._weights()) if len(plan.variants) > 1 else None
        self.shadow = (
            Variant(plan.model, SHADOW_PREFIX + plan.shadow[0], plan.shadow[1], 0)
            if plan.shadow
            else None
        )

    def all(self) -> list[Variant]:
        return list(self.variants.values()) + ([self.shadow] if self.shadow else [])

    def replace(self, other: Router) -> None:
        """Serve `other`'s layout from now on (live.py; called on the event loop, so a
        request sees either the old layout or the new one)."""
        self.plan, self.variants, self.by_weight = other.plan, other.variants, other.by_weight
        self.split, self.shadow = other.split, other.shadow

    def route(self, key: str) -> Variant:
        """The variant the split assigns `key` to (not yet checked for a load error)."""
        if self.split is None:
            return self.by_weight[0]
        return self.variants[self.split.assign(key, self.plan.model)]

    def fallback(self, failed: set[str]) -> Variant | None:
        """The heaviest variant not known to have failed (None: all failed)."""
        for v in self.by_weight:
            if v.name not in failed and v.error is None:
                return v
        return None

    def control(self) -> Variant:
        """The variant answering for the whole server (/ready, /openapi): the control,
        else the heaviest that loaded."""
        return self.fallback(set()) or self.by_weight[0]

    def errors(self) -> dict[str, str]:
        return {v.name: v.error for v in self.variants.values() if v.error is not None}
