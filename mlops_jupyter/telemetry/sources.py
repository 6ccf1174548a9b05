"""Telemetry sources: each reads one kind of hardware and returns flat `sys/...` readings.

Every source is optional and isolated: a missing library or device makes it absent, and a
source that raises is skipped for that sample while the others carry on. Heavy frameworks
(torch, MLX) are only read when the user has already imported them: telemetry never
imports them itself, so it never pays their import time or initialises a GPU context.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import psutil

GIB = float(1 << 30)
MB = 1e6

# Chips whose sensors describe the CPU package/cores (psutil.sensors_temperatures names).
CPU_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal")

# NVML clock-event ("throttle reason") bits, from nvml.h.
NVML_SW_POWER_CAP = 0x4
NVML_HW_SLOWDOWN = 0x8
NVML_SW_THERMAL = 0x20
NVML_HW_THERMAL = 0x40
NVML_HW_POWER_BRAKE = 0x80
THROTTLE_THERMAL_MASK = NVML_HW_SLOWDOWN | NVML_SW_THERMAL | NVML_HW_THERMAL
THROTTLE_POWER_MASK = NVML_SW_POWER_CAP | NVML_HW_POWER_BRAKE

THERMAL_STATES = ("nominal", "fair", "serious", "critical")

# the shape of psutil's shwtemp, for readings taken from /sys/class/thermal
Reading = namedtuple("Reading", "label current high critical")


# -- pure conversions (unit-tested with synthetic readings) ------------------------------
def cpu_percents(prev: list, cur: list) -> list[float]:
    """Per-core busy % between two `psutil.cpu_times(percpu=True)` readings."""
    out = []
    for a, b in zip(prev, cur):
        ta, tb = sum(a), sum(b)
        idle_a = a.idle + getattr(a, "iowait", 0.0)
        idle_b = b.idle + getattr(b, "iowait", 0.0)
        dt = tb - ta
        busy = dt - (idle_b - idle_a)
        out.append(0.0 if dt <= 0 else max(0.0, min(100.0, 100.0 * busy / dt)))
    return out


def temperature_metrics(temps: dict[str, list]) -> tuple[dict[str, float], dict[str, float]]:
    """From `psutil.sensors_temperatures()`-shaped data: (`sys/...` readings, limits).

    limits holds the CPU sensors' own `high`/`critical` thresholds where the OS gives them."""
    out: dict[str, float] = {}
    limits: dict[str, float] = {}
    cpu_vals: list[float] = []
    all_vals: list[float] = []
    for chip, entries in temps.items():
        vals = [e.current for e in entries if e.current is not None and 0 < e.current < 150]
        if not vals:
            continue
        name = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in chip)
        out[f"sys/temp/{name}_c"] = max(vals)
        all_vals.extend(vals)
        if chip in CPU_CHIPS:
            cpu_vals.extend(vals)
            highs = [e.high for e in entries if e.high]
            crits = [e.critical for e in entries if e.critical]
            if highs:
                limits["cpu_high"] = min(highs)
            if crits:
                limits["cpu_critical"] = min(crits)
    if cpu_vals or all_vals:
        out["sys/cpu/temp_c"] = max(cpu_vals or all_vals)
    return out, limits


