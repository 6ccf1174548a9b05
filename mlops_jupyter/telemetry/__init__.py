"""Hardware telemetry: CPU, memory, disk, network, temperatures, NVIDIA GPUs (NVML),
torch.cuda / torch.mps, MLX, and thermal state. Pure Python (no Jupyter imports).

    mj.telemetry.snapshot()      # {"sys/cpu/percent": 12.5, ..., "thermal_state": "nominal"}
    mj.telemetry.devices()       # [{"kind": "cpu", ...}, {"kind": "gpu", ...}]
    mj.telemetry.should_run()    # Decision(ok=True, reason="...")

While a run is active a background sampler logs the same readings as `sys/...` metrics
of the run (see `sampler`), detects throttling episodes and evaluates alert rules.
"""

from __future__ import annotations

import platform
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from ..errors import InvalidInputError
from . import alerts, sampler  # `alerts` is the module: mj.alerts is its alerts() function
from .alerts import (
    CallableRule,
    NonFiniteRule,
    RisingRule,
    ThresholdRule,
    add_rule,
    configure,
    default_rules,
    remove_rule,
    rules,
    set_rules,
)
from .sources import GIB, THERMAL_STATES, Sources, cpu_name, nvml

__all__ = [
    "CallableRule",
    "Decision",
    "NonFiniteRule",
    "RisingRule",
    "THERMAL_STATES",
    "ThresholdRule",
    "add_rule",
    "alerts",
    "configure",
    "default_rules",
    "devices",
    "remove_rule",
    "rules",
    "set_rules",
    "should_run",
    "snapshot",
    "thermal_state",
]

_own: Sources | None = None
_own_lock = threading.Lock()


def snapshot() -> dict[str, Any]:
    """Current readings of every available source as {`sys/...` key: float}, plus
    "thermal_state" (nominal/fair/serious/critical, or "unknown" where the machine exposes
    no temperatures) and "time". Uses the running sampler's latest sample when it is fresh."""
    s = sampler.latest(max_age=2 * sampler.interval() + 0.5)
    if s is None:
        global _own
        with _own_lock:
            if _own is None:
                _own = Sources()
                time.sleep(0.1)  # rates and CPU % need two readings some time apart
            s = _own.sample()
    out: dict[str, Any] = dict(s)
    st = s.get("sys/thermal_state")
    out["thermal_state"] = THERMAL_STATES[int(st)] if st is not None else "unknown"
    out["time"] = time.time()
    return out


def devices() -> list[dict[str, Any]]:
    """The compute devices this process can see: the CPU, NVIDIA GPUs (NVML), and the
    torch / MLX devices when those libraries are already imported."""
    vm = psutil.virtual_memory()
    out: list[dict[str, Any]] = [
        {
            "kind": "cpu",
            "name": cpu_name(),
            "cores": psutil.cpu_count(logical=False),
            "threads": psutil.cpu_count(),
            "memory_gib": round(vm.total / GIB, 2),
            "platform": f"{platform.system()} {platform.machine()}",
        }
    ]
    nv = nvml()
    if nv is not None:
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(h)
            out.append(
                {
                    "kind": "gpu",
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_gib": round(nv.nvmlDeviceGetMemoryInfo(h).total / GIB, 2),
                    "source": "nvml",
                }
            )
    torch = sys.modules.get("torch")
    if torch is not None:
        mps = getattr(getattr(torch, "backends", None), "mps", None)
        if mps is not None and mps.is_available():
            out.append({"kind": "mps", "name": "Apple GPU (torch.mps)", "source": "torch"})
        if nv is None and torch.cuda.is_initialized():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out.append(
                    {
                        "kind": "gpu",
                        "index": i,
                        "name": p.name,
                        "memory_gib": round(p.total_memory / GIB, 2),
                        "source": "torch",
                    }
                )
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        out.append({"kind": "mlx", "name": str(mx.default_device()), "source": "mlx"})
    return out


def thermal_state() -> str:
    """nominal / fair / serious / critical (macOS thermal state, else derived from
    temperatures and throttling), or "unknown"."""
    return snapshot()["thermal_state"]


@dataclass(frozen=True)
class Decision:
    """should_run()'s answer; truthy when the work may start."""

    ok: bool
    reason: str
    thermal_state: str
    memory_available_percent: float

    def __bool__(self) -> bool:
        return self.ok


# priority -> (worst thermal state allowed, least % of memory that must be available)
PRIORITIES = {"low": (1, 30.0), "normal": (1, 10.0), "high": (2, 5.0)}


def decide(thermal: str, mem_available_percent: float, priority: str = "normal") -> Decision:
    """The scheduling rule behind should_run(), as a pure function."""
    if priority not in PRIORITIES:
        raise InvalidInputError(f"priority must be one of {sorted(PRIORITIES)}, got {priority!r}")
    worst, mem_min = PRIORITIES[priority]
    level = THERMAL_STATES.index(thermal) if thermal in THERMAL_STATES else None
    if level is not None and level > worst:
        return Decision(
            False,
            f"thermal state is {thermal}; {priority}-priority work waits for "
            f"{THERMAL_STATES[worst]} or cooler",
            thermal,
            mem_available_percent,
        )
    if mem_available_percent < mem_min:
        return Decision(
            False,
            f"only {mem_available_percent:.0f} % of memory is available; {priority}-priority "
            f"work needs {mem_min:.0f} %",
            thermal,
            mem_available_percent,
        )
    t = "thermal state unknown" if level is None else f"thermal state {thermal}"
    return Decision(
        True, f"{t}, {mem_available_percent:.0f} % memory available", thermal, mem_available_percent
    )


def should_run(priority: str = "normal") -> Decision:
    """Whether to start work of this priority ("low", "normal", "high") now, from the
    thermal state and free memory: `if mj.telemetry.should_run(): ...`, and `.reason`."""
    if priority not in PRIORITIES:
        raise InvalidInputError(f"priority must be one of {sorted(PRIORITIES)}, got {priority!r}")
    snap = snapshot()
    vm = psutil.virtual_memory()
    return decide(snap["thermal_state"], 100.0 * vm.available / vm.total, priority)
