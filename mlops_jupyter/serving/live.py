"""Live layouts: the traffic layout of a served model kept in the store (see
store/serving_rollouts.py), and the workers following it.

A layout is a JSON dict: `variants` [[name, version, basis points], ...] in routing order,
`shadow` [name, version] or null, and `canary` (the ramp a canary controller walks, see
canary.py) or null. Each worker polls it about once a second from a thread of its event
loop's executor (a primary-key read, off the request path); when the generation changes it
builds a new Router, loads the versions it does not serve yet in a thread, and only then
swaps it in on the event loop: requests keep going to the old router until the new one is
ready. A version that fails to load keeps the old layout: the error is logged and recorded
in the store once per generation and worker (`serving_rollouts.record_refusal`, so the canary
controller can roll back and `rollout show` can say why), and that generation is not tried
again. A worker that starts with a stored layout records the versions of it it could not
load the same way."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from .variants import Plan, Router

log = logging.getLogger("mlops_jupyter.serving")
POLL_S = 1.0
RETIRE_S = 30.0  # a replaced variant's batcher is closed this long after the swap


def layout_of(plan: Plan, canary: dict | None = None) -> dict[str, Any]:
    """The stored form of `plan` (and of a canary ramp)."""
    return {
        "variants": [[n, int(v), int(w)] for n, v, w in plan.variants],
        "shadow": [plan.shadow[0], int(plan.shadow[1])] if plan.shadow else None,
        "canary": canary,
    }


def plan_of(model: str, layout: dict[str, Any]) -> Plan:
    """The Plan a stored layout describes."""
    variants = [(str(n), int(v), int(w)) for n, v, w in layout["variants"]]
    sh = layout.get("shadow")
    split_text = None
    if len(variants) > 1:
        split_text = ",".join(f"{n}={w / 100:g}" for n, _, w in variants)
    return Plan(model, variants, (str(sh[0]), int(sh[1])) if sh else None, split_text)


def describe(layout: dict[str, Any]) -> str:
    """One line: 'v3=90,v4=10 shadow v4'."""
    text = ",".join(f"{n}={w / 100:g}" for n, _, w in layout["variants"])
    if layout.get("shadow"):
        text += f" shadow {layout['shadow'][0]}"
    return text


def stored_rollout(store: Any, model: str) -> dict[str, Any] | None:
    """The stored rollout of `model` (store/serving_rollouts.get), also over a tracking
    server (remote/serving.py: a GET with a short cache)."""
    if getattr(store, "remote_serving", False):
        return store.rollout(model)
    from ..store import serving_rollouts as sr

    return sr.get(store, model)


async def follow(st: Any, store: Any, opts: dict[str, Any], interval: float = POLL_S) -> None:
    """Keep worker state `st` (app.State) serving the stored layout of its model."""
    loop = asyncio.get_running_loop()
    current = opts.get("generation")
    tried: int | None = None  # a generation that failed to load is not tried again
    pending: list[tuple] = []  # refusals not recorded yet (the store was away)
    if current and opts.get("plan") is not None:
        await asyncio.gather(*getattr(st, "_load_tasks", []), return_exceptions=True)
        failed = _failed(st.router.all())
        if failed:  # started with a stored layout it could not load all of
            pending.append((current, describe(layout_of(opts["plan"])), failed))
    while True:
        pending = [p for p in pending if not await _record(loop, store, st, *p)]
        await asyncio.sleep(interval)
        try:
            row = await loop.run_in_executor(None, stored_rollout, store, st.name)
        except Exception as e:  # the store may be away for a while: keep serving
            log.warning("rollout layout not read: %s", e)
            continue
        if row is None or row["generation"] in (current, tried):
            continue
        tried = row["generation"]
        try:
            failed = await _switch(st, plan_of(st.name, row["layout"]), opts)
        except Exception as e:
            log.error("rollout generation %s not applied: %s", row["generation"], e)
            failed = [{"name": None, "version": None, "error": f"{type(e).__name__}: {e}"}]
        if failed:
            pending.append((row["generation"], describe(row["layout"]), failed))
            continue
        current = row["generation"]
        log.warning("serving %s generation %s: %s", st.name, current, describe(row["layout"]))


def _failed(variants: Any) -> list[dict[str, Any]]:
    return [
        {"name": v.name, "version": int(v.version), "error": v.error}
        for v in variants
        if v.error is not None
    ]


async def _record(
    loop: asyncio.AbstractEventLoop, store: Any, st: Any, gen: int, layout: str, failed: list
) -> bool:
    """Record a refused layout in the store (in a thread); False to try again later."""
    from ..store import serving_rollouts as sr

    record = sr.record_refusal
    if getattr(store, "remote_serving", False):  # over a tracking server
        record = type(store).record_refusal
    try:
        await loop.run_in_executor(None, record, store, st.name, gen, st.worker, layout, failed)
        return True
    except Exception as e:  # the store may be away: the next poll tries again
        log.warning("refused rollout generation %s not recorded: %s", gen, e)
        return False


async def _switch(st: Any, plan: Plan, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Load what `plan` needs and swap it in. Returns the versions that failed to load
    ([{name, version, error}]; the old layout is kept then), [] once switched."""

    loop = asyncio.get_running_loop()
    old = st.router
    have = {(v.name, v.version): v for v in old.all() if v.loaded.is_set() and v.error is None}
    new = Router(plan)
    fresh = []
    for name, v in list(new.variants.items()):
        if (name, v.version) in have:
            new.variants[name] = have[(name, v.version)]
        else:
            fresh.append(v)
    if new.shadow is not None:
        if (new.shadow.name, new.shadow.version) in have:
            new.shadow = have[(new.shadow.name, new.shadow.version)]
        else:
            fresh.append(new.shadow)
    await asyncio.gather(
        *(loop.run_in_executor(None, v.load, opts.get("trusted", False)) for v in fresh)
    )
    failed = _failed(fresh)
    if failed:
        log.error(
            "rollout of %s not applied, old layout kept: %s",
            plan.model,
            "; ".join(f"{f['name']} (v{f['version']}): {f['error']}" for f in failed),
        )
        return failed
    for v in fresh:
        v.start_batcher(opts)
        v.loaded.set()
    # the weights of reused variants, then the routing order, change with the swap
    for n, _, w in plan.variants:
        new.variants[n].weight = w
    new.by_weight = sorted(new.variants.values(), key=lambda v: -v.weight)
    kept = {id(v) for v in new.all()}
    retired = [v for v in old.all() if id(v) not in kept]
    old.replace(new)  # no await in between: a request sees the old router or the new one
    for v in retired:  # requests already routed to it finish first
        if v.batcher is not None:
            loop.call_later(RETIRE_S, v.batcher.close)
    return []