def read_thermal_zones(root: str | os.PathLike = "/sys/class/thermal") -> dict[str, list]:
    """Linux thermal zones as {type: [Reading]} (the sensors_temperatures shape), for
    systems where psutil exposes no hwmon sensors but the kernel has thermal zones."""
    out: dict[str, list] = {}
    base = Path(root)
    if not base.is_dir():
        return out
    for zone in sorted(base.glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() or zone.name
        except (OSError, ValueError):
            continue
        crit = None
        for tp in zone.glob("trip_point_*_type"):
            try:
                if tp.read_text().strip() == "critical":
                    crit = int(Path(str(tp)[: -len("type")] + "temp").read_text()) / 1000.0
            except (OSError, ValueError):
                pass
        key = "cpu_thermal" if kind in ("x86_pkg_temp", "cpu-thermal", "cpu_thermal") else kind
        out.setdefault(key, []).append(Reading(zone.name, milli / 1000.0, None, crit))
    return out


def gpu_metrics(readings: list[dict[str, Any]]) -> dict[str, float]:
    """NVML readings (one dict per GPU, as `read_nvml` returns) -> `sys/gpu{i}/...`."""
    out: dict[str, float] = {}
    for r in readings:
        p = f"sys/gpu{r['index']}/"
        if r.get("util") is not None:
            out[p + "util_percent"] = float(r["util"])
        if r.get("mem_used") is not None and r.get("mem_total"):
            out[p + "mem_used_gib"] = r["mem_used"] / GIB
            out[p + "mem_percent"] = 100.0 * r["mem_used"] / r["mem_total"]
        if r.get("temp") is not None:
            out[p + "temp_c"] = float(r["temp"])
        if r.get("power_mw") is not None:
            out[p + "power_w"] = r["power_mw"] / 1000.0
        if r.get("sm_clock") is not None:
            out[p + "sm_clock_mhz"] = float(r["sm_clock"])
        reasons = r.get("throttle_reasons")
        if reasons is not None:
            out[p + "throttle_thermal"] = 1.0 if reasons & THROTTLE_THERMAL_MASK else 0.0
            out[p + "throttle_power"] = 1.0 if reasons & THROTTLE_POWER_MASK else 0.0
    return out


def derive_thermal_state(
    sample: dict[str, float], limits: dict[str, float] | None = None
) -> int | None:
    """0..3 (nominal/fair/serious/critical) from temperatures and throttle flags; None when
    the machine exposes neither."""
    limits = limits or {}
    level: int | None = None
    cpu = sample.get("sys/cpu/temp_c")
    if cpu is not None:
        high = limits.get("cpu_high") or 90.0
        crit = limits.get("cpu_critical") or 100.0
        level = 3 if cpu >= crit else 2 if cpu >= high else 1 if cpu >= high - 10 else 0
    for k, v in sample.items():
        if not k.startswith("sys/gpu"):
            continue
        if k.endswith("/temp_c"):
            g = 3 if v >= 95 else 2 if v >= 87 else 1 if v >= 80 else 0
            level = max(level or 0, g)
        elif k.endswith("/throttle_thermal") or k.endswith("/throttle_power"):
            level = max(level or 0, 2 if v else 0)
    return level


# -- readers for libraries that may be absent ------------------------------------------
_nvml: Any = None  # the pynvml module once initialised, False when unavailable


def nvml() -> Any:
    """The initialised `pynvml` module (from nvidia-ml-py), or None without one/a GPU."""
    global _nvml
    if _nvml is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml = pynvml if pynvml.nvmlDeviceGetCount() > 0 else False
        except Exception:
            _nvml = False
    return _nvml or None


def read_nvml(nv: Any) -> list[dict[str, Any]]:
    """Raw readings of every NVIDIA GPU; a query a GPU does not support reads as None."""

    def q(fn, *a):
        try:
            return fn(*a)
        except Exception:
            return None

    out = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        util = q(nv.nvmlDeviceGetUtilizationRates, h)
        mem = q(nv.nvmlDeviceGetMemoryInfo, h)
        reasons_fn = (
            getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        out.append(
            {
                "index": i,
                "util": util.gpu if util is not None else None,
                "mem_used": mem.used if mem is not None else None,
                "mem_total": mem.total if mem is not None else None,
                "temp": q(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                "power_mw": q(nv.nvmlDeviceGetPowerUsage, h),
                "sm_clock": q(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                "throttle_reasons": q(reasons_fn, h),
            }
        )
    return out


def torch_metrics() -> dict[str, float]:
    """torch.cuda / torch.mps allocator memory, only if the user imported torch and (for
    CUDA) already initialised it: reading must never create a GPU context."""
    torch = sys.modules.get("torch")
    out: dict[str, float] = {}
    if torch is None:
        return out
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        for i in range(cuda.device_count()):
            out[f"sys/torch/cuda{i}/allocated_gib"] = cuda.memory_allocated(i) / GIB
            out[f"sys/torch/cuda{i}/reserved_gib"] = cuda.memory_reserved(i) / GIB
            out[f"sys/torch/cuda{i}/peak_allocated_gib"] = cuda.max_memory_allocated(i) / GIB
    mps_backend = getattr(getattr(torch, "backends", None), "mps", None)
    if mps_backend is not None and mps_backend.is_available():
        out["sys/torch/mps/allocated_gib"] = torch.mps.current_allocated_memory() / GIB
        out["sys/torch/mps/driver_gib"] = torch.mps.driver_allocated_memory() / GIB
    return out


def mlx_metrics() -> dict[str, float]:
    """MLX active/peak/cache memory, only if the user imported mlx.core."""
    mx = sys.modules.get("mlx.core")
    if mx is None:
        return {}
    ns = mx if hasattr(mx, "get_active_memory") else getattr(mx, "metal", None)
    if ns is None or not hasattr(ns, "get_active_memory"):
        return {}
    return {
        "sys/mlx/active_gib": ns.get_active_memory() / GIB,
        "sys/mlx/peak_gib": ns.get_peak_memory() / GIB,
        "sys/mlx/cache_gib": ns.get_cache_memory() / GIB,
    }


_mac_thermal: Any = None


def macos_thermal_state() -> int | None:
    """NSProcessInfo.thermalState (0 nominal .. 3 critical) on macOS, else None."""
    global _mac_thermal
    if sys.platform != "darwin":
        return None
    if _mac_thermal is None:
        try:
            import ctypes
            import ctypes.util

            objc = ctypes.cdll.LoadLibrary(ctypes.util.find_library("objc"))
            ctypes.cdll.LoadLibrary(ctypes.util.find_library("Foundation"))
            objc.objc_getClass.restype = ctypes.c_void_p
            objc.objc_getClass.argtypes = [ctypes.c_char_p]
            objc.sel_registerName.restype = ctypes.c_void_p
            objc.sel_registerName.argtypes = [ctypes.c_char_p]
            send_ptr = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
                ("objc_msgSend", objc)
            )
            send_long = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)(
                ("objc_msgSend", objc)
            )
            info = send_ptr(
                objc.objc_getClass(b"NSProcessInfo"), objc.sel_registerName(b"processInfo")
            )
            sel = objc.sel_registerName(b"thermalState")
            _mac_thermal = lambda: int(send_long(info, sel))  # noqa: E731
        except Exception:
            _mac_thermal = False
    if not _mac_thermal:
        return None
    try:
        return max(0, min(3, _mac_thermal()))
    except Exception:
        return None


def cpu_name() -> str:
    """A readable CPU model name."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- the stateful sampler of all sources --------------------------------------------------
class Sources:
    """Reads every available source; keeps the previous counters to turn them into rates.

    Not thread-safe: one instance per sampling thread."""

    def __init__(self, disk_path: str | os.PathLike | None = None) -> None:
        self.disk_path = os.fspath(disk_path) if disk_path else os.getcwd()
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)
        self._cpu_prev = psutil.cpu_times(percpu=True)
        self._io_prev = self._io()
        self._t_prev = time.monotonic()
        self.max_freq = 0.0
        self.limits: dict[str, float] = {}
        self.failed: dict[str, str] = {}  # source name -> last error (for diagnostics)
        self._no_sensors = False

    @staticmethod
    def _io() -> tuple:
        d = psutil.disk_io_counters()
        n = psutil.net_io_counters()
        return (
            d.read_bytes if d else None,
            d.write_bytes if d else None,
            n.bytes_recv if n else None,
            n.bytes_sent if n else None,
        )

    def _psutil(self, out: dict[str, float]) -> None:
        now = time.monotonic()
        dt = max(1e-6, now - self._t_prev)
        cur = psutil.cpu_times(percpu=True)
        per = cpu_percents(self._cpu_prev, cur)
        self._cpu_prev = cur
        if per:
            out["sys/cpu/percent"] = sum(per) / len(per)
            for i, p in enumerate(per):
                out[f"sys/cpu/core{i}/percent"] = p
        f = psutil.cpu_freq()
        if f is not None and f.current:
            out["sys/cpu/freq_mhz"] = float(f.current)
            self.max_freq = max(self.max_freq, f.max or 0.0, f.current)
        vm = psutil.virtual_memory()
        out["sys/mem/used_gib"] = (vm.total - vm.available) / GIB
        out["sys/mem/available_gib"] = vm.available / GIB
        out["sys/mem/percent"] = float(vm.percent)
        sw = psutil.swap_memory()
        out["sys/swap/used_gib"] = sw.used / GIB
        out["sys/swap/percent"] = float(sw.percent)
        out["sys/proc/rss_gib"] = self.proc.memory_info().rss / GIB
        out["sys/proc/cpu_percent"] = self.proc.cpu_percent(None)
        io = self._io()
        names = ("disk/read_mbps", "disk/write_mbps", "net/recv_mbps", "net/sent_mbps")
        for name, a, b in zip(names, self._io_prev, io):
            if a is not None and b is not None:
                out[f"sys/{name}"] = max(0, b - a) / MB / dt
        self._io_prev, self._t_prev = io, now
        du = psutil.disk_usage(self.disk_path)
        out["sys/disk/free_percent"] = 100.0 * du.free / du.total if du.total else 100.0

    def _temps(self, out: dict[str, float]) -> None:
        if self._no_sensors:
            return
        temps: dict[str, list] = {}
        if hasattr(psutil, "sensors_temperatures"):
            temps = psutil.sensors_temperatures() or {}
        if not temps:
            temps = read_thermal_zones()
            # neither source: stop asking (the sysfs walk costs time every second)
            self._no_sensors = not temps
        vals, self.limits = temperature_metrics(temps)
        out.update(vals)

    def sample(self) -> dict[str, float]:
        """One reading of every available source, as {`sys/...` key: float}."""
        out: dict[str, float] = {}
        steps = (
            ("psutil", self._psutil),
            ("temperatures", self._temps),
            ("nvml", lambda o: o.update(gpu_metrics(read_nvml(nv))) if (nv := nvml()) else None),
            ("torch", lambda o: o.update(torch_metrics())),
            ("mlx", lambda o: o.update(mlx_metrics())),
        )
        for name, fn in steps:
            try:
                fn(out)
                self.failed.pop(name, None)
            except Exception as e:  # one failing source never stops the others
                self.failed[name] = f"{type(e).__name__}: {e}"
        mac = macos_thermal_state()
        state = mac if mac is not None else derive_thermal_state(out, self.limits)
        if state is not None:
            out["sys/thermal_state"] = float(state)
        return out