def start_controller(model: str, interval: float = POLL_S) -> int | None:
    """Fork the canary controller of `model` as a child process of the server (it stops
    with it); returns its pid. Several servers may each run one: compare-and-set on the
    layout's generation lets one of them take each step."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        from ..trackserver.cli import _die_with_parent

        _die_with_parent()
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us
        from ..tracking.api import current_store, remote_url
        from .canary import watch

        if (url := remote_url()) is not None:  # each check runs on the server's store
            from ..remote.serving import watch as remote_watch

            remote_watch(url, model, interval=interval)
        else:
            watch(current_store(), model, interval=interval, quiet=True)
    except BaseException as e:  # a child must never return into the server's code
        print(f"mlops-jupyter serve: rollout controller stopped: {e}", file=sys.stderr)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve_plan(store: Any, args: Any) -> tuple[Plan, int | None]:
    """What `serve` starts with, and the generation of the stored layout its workers follow
    (None: they do not follow one). A bare NAME serves the stored layout when there is one
    (else the production version, and follows any layout stored later); --split/--shadow
    are stored at start (generation 0 until then); NAME:version, NAME@stage/alias and
    --variant pin what is served."""
    from .model import parse_spec
    from .variants import make_plan

    plan = make_plan(args.model, args.split, args.shadow, args.variant)
    if args.split or args.shadow:
        return plan, 0
    if len(parse_spec(args.model)) > 1 or args.variant:
        return plan, None
    row = stored_rollout(store, plan.model)
    if row is None:
        return plan, 0
    stored = plan_of(plan.model, row["layout"])
    stored.flavors = _flavors(plan.model, stored)
    return stored, row["generation"]


def _flavors(model: str, plan: Plan) -> set[str]:
    from .. import registry

    return {registry.model_version(model, version=v)["flavor"] for v in plan.versions()}


def store_plan(store: Any, plan: Plan, canary: dict | None = None) -> int:
    """Store `plan` as the layout of its model (audit: its reason); the new generation."""
    from ..registry import _user
    from ..store import serving_rollouts as sr

    if getattr(store, "remote_serving", False):  # over a tracking server: an admin change
        sh = plan.shadow[0] if plan.shadow else None
        return store.change(plan.model, {"action": "split", "split": plan.split_text,
                                         "shadow": sh})["generation"]  # fmt: skip
    gen = sr.set_layout(
        store, plan.model, layout_of(plan, canary), "serving", plan.reason(), _user()
    )
    assert gen is not None  # an unconditional write
    return gen
